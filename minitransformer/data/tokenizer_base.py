"""What every tokenizer here shares: special tokens, their roles, T5's sentinels, the file.

Two kinds of tokenizer build on this base, as minbpe's basic and regex tokenizers build on
its ``Tokenizer``: ``BPETokenizer`` (``data/tokenizer.py``: byte-level BPE, trainable) and
the pipelines of published checkpoints (``hf/tokenizer_json.py``: WordPiece for BERT,
Unigram for T5). What differs between them is how text becomes ordinary tokens; what does
not differ lives here, once:

- **Special tokens** (text -> id) and the one rule ``encode`` follows for them. Text that
  contains a special token's string raises by default (as in tiktoken), because a document
  that merely *mentions* a control token must not be able to inject one.
  ``allowed_special`` ("all" or the tokens' strings) turns those into their ids;
  ``disallowed_special=()`` encodes all the others as the plain text they are. The
  ``tokenizers`` library's own behaviour, every special token encoded as itself, is
  ``allowed_special="all"``.
- **Roles.** ``pad_id``, ``eos_id``, ``mask_id``, ``cls_id`` and ``sep_id`` find a special
  token by the names it has in the three families (``ROLE_NAMES``).
- **Sentinels.** T5's ``<extra_id_k>`` tokens: ``num_sentinels`` and ``sentinel_id(k)``.
- **The file.** ``save`` writes ``to_json_dict()`` as a ``tokenizer.json``; ``fingerprint``
  hashes the same content, so equal fingerprints encode identically.

A subclass calls ``_init_specials`` from its constructor and provides the rest of the
interface: ``vocab_size``, ``token_to_id``, ``id_to_token``, ``encode``, ``decode``,
``word_start_mask`` and ``to_json_dict``.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import regex

# Role -> the names a special token for that role may have (ours first).
ROLE_NAMES = {
    "pad": ("<pad>", "[PAD]", "<|pad|>"),
    "eos": ("<eos>", "<|endoftext|>", "</s>", "[EOS]"),
    "mask": ("<mask>", "[MASK]"),
    "cls": ("<cls>", "[CLS]"),
    "sep": ("<sep>", "[SEP]"),
}

_SENTINEL = regex.compile(r"<extra_id_(\d+)>")


def sentinel_token(k: int) -> str:
    """The text of T5's k-th sentinel, ``<extra_id_k>``."""
    return f"<extra_id_{k}>"


def tokenizer_file(path: str | os.PathLike) -> Path:
    """``path`` itself, or the ``tokenizer.json`` inside it when it is a folder."""
    path = Path(path)
    return path / "tokenizer.json" if path.is_dir() else path


def _alternation(strings: Sequence[str]):
    """A regex matching any of ``strings`` (None for none); list them longest first, so that
    "<extra_id_10>" wins over a hypothetical "<extra_id_1"."""
    if not strings:
        return None
    return regex.compile("|".join(regex.escape(s) for s in strings))


