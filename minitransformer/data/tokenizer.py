"""A byte-level BPE tokenizer (GPT-2 style), trainable, and saved as a ``tokenizer.json``.

How text becomes ids:

1. **Special tokens** are cut out first, by the rule every tokenizer here shares
   (``tokenizer_base``): text that contains a special token's string, say ``"<eos>"``,
   raises by default; ``allowed_special`` turns the listed ones into their ids;
   ``disallowed_special=()`` encodes all the others as plain text.
2. **Pre-splitting.** A regex cuts the rest into chunks: a word with its leading space,
   a run of digits, a run of punctuation, whitespace. Merges never cross a chunk boundary.
   ``"gpt2"`` is GPT-2's pattern; ``"gpt4"`` is the cl100k one (case-insensitive
   contractions, digits in groups of at most three, newlines split from other whitespace).
3. **Bytes.** Each chunk is turned into its UTF-8 bytes, one token per byte, so any string
   can be encoded and there is no unknown token.
4. **Merges.** Repeatedly merge the adjacent pair with the lowest merge rank (learned
   earliest) until no adjacent pair has a rank. Results are cached per chunk, because
   natural text repeats its words.

Decoding concatenates the tokens' bytes and decodes UTF-8.

Vocabulary layout of a trained tokenizer (the default special tokens shown)::

    0 <pad>   1 <eos>   2 <mask>   3 <cls>   4 <sep>      named special tokens, like BERT and T5
    5 .. 260                                             the 256 single bytes
    261 .. V-101                                         merges, in the order learned
    V-100 .. V-1   <extra_id_99> .. <extra_id_0>         T5's sentinels, counting down

so ``sentinel_id(k) == vocab_size - 1 - k``. Special tokens are looked up by role: pad is
``<pad>`` (or ``[PAD]``), eos is ``<eos>`` (or ``<|endoftext|>``, ``</s>``), mask is
``<mask>`` (or ``[MASK]``), cls is ``<cls>`` (or ``[CLS]``), sep is ``<sep>`` (or ``[SEP]``).
Roles, sentinels, ``save`` and ``fingerprint`` come from the shared base, ``Tokenizer``.

The file format is Hugging Face's ``tokenizer.json`` (a ``Split`` pre-tokenizer with our
regex, then ``ByteLevel`` without its own regex; a BPE model whose vocabulary uses GPT-2's
byte-to-character table), so ``tokenizers.Tokenizer.from_file`` loads it and produces the
same ids. One caveat: the ``regex`` package and ``tokenizers`` (Oniguruma) ship different
Unicode versions, and code points assigned by a newer version than one of them knows are
letters to one and unassigned to the other, which moves the split points. Parity is
guaranteed (and tested) for text made of characters assigned by Unicode 14; measured with
regex 2026.5 and tokenizers 0.23, the two agree on everything up to Unicode 15.1 and split
4,657 code points assigned later differently.

A pre-split pattern read from a file runs under a time limit scaled to the text's length
(``tokenizer_patterns``): a pathological one raises ``PatternTimeout`` instead of hanging.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from typing import Iterable, NamedTuple, Sequence

import numpy as np

from minitransformer.data.bpe_trainer import learn_merges
from minitransformer.data.tokenizer_base import Tokenizer, sentinel_token, tokenizer_file
from minitransformer.data.tokenizer_patterns import TimedPattern

# ---------------------------------------------------------------------------------------
# Pre-split patterns. Not every quantifier may be possessive: GPT-2's `\s+(?!\S)` needs to
# backtrack so that 'a   b' splits as 'a', '  ', ' b' and the last space joins the word.
# ---------------------------------------------------------------------------------------

PATTERNS = {
    "gpt2": r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    "gpt4": (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
             r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""),
}

DEFAULT_SPECIAL_TOKENS = ("<pad>", "<eos>", "<mask>", "<cls>", "<sep>")
DEFAULT_NUM_SENTINELS = 100

_CACHE_LIMIT = 1 << 20      # chunks kept in the encode cache before it is cleared


def bytes_to_unicode() -> list[str]:
    """GPT-2's table from each byte to a printable character.

    Bytes 33-126, 161-172 and 174-255 are printable in Latin-1 and map to themselves; the
    other 68 map, in order, to U+0100, U+0101, ... (space -> U+0120 'Ġ', newline ->
    U+010A 'Ċ'). Every token then has a printable, whitespace-free name in tokenizer.json.
    """
    printable = set(range(33, 127)) | set(range(161, 173)) | set(range(174, 256))
    table, extra = [], 0
    for b in range(256):
        if b in printable:
            table.append(chr(b))
        else:
            table.append(chr(256 + extra))
            extra += 1
    return table


_BYTE_TO_CHAR = bytes_to_unicode()
_CHAR_TO_BYTE = {c: b for b, c in enumerate(_BYTE_TO_CHAR)}


def _compile_pattern(pattern: str, source: str | None = None) -> TimedPattern:
    """The pre-split pattern, run under the time limit unless it is one of ours
    (``tokenizer_patterns``); a pattern that does not compile is refused here."""
    where = f"{source}: pre-split pattern (pre_tokenizer Split Regex)" if source else "pre-split pattern"
    return TimedPattern(pattern, where, trusted=pattern in PATTERNS.values())


def _token_name(b: bytes) -> str:
    return "".join(_BYTE_TO_CHAR[x] for x in b)


def _token_bytes(name: str) -> bytes:
    try:
        return bytes(_CHAR_TO_BYTE[c] for c in name)
    except KeyError as e:
        raise ValueError(
            f"token {name!r} is not written in the byte-level alphabet (character {e.args[0]!r} "
            "maps to no byte); only byte-level BPE tokenizer.json files are supported"
        ) from None


def _bytes_named(name: str) -> bytes | None:
    """The bytes whose byte-level name is ``name``, or None if it is not such a name."""
    try:
        return _token_bytes(name)
    except ValueError:
        return None


class Encoding(NamedTuple):
    """What ``encode(..., return_offsets=True)`` returns.

    ids: token ids.
    offsets: per token, the (start, end) character span of the text it covers. A token
        holding only part of a multi-byte character covers that whole character.
    word_ids: per token, the index of the pre-split chunk (or special token) it came from;
        token classification labels words, and this maps them to tokens.
    """
    ids: list[int]
    offsets: list[tuple[int, int]]
    word_ids: list[int]


class BPETokenizer(Tokenizer):
    """Byte-level BPE: ``encode(text) -> ids`` and ``decode(ids) -> text``.

    Build one with ``BPETokenizer.train(texts, vocab_size)`` or ``BPETokenizer.load(path)``.
    The constructor takes the parts directly:

    vocab: id -> bytes for every ordinary token; must hold all 256 single bytes.
    merges: the merge rules in rank order, each a pair of token byte strings whose
        concatenation is in ``vocab``.
    special_tokens: text -> id for each special token. Ids of ``vocab`` and
        ``special_tokens`` together must be exactly 0 .. N-1.
    pattern: "gpt2", "gpt4", or a regex of one's own.
    ignore_merges: if True, a chunk that is itself a token is emitted whole before any
        merging (some published files, such as Llama 3's, ask for this).
    """

    role_hint = "train it with special_tokens that include {name!r}"
    sentinel_hint = "train it with num_sentinels > 0"

    def __init__(self, vocab: dict[int, bytes], merges: Sequence[tuple[bytes, bytes]],
                 special_tokens: dict[str, int], pattern: str = "gpt2",
                 ignore_merges: bool = False, source: str | None = None):
        self.pattern = PATTERNS.get(pattern, pattern) if isinstance(pattern, str) else pattern
        self.pattern_name = next((k for k, v in PATTERNS.items() if v == self.pattern), "custom")
        self._split = _compile_pattern(self.pattern, source)
        self.ignore_merges = bool(ignore_merges)

        size = len(vocab) + len(special_tokens)
        ids = sorted([*vocab, *special_tokens.values()])
        if ids != list(range(size)):
            raise ValueError(
                f"token ids must be exactly 0..{size - 1}, one token each; got {len(set(ids))} "
                f"distinct ids from {min(ids, default=0)} to {max(ids, default=-1)}"
            )
        self._bytes: list[bytes] = [b""] * size          # id -> its bytes (specials: their text)
        for i, b in vocab.items():
            self._bytes[i] = bytes(b)
        self._id_of: dict[bytes, int] = {b: i for i, b in vocab.items()}
        if len(self._id_of) != len(vocab):
            raise ValueError("two ordinary tokens have the same bytes; each must be unique")
        missing = [b for b in range(256) if bytes([b]) not in self._id_of]
        if missing:
            raise ValueError(f"the vocabulary lacks single-byte tokens for bytes {missing[:8]}; "
                             "a byte-level BPE needs all 256")
        self._byte_ids = [self._id_of[bytes([b])] for b in range(256)]

        self._init_specials(special_tokens)
        names = {_token_name(b) for b in vocab.values()}
        for text, i in self._specials.items():
            if not text:
                raise ValueError("a special token cannot be the empty string")
            if text in names:
                raise ValueError(f"special token {text!r} has the same name as an ordinary token; "
                                 "tokenizer.json could not tell them apart")
            self._bytes[i] = text.encode("utf-8")

        # (left id, right id) -> rank, and rank -> id of the merged token.
        self._ranks: dict[tuple[int, int], int] = {}
        self._merged: list[int] = []
        for rank, (left, right) in enumerate(merges):
            try:
                pair = (self._id_of[left], self._id_of[right])
                merged = self._id_of[left + right]
            except KeyError:
                raise ValueError(f"merge {rank} ({left!r}, {right!r}) uses or makes a token "
                                 "that is not in the vocabulary") from None
            if pair not in self._ranks:
                self._ranks[pair] = rank
                self._merged.append(merged)
            else:   # a duplicate rule: the earlier rank wins; keep ranks aligned with _merged
                self._merged.append(self._merged[self._ranks[pair]])

        for k, i in self._sentinels.items():
            if i != size - 1 - k:
                raise ValueError(
                    f"sentinel <extra_id_{k}> has id {i}, but sentinels must count down from "
                    f"the top of the vocabulary: expected {size - 1 - k}"
                )
        self._cache: dict[str, tuple[int, ...]] = {}

    # -----------------------------------------------------------------------------------
    # Training
    # -----------------------------------------------------------------------------------

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int,
              special_tokens: Sequence[str] | None = None, pattern: str = "gpt2",
              num_sentinels: int = DEFAULT_NUM_SENTINELS, min_frequency: int = 2
              ) -> "BPETokenizer":
        """Learn a vocabulary of ``vocab_size`` tokens from ``texts``.

        texts: an iterable of documents (read once).
        vocab_size: total size, counting the 256 bytes, the special tokens and the sentinels.
        special_tokens: the named special tokens, placed at ids 0, 1, ...; default
            ``("<pad>", "<eos>", "<mask>", "<cls>", "<sep>")``.
        pattern: "gpt2" or "gpt4" (or a regex of one's own) for pre-splitting.
        num_sentinels: how many T5 sentinels ``<extra_id_k>`` to put at the top.
        min_frequency: a pair seen fewer times than this is never merged. A small corpus can
            therefore end with fewer than ``vocab_size`` tokens; ``.vocab_size`` is the
            actual size, and the sentinels still sit at its top.
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError("train: texts must be an iterable of strings, not a single "
                            "string; wrap it in a list")
        if isinstance(special_tokens, str):
            raise TypeError("train: special_tokens must be a sequence of strings, not one string")
        specials = list(DEFAULT_SPECIAL_TOKENS if special_tokens is None else special_tokens)
        if not isinstance(num_sentinels, int) or num_sentinels < 0:
            raise ValueError(f"train: num_sentinels must be an integer >= 0, got {num_sentinels!r}")
        sentinels = [sentinel_token(k) for k in range(num_sentinels)]
        all_specials = specials + sentinels
        duplicated = sorted({s for s in all_specials if all_specials.count(s) > 1})
        if duplicated:
            raise ValueError(f"train: special tokens must be unique; {duplicated} appear twice "
                             "(sentinels <extra_id_k> are added by num_sentinels)")
        for s in specials:
            if not isinstance(s, str) or not s:
                raise ValueError(f"train: special tokens must be non-empty strings, got {s!r}")
        smallest = 256 + len(all_specials)
        if not isinstance(vocab_size, (int, np.integer)) or vocab_size < smallest:
            raise ValueError(
                f"train: vocab_size {vocab_size!r} is smaller than 256 byte tokens + "
                f"{len(specials)} special tokens + {num_sentinels} sentinels = {smallest}; "
                f"ask for at least {smallest}"
            )
        if not isinstance(pattern, str):
            raise ValueError(f"train: pattern must be 'gpt2', 'gpt4' or a regex string, got {pattern!r}")
        split = _compile_pattern(PATTERNS.get(pattern, pattern))

        # 1. Distinct chunks and their counts: the only view of the corpus training needs.
        counts: Counter[str] = Counter()
        documents = characters = 0
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"train: every text must be a str, got {type(text).__name__}")
            counts.update(split.findall(text))
            documents += 1
            characters += len(text)
        if characters == 0:
            raise ValueError(f"train: the corpus is empty ({documents} documents, 0 characters); "
                             "pass at least one non-empty text")
        chunk_counts = {chunk.encode("utf-8"): n for chunk, n in counts.items()}

        # 2. Merges, never producing a token whose name in tokenizer.json (its bytes in the
        #    byte-level alphabet) spells a special token: the file could not tell them apart.
        num_merges = vocab_size - smallest
        forbidden = [b for b in map(_bytes_named, all_specials) if b is not None]
        local_merges = learn_merges(chunk_counts, num_merges, min_frequency, forbidden)

        # 3. Lay out the vocabulary: named specials, bytes, merges, sentinels counting down.
        local_bytes = [bytes([b]) for b in range(256)]
        for a, b in local_merges:
            local_bytes.append(local_bytes[a] + local_bytes[b])
        first = len(specials)
        vocab = {first + i: b for i, b in enumerate(local_bytes)}
        size = first + len(local_bytes) + num_sentinels
        special_ids = {s: i for i, s in enumerate(specials)}
        special_ids.update({sentinel_token(k): size - 1 - k for k in range(num_sentinels)})
        merges = [(local_bytes[a], local_bytes[b]) for a, b in local_merges]
        return cls(vocab, merges, special_ids, pattern)

    # -----------------------------------------------------------------------------------
    # Vocabulary (special tokens, roles and sentinels: see Tokenizer)
    # -----------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of token ids, special tokens and sentinels included."""
        return len(self._bytes)

    @property
    def num_merges(self) -> int:
        return len(self._merged)

    def token_to_id(self, token: str) -> int | None:
        """Id of a special token's text or of an ordinary token's byte-level name."""
        if token in self._specials:
            return self._specials[token]
        try:
            return self._id_of.get(_token_bytes(token))
        except ValueError:
            return None

    def id_to_token(self, i: int) -> str:
        """A special token's text, or an ordinary token's byte-level name ('Ġthe')."""
        b = self._bytes[i]
        return b.decode("utf-8") if self.is_special(i) else _token_name(b)

    def word_start_mask(self) -> np.ndarray:
        """Boolean (vocab_size,): True where a token begins a new word.

        Whole-word masking needs to know which tokens continue the previous one. A token
        begins a word when its first byte is whitespace or ASCII punctuation (GPT-2 chunks
        carry their leading space); one starting with a letter, a digit or a non-ASCII byte
        (the middle of 'naïve') continues it. Special tokens count as word starts.
        """
        starts = np.ones(self.vocab_size, dtype=bool)
        for b, i in self._id_of.items():
            first = b[0]
            starts[i] = first < 128 and not (chr(first).isalnum())
        return starts

    # -----------------------------------------------------------------------------------
    # Encoding
    # -----------------------------------------------------------------------------------

    def encode(self, text: str, allowed_special: str | Iterable[str] = (),
               disallowed_special: str | Iterable[str] = "all",
               return_offsets: bool = False) -> list[int] | Encoding:
        """Token ids of ``text``.

        allowed_special: special tokens to encode as themselves: "all", or an iterable of
            their strings. Default none.
        disallowed_special: special tokens whose presence raises ValueError: "all" (every
            one not allowed, the default) or an iterable; specials in neither set are
            encoded as plain text. ``disallowed_special=()`` therefore encodes any text.
        return_offsets: return an ``Encoding`` (ids, character offsets, word ids) instead
            of a list.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode: text must be a str, got {type(text).__name__}")
        allowed = self._allowed_specials(text, allowed_special, disallowed_special)
        segments = self._segments(text, allowed)
        if return_offsets:
            return self._encode_with_offsets(text, segments)
        ids: list[int] = []
        for start, end, special in segments:
            if special is not None:
                ids.append(special)
            else:
                ids.extend(self._encode_ordinary(text[start:end]))
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Ids of ``text`` with every special token's string treated as plain text."""
        return self._encode_ordinary(text)

    def _encode_ordinary(self, text: str) -> list[int]:
        get, bpe = self._cache.get, self._bpe_chunk
        # A flat comprehension: most chunks hit the cache, and this loop is the hot path.
        return [i for chunk in self._split.findall(text) for i in (get(chunk) or bpe(chunk))]

    def _bpe_chunk(self, chunk: str) -> tuple[int, ...]:
        """Ids of one pre-split chunk: its bytes, then merges lowest rank first."""
        raw = chunk.encode("utf-8")
        whole = self._id_of.get(raw) if self.ignore_merges else None
        if whole is not None:
            ids = [whole]
        else:
            byte_ids = self._byte_ids
            ids = [byte_ids[b] for b in raw]
        ranks, none = self._ranks, len(self._merged)
        while len(ids) > 1:
            # The adjacent pair learned earliest; merge every occurrence of it, left to right.
            pair = min(zip(ids, ids[1:]), key=lambda p: ranks.get(p, none))
            rank = ranks.get(pair)
            if rank is None:
                break
            a, b = pair
            new = self._merged[rank]
            out, i, n = [], 0, len(ids)
            while i < n:
                if i + 1 < n and ids[i] == a and ids[i + 1] == b:
                    out.append(new)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            ids = out
        result = tuple(ids)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[chunk] = result
        return result

    def _segments(self, text: str, allowed: frozenset) -> list[tuple[int, int, int | None]]:
        """(start, end, special id or None) pieces of ``text``, split at allowed specials."""
        if not allowed or not text:
            return [(0, len(text), None)] if text else []
        pattern = self._special_re if len(allowed) == len(self._specials) else self._compiled(allowed)
        pieces, pos = [], 0
        for m in pattern.finditer(text):
            if m.start() > pos:
                pieces.append((pos, m.start(), None))
            pieces.append((m.start(), m.end(), self._specials[m.group()]))
            pos = m.end()
        if pos < len(text):
            pieces.append((pos, len(text), None))
        return pieces

    def _encode_with_offsets(self, text, segments) -> Encoding:
        ids, offsets, word_ids = [], [], []
        word = 0
        for start, end, special in segments:
            if special is not None:
                ids.append(special)
                offsets.append((start, end))
                word_ids.append(word)
                word += 1
                continue
            for m in self._split.finditer(text[start:end]):
                chunk, base = m.group(), start + m.start()
                tokens = self._cache.get(chunk) or self._bpe_chunk(chunk)
                if chunk.isascii():           # one byte per character
                    char_of_byte = None
                else:                         # byte position -> character position
                    char_of_byte = [c for c, ch in enumerate(chunk)
                                    for _ in range(len(ch.encode("utf-8")))]
                pos = 0
                for t in tokens:
                    n = len(self._bytes[t])
                    if char_of_byte is None:
                        offsets.append((base + pos, base + pos + n))
                    else:
                        offsets.append((base + char_of_byte[pos],
                                        base + char_of_byte[pos + n - 1] + 1))
                    pos += n
                    ids.append(t)
                    word_ids.append(word)
                word += 1
        return Encoding(ids, offsets, word_ids)

    # -----------------------------------------------------------------------------------
    # Decoding
    # -----------------------------------------------------------------------------------

    def decode_bytes(self, ids: Iterable[int], skip_special_tokens: bool = False) -> bytes:
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        table = self._bytes
        try:
            if ids and min(ids) < 0:
                raise IndexError
            if skip_special_tokens:
                specials = self._special_id_set
                return b"".join([table[i] for i in ids if i not in specials])
            return b"".join([table[i] for i in ids])
        except (IndexError, TypeError):
            bad = next((i for i in ids if not (isinstance(i, (int, np.integer))
                                               and 0 <= i < len(table))), None)
            raise ValueError(f"decode: id {bad!r} is outside the vocabulary 0..{len(table) - 1}") from None

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False,
               errors: str = "replace") -> str:
        """The text of ``ids``. Ids that split a UTF-8 character decode to U+FFFD unless
        ``errors="strict"``."""
        return self.decode_bytes(ids, skip_special_tokens).decode("utf-8", errors=errors)

    # -----------------------------------------------------------------------------------
    # tokenizer.json
    # -----------------------------------------------------------------------------------

    def to_json_dict(self) -> dict:
        """The ``tokenizer.json`` content, as a dict."""
        vocab = {}
        for i, b in enumerate(self._bytes):
            vocab[b.decode("utf-8") if self.is_special(i) else _token_name(b)] = i
        inverse = {i: b for b, i in self._id_of.items()}
        merges = []
        for (a, b), _ in sorted(self._ranks.items(), key=lambda kv: kv[1]):
            merges.append([_token_name(inverse[a]), _token_name(inverse[b])])
        added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                  "normalized": False, "special": True}
                 for s, i in sorted(self._specials.items(), key=lambda kv: kv[1])]
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": added,
            "normalizer": None,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": self.pattern},
                 "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                 "use_regex": False},
            ]},
            "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                        "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None,
                      "continuing_subword_prefix": None, "end_of_word_suffix": None,
                      "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": self.ignore_merges, "vocab": vocab, "merges": merges},
        }

    @classmethod
    def from_json_dict(cls, data: dict, source: str = "tokenizer.json") -> "BPETokenizer":
        model = data.get("model") or {}
        if model.get("type", "BPE") != "BPE" or "vocab" not in model or "merges" not in model:
            raise ValueError(f"{source}: expected a BPE model (model.type 'BPE' with vocab and "
                             f"merges), got model type {model.get('type')!r}")
        if data.get("normalizer") is not None:
            raise ValueError(f"{source}: has a normalizer ({data['normalizer'].get('type')}); "
                             "only byte-level BPE files without one are supported")
        for option in ("continuing_subword_prefix", "end_of_word_suffix"):
            if model.get(option):
                raise ValueError(f"{source}: BPE option {option} is set; byte-level BPE does not use it")
        if model.get("byte_fallback"):
            raise ValueError(f"{source}: byte_fallback BPE (SentencePiece style) is not byte-level BPE")
        pattern = _pattern_of(data.get("pre_tokenizer"), source)

        specials = {t["content"]: int(t["id"]) for t in data.get("added_tokens", [])}
        special_ids = set(specials.values())
        vocab = {}
        for name, i in model["vocab"].items():
            if int(i) not in special_ids:
                vocab[int(i)] = _token_bytes(name)
        merges = []
        for m in model["merges"]:
            left, right = m.split(" ") if isinstance(m, str) else m
            merges.append((_token_bytes(left), _token_bytes(right)))
        return cls(vocab, merges, specials, pattern, ignore_merges=bool(model.get("ignore_merges")), source=source)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BPETokenizer":
        """Read a ``tokenizer.json`` (a file, or a folder holding one)."""
        path = tokenizer_file(path)
        if not path.exists():
            raise FileNotFoundError(f"tokenizer file {str(path)!r} does not exist; train one with "
                                    "'minitransformer tokenizer train --out FILE'")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e}); expected a tokenizer.json") from None
        return cls.from_json_dict(data, str(path))

    def __repr__(self) -> str:
        return (f"BPETokenizer(vocab_size={self.vocab_size}, merges={self.num_merges}, "
                f"specials={len(self._specials)}, pattern={self.pattern_name!r})")


def _pattern_of(pre: dict | None, source: str) -> str:
    """The split regex of a tokenizer.json pre-tokenizer we know how to reproduce."""
    def byte_level_ok(p):
        return p.get("type") == "ByteLevel" and not p.get("add_prefix_space", False)

    if pre is None:
        raise ValueError(f"{source}: has no pre_tokenizer; expected ByteLevel or Split + ByteLevel")
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and byte_level_ok(pre):
        return PATTERNS["gpt2"]
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else []
    if (len(parts) == 2 and parts[0].get("type") == "Split"
            and parts[0].get("behavior") == "Isolated" and not parts[0].get("invert")
            and "Regex" in parts[0].get("pattern", {})
            and byte_level_ok(parts[1]) and not parts[1].get("use_regex", True)):
        return parts[0]["pattern"]["Regex"]
    raise ValueError(f"{source}: pre_tokenizer {json.dumps(pre)[:120]} is not supported; expected "
                     "ByteLevel (add_prefix_space false) or Sequence[Split(Isolated), ByteLevel]")