class Tokenizer:
    """The interface every tokenizer shares (see the module docstring); not used on its own."""

    source: str | None = None      # where it was read from, for error messages
    # What to do when a role or the sentinels are missing (the subclasses know how).
    role_hint = "give the tokenizer a special token {name!r}"
    sentinel_hint = "give the tokenizer the special tokens <extra_id_0>, <extra_id_1>, ..."

    def _init_specials(self, specials: dict[str, int], sentinels_among: dict[str, int] | None = None):
        """Set the special tokens (text -> id) up; the sentinels are found among
        ``sentinels_among`` (default: the special tokens)."""
        self._specials: dict[str, int] = dict(specials)
        self._special_id_set = frozenset(self._specials.values())
        self._all_specials = frozenset(self._specials)
        self._special_by_length = sorted(self._specials, key=lambda s: (-len(s), s))
        self._special_re = _alternation(self._special_by_length)
        self._regex_cache: dict[frozenset, regex.Pattern | None] = {}
        self._sentinels: dict[int, int] = {}   # k -> id of <extra_id_k>
        for text, i in (self._specials if sentinels_among is None else sentinels_among).items():
            m = _SENTINEL.fullmatch(text)
            if m:
                self._sentinels[int(m.group(1))] = i
        self._fingerprint: str | None = None

    # -----------------------------------------------------------------------------------
    # What a subclass provides
    # -----------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of token ids, special tokens included."""
        raise NotImplementedError

    def token_to_id(self, token: str) -> int | None:
        """Id of a token's string as the vocabulary writes it, or None."""
        raise NotImplementedError

    def id_to_token(self, i: int) -> str:
        """The string the vocabulary writes for id ``i``."""
        raise NotImplementedError

    def encode(self, text: str, allowed_special: str | Iterable[str] = (),
               disallowed_special: str | Iterable[str] = "all") -> list[int]:
        """Token ids of ``text``; special-token text follows ``_allowed_specials``."""
        raise NotImplementedError

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """The text of ``ids``."""
        raise NotImplementedError

    def word_start_mask(self):
        """Boolean (vocab_size,): True where a token begins a word (special tokens do)."""
        raise NotImplementedError

    def to_json_dict(self) -> dict:
        """The ``tokenizer.json`` content, as a dict."""
        raise NotImplementedError

    # -----------------------------------------------------------------------------------
    # Special tokens, roles and sentinels
    # -----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special token text -> id (a copy)."""
        return dict(self._specials)

    @property
    def special_ids(self) -> tuple[int, ...]:
        """Every special id (named ones and sentinels), ascending."""
        return tuple(sorted(self._special_id_set))

    def is_special(self, i: int) -> bool:
        return i in self._special_id_set

    def _role_token_id(self, name: str) -> int | None:
        """The id a role's candidate ``name`` has here, or None; by default only special
        tokens count."""
        return self._specials.get(name)

    def _role_id(self, role: str, names: Sequence[str] | None = None) -> int:
        names = ROLE_NAMES[role] if names is None else names
        for name in names:
            i = self._role_token_id(name)
            if i is not None:
                return i
        where = f"{self.source}: " if self.source else ""
        raise ValueError(f"{where}this tokenizer has no {role} token (looked for {', '.join(names)}); "
                         f"{self.role_hint.format(name=names[0])}")

    @property
    def pad_id(self) -> int:
        return self._role_id("pad")

    @property
    def eos_id(self) -> int:
        return self._role_id("eos")

    @property
    def mask_id(self) -> int:
        return self._role_id("mask")

    @property
    def cls_id(self) -> int:
        return self._role_id("cls")

    @property
    def sep_id(self) -> int:
        return self._role_id("sep")

    @property
    def num_sentinels(self) -> int:
        return len(self._sentinels)

    def sentinel_id(self, k: int) -> int:
        """Id of T5's ``<extra_id_k>``."""
        if k not in self._sentinels:
            have = (f"<extra_id_0> .. <extra_id_{self.num_sentinels - 1}>" if self._sentinels
                    else f"none; {self.sentinel_hint}")
            raise ValueError(f"sentinel {k} does not exist: this tokenizer's sentinels are {have}")
        return self._sentinels[k]

    # -----------------------------------------------------------------------------------
    # The special-token rule of encode
    # -----------------------------------------------------------------------------------

    def _allowed_specials(self, text: str, allowed_special, disallowed_special) -> frozenset:
        """The special tokens ``encode`` turns into ids, after refusing ``text`` if it holds a
        disallowed one.

        allowed_special: "all", or an iterable of special tokens' strings; default none.
        disallowed_special: "all" (every special token not allowed, the default) or an
            iterable; a special token in neither set is encoded as plain text.
        """
        allowed = self._special_set(allowed_special, "allowed_special")
        if disallowed_special == "all":
            disallowed = self._all_specials - allowed if allowed else self._all_specials
        else:
            disallowed = self._special_set(disallowed_special, "disallowed_special") - allowed
        if disallowed:
            pattern = self._special_re if len(disallowed) == len(self._specials) else self._compiled(disallowed)
            found = pattern.search(text) if pattern is not None else None
            if found:
                raise ValueError(
                    f"encode: the text contains the special token {found.group()!r} at "
                    f"character {found.start()}; pass allowed_special={{{found.group()!r}}} "
                    "(or 'all') to encode it as that special token, or disallowed_special=() "
                    "to encode it as plain text"
                )
        return allowed

    def _special_set(self, value, name: str) -> frozenset:
        if isinstance(value, tuple) and not value:
            return frozenset()
        if value == "all":
            return self._all_specials
        if isinstance(value, str):
            raise ValueError(f"encode: {name} must be 'all' or an iterable of special tokens, "
                             f"got the string {value!r}; write {name}={{{value!r}}}")
        chosen = frozenset(value)
        unknown = sorted(chosen - self._all_specials)
        if unknown:
            raise ValueError(f"encode: {name} names {unknown}, which are not special tokens of "
                             f"this tokenizer (it has {self._special_by_length[:6]}...)")
        return chosen

    def _compiled(self, specials: frozenset):
        """A regex matching any of ``specials`` (a subset of the special tokens), cached."""
        if specials not in self._regex_cache:
            self._regex_cache[specials] = _alternation([s for s in self._special_by_length if s in specials])
        return self._regex_cache[specials]

    def encode_ordinary(self, text: str) -> list[int]:
        """Ids of ``text`` with every special token's string treated as plain text."""
        return self.encode(text, disallowed_special=())

    def encode_batch(self, texts: Iterable[str], **kwargs) -> list:
        """``encode`` of each text (the same keyword arguments)."""
        return [self.encode(t, **kwargs) for t in texts]

    # -----------------------------------------------------------------------------------
    # tokenizer.json
    # -----------------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict(), ensure_ascii=False, indent=1)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``tokenizer.json`` to ``path`` (a file, or a folder to put it in)."""
        path = tokenizer_file(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @property
    def fingerprint(self) -> str:
        """A SHA-256 of the tokenizer's content: equal fingerprints encode identically."""
        if self._fingerprint is None:
            canonical = json.dumps(self.to_json_dict(), sort_keys=True, ensure_ascii=False)
            self._fingerprint = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
        return self._fingerprint

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, specials={len(self._specials)})"
