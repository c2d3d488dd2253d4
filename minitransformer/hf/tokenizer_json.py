"""Tokenizers of published checkpoints, read from their ``tokenizer.json``.

A ``tokenizer.json`` (the file format of the ``tokenizers`` library) describes a pipeline.
BERT's runs a WordPiece model, T5's a SentencePiece Unigram model; this module runs such
pipelines step by step, the way ``tokenizers`` does, so that ids match it exactly:

    text
     1. added tokens    cut out first: [CLS], [MASK], </s>, <extra_id_0> ... (those marked
                        "normalized" are looked for after step 2 instead); special ones
                        only where ``allowed_special`` lets them be
     2. normalizer      BERT: BertNormalizer (drop control characters, space out CJK,
                        strip accents, lowercase); T5: Precompiled (SentencePiece's NFKC
                        table, compiled into a double-array trie)
     3. pre-tokenizer   BERT: BertPreTokenizer (split at whitespace and punctuation);
                        T5: WhitespaceSplit, then Metaspace (spaces become "▁", one in front)
     4. model           WordPiece: greedy longest match, "##" marking continuations;
                        Unigram: the segmentation with the highest total log-probability
                        (Viterbi), unknown characters scored below every piece
     5. post-processor  only with ``add_special_tokens``: [CLS] $A [SEP], or $A </s>

    decode: ids -> tokens (special ones dropped if asked) -> decoder (WordPiece: glue "##"
    pieces to the word before; Metaspace: "▁" back to spaces) -> text

``load_tokenizer_json`` returns our ``BPETokenizer`` for byte-level BPE files (GPT-2 and our
own) and a ``WordPieceTokenizer`` or ``UnigramTokenizer`` otherwise. All three are a
``Tokenizer`` (``data/tokenizer_base.py``): the same ``encode``, ``decode``, ``vocab_size``,
special ids (``pad_id``, ``eos_id``, ...), sentinels, ``save`` and ``fingerprint``, and the
same rule for special tokens: text that contains a special token's string raises unless
``allowed_special`` lists it. ``encode(text, allowed_special="all")`` is what ``tokenizers``
does, every special token encoded as itself.

The steps 2-5 are built in ``tokenizer_steps.py``.
"""
from __future__ import annotations

import json
import math
import os
from typing import Iterable

import regex

from minitransformer.data.tokenizer import BPETokenizer
from minitransformer.data.tokenizer_base import Tokenizer, tokenizer_file
from minitransformer.hf.tokenizer_steps import DECODERS, NORMALIZERS, PRE_TOKENIZERS, build, field, post_processor

UNK_NAMES = ("[UNK]", "<unk>", "<|unk|>")
_CACHE_LIMIT = 1 << 20      # words kept in the encode cache before it is cleared


def token_id(value, what: str) -> int:
    """A token id read from a file: an integer >= 0 (JSON may hold anything)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a token id (an integer >= 0), got {value!r:.60}")
    return value


def added_tokens(data: dict, source: str) -> list[dict]:
    """The file's added_tokens, each checked to have a string content and a token id."""
    tokens = data.get("added_tokens") or []
    if not isinstance(tokens, list) or not all(isinstance(t, dict) for t in tokens):
        raise ValueError(f"{source}: added_tokens must be a list of objects, got {tokens!r:.60}")
    for t in tokens:
        if not isinstance(t.get("content"), str) or not t["content"]:
            raise ValueError(f"{source}: an added token's content must be a non-empty string, got {t!r:.80}")
        token_id(t.get("id"), f"{source}: the id of added token {t['content']!r}")
    return tokens


class PipelineTokenizer(Tokenizer):
    """A tokenizer.json pipeline around a WordPiece or Unigram model (see the module docstring).

    encode(text, allowed_special=(), disallowed_special="all", *, add_special_tokens=False):
    ids. Special tokens' strings in the text ("[MASK]", "<extra_id_0>") raise unless
    ``allowed_special`` lists them ("all": every one, as ``tokenizers`` does), and
    ``disallowed_special=()`` reads them as plain text; added tokens that are not special
    always become their ids. With ``add_special_tokens`` the post-processor's template adds
    the model's special tokens ([CLS] ... [SEP], or ... </s>), as ``tokenizers``' own
    ``encode`` does by default.
    decode(ids, skip_special_tokens=False): text.
    """

    role_hint = "add {name!r} to the added_tokens of its tokenizer.json"

    def __init__(self, data: dict, source: str = "tokenizer.json"):
        self.source = source
        self._data = data
        self._normalize = build(NORMALIZERS, "normalizer", data.get("normalizer"))
        self._pre_tokenize = build(PRE_TOKENIZERS, "pre_tokenizer", data.get("pre_tokenizer"))
        self._decode = build(DECODERS, "decoder", data.get("decoder"))
        self._added: dict[str, int] = {}
        self._added_normalized: dict[str, bool] = {}
        specials: dict[str, int] = {}
        for t in added_tokens(data, source):
            if t.get("single_word") or t.get("lstrip") or t.get("rstrip"):
                raise ValueError(f"{source}: added token {t['content']!r} uses single_word/lstrip/rstrip, "
                                 "which are not supported")
            self._added[t["content"]] = int(t["id"])
            self._added_normalized[t["content"]] = bool(t.get("normalized", False))
            if t.get("special", False):
                specials[t["content"]] = int(t["id"])
        self._init_specials(specials, sentinels_among=self._added)
        self._id_to_added = {i: s for s, i in self._added.items()}
        self._post_process = post_processor(data.get("post_processor"))
        self._cut_cache: dict[tuple, regex.Pattern | None] = {}
        self._word_cache: dict[str, list[int]] = {}

    # ---------------------------------------------------------------- the model (subclasses)
    def _model_vocab_size(self) -> int:
        raise NotImplementedError

    def _model_token(self, i: int) -> str | None:
        raise NotImplementedError

    def _model_id(self, token: str) -> int | None:
        raise NotImplementedError

    def _tokenize_word(self, word: str) -> list[int]:
        raise NotImplementedError

    # ---------------------------------------------------------------- vocabulary
    @property
    def vocab_size(self) -> int:
        """Number of token ids: one past the largest id of the model or an added token."""
        return max(self._model_vocab_size(), max(self._added.values(), default=-1) + 1)

    def token_to_id(self, token: str) -> int | None:
        if token in self._added:
            return self._added[token]
        return self._model_id(token)

    def id_to_token(self, i: int) -> str:
        if i in self._id_to_added:
            return self._id_to_added[i]
        token = self._model_token(i) if 0 <= i < self._model_vocab_size() else None
        if token is None:
            raise ValueError(f"id {i!r} is outside the vocabulary 0..{self.vocab_size - 1}")
        return token

    def _role_token_id(self, name: str) -> int | None:
        # A role's token may be listed only in the model's vocabulary, not as an added token.
        return self.token_to_id(name)

    @property
    def unk_id(self) -> int:
        return self._role_id("unk", UNK_NAMES)

    # ---------------------------------------------------------------- encoding
    def _cutter(self, normalized: bool, allowed: frozenset):
        key = (normalized, allowed)
        if key not in self._cut_cache:
            tokens = [s for s, n in self._added_normalized.items()
                      if n == normalized and (s not in self._specials or s in allowed)]
            # Longest first: at any position the longest added token wins, as in tokenizers.
            tokens.sort(key=lambda s: (-len(s), s))
            self._cut_cache[key] = regex.compile("|".join(map(regex.escape, tokens))) if tokens else None
        return self._cut_cache[key]

    @staticmethod
    def _cut(text: str, pattern, base: int):
        """(piece, start, added id or None) pieces of ``text`` split at ``pattern``'s matches."""
        if pattern is None:
            return [(text, base, None)] if text else []
        out, pos = [], 0
        for m in pattern.finditer(text):
            if m.start() > pos:
                out.append((text[pos:m.start()], base + pos, None))
            out.append((m.group(), base + m.start(), m.group()))
            pos = m.end()
        if pos < len(text):
            out.append((text[pos:], base + pos, None))
        return out

    def encode(self, text: str, allowed_special: str | Iterable[str] = (),
               disallowed_special: str | Iterable[str] = "all", *,
               add_special_tokens: bool = False) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"encode: text must be a str, got {type(text).__name__}")
        allowed = self._allowed_specials(text, allowed_special, disallowed_special)
        ids: list[int] = []
        for raw, start, added in self._cut(text, self._cutter(False, allowed), 0):
            if added is not None:
                ids.append(self._added[added])
                continue
            normalized = self._normalize(raw) if self._normalize else raw
            for piece, offset, found in self._cut(normalized, self._cutter(True, allowed), 0):
                if found is not None:
                    ids.append(self._added[found])
                    continue
                words = [(piece, start + offset)]
                if self._pre_tokenize:
                    words = self._pre_tokenize(words)
                for word, _ in words:
                    cached = self._word_cache.get(word)
                    if cached is None:
                        if len(self._word_cache) >= _CACHE_LIMIT:
                            self._word_cache.clear()
                        cached = self._word_cache[word] = self._tokenize_word(word)
                    ids.extend(cached)
        return self._post_process(ids) if add_special_tokens else ids

    # ---------------------------------------------------------------- decoding
    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        tokens = [self.id_to_token(int(i)) for i in ids
                  if not (skip_special_tokens and int(i) in self._special_id_set)]
        if self._decode is None:
            return " ".join(tokens)
        return "".join(self._decode(tokens))

    # ---------------------------------------------------------------- words (whole-word masking)
    def _continues_word(self, token: str) -> bool:
        raise NotImplementedError

    def word_start_mask(self):
        """Boolean (vocab_size,): True where a token begins a word (special tokens do)."""
        import numpy as np

        starts = np.ones(self.vocab_size, dtype=bool)
        for i in range(self._model_vocab_size()):
            token = self._model_token(i)
            if token is not None and i not in self._id_to_added:
                starts[i] = not self._continues_word(token)
        return starts

    # ---------------------------------------------------------------- files
    def to_json_dict(self) -> dict:
        return self._data


class WordPieceTokenizer(PipelineTokenizer):
    """BERT's WordPiece: each word is split greedily into the longest pieces in the
    vocabulary, left to right, pieces after the first written with the "##" prefix; a word
    with a part no piece covers, or longer than ``max_input_chars_per_word``, is [UNK]."""

    def __init__(self, data: dict, source: str = "tokenizer.json"):
        model = data["model"]
        self.vocab: dict[str, int] = {str(k): token_id(v, f"{source}: the id of WordPiece token {k!r}")
                                      for k, v in field(model, "vocab", dict).items()}
        self._tokens = {i: t for t, i in self.vocab.items()}
        self.prefix = field(model, "continuing_subword_prefix", str, "##")
        self.max_chars = field(model, "max_input_chars_per_word", int, 100)
        unk = model.get("unk_token", "[UNK]")
        if unk not in self.vocab:
            raise ValueError(f"{source}: WordPiece unk_token {unk!r} is not in its vocabulary")
        self.unk = self.vocab[unk]
        super().__init__(data, source)

    def _model_vocab_size(self) -> int:
        return max(self._tokens, default=-1) + 1

    def _model_token(self, i):
        return self._tokens.get(i)

    def _model_id(self, token):
        return self.vocab.get(token)

    def _tokenize_word(self, word: str) -> list[int]:
        if len(word) > self.max_chars:
            return [self.unk]
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else self.prefix + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    break
                end -= 1
            else:
                return [self.unk]       # some part of the word is no piece at all
            start = end
        return ids

    def _continues_word(self, token: str) -> bool:
        return token.startswith(self.prefix)


def _is_scored_piece(entry) -> bool:
    """A Unigram vocabulary entry: [a piece's string, its finite log-probability]."""
    return (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
            and isinstance(entry[1], (int, float)) and not isinstance(entry[1], bool) and math.isfinite(entry[1]))


class UnigramTokenizer(PipelineTokenizer):
    """SentencePiece's Unigram model (T5): each piece has a log-probability, and a word is
    split into the pieces whose scores sum highest (Viterbi over every segmentation).

    A character that starts no one-character piece may also be read as unknown, scored
    ``min(score) - 10``; runs of unknowns fuse into one [unk]. Among equal scores the
    earlier-found (shorter) piece at a position wins, as in ``tokenizers``.
    """

    UNK_PENALTY = 10.0

    def __init__(self, data: dict, source: str = "tokenizer.json"):
        model = data["model"]
        if model.get("byte_fallback"):
            raise ValueError(f"{source}: Unigram with byte_fallback is not supported")
        vocab = field(model, "vocab", list)
        bad = next((v for v in vocab if not _is_scored_piece(v)), None)
        if bad is not None:
            raise ValueError(f"{source}: Unigram vocab entries must be [piece, finite score], got {bad!r:.60}")
        self.pieces: list[str] = [p for p, _ in vocab]
        self.scores: list[float] = [float(s) for _, s in vocab]
        self._ids = {}
        for i, p in enumerate(self.pieces):
            self._ids.setdefault(p, i)
        self.unk = model.get("unk_id")
        if self.unk is None:
            raise ValueError(f"{source}: Unigram model without unk_id is not supported")
        if token_id(self.unk, f"{source}: Unigram unk_id") >= len(self.pieces):
            raise ValueError(f"{source}: Unigram unk_id {self.unk} is outside its vocabulary of "
                             f"{len(self.pieces)} pieces")
        self.unk_score = min(self.scores, default=0.0) - self.UNK_PENALTY
        self.longest = max((len(p) for p in self.pieces), default=1)
        super().__init__(data, source)

    def _model_vocab_size(self) -> int:
        return len(self.pieces)

    def _model_token(self, i):
        return self.pieces[i] if 0 <= i < len(self.pieces) else None

    def _model_id(self, token):
        return self._ids.get(token)

    def _tokenize_word(self, word: str) -> list[int]:
        n = len(word)
        # best[j] = (score of the best segmentation of word[:j], start of its last piece, id)
        best: list[tuple[float, int, int] | None] = [None] * (n + 1)
        best[0] = (0.0, -1, -1)
        for i in range(n):
            if best[i] is None:
                continue
            base = best[i][0]
            single = False
            for j in range(i + 1, min(n, i + self.longest) + 1):
                piece_id = self._ids.get(word[i:j])
                if piece_id is None:
                    continue
                score = base + self.scores[piece_id]
                if best[j] is None or score > best[j][0]:
                    best[j] = (score, i, piece_id)
                single = single or j == i + 1
            if not single:
                score = base + self.unk_score
                if best[i + 1] is None or score > best[i + 1][0]:
                    best[i + 1] = (score, i, self.unk)
        # Walk back from the end, fusing consecutive unknowns into one string.
        strings, unknown, end = [], [], n
        while end > 0:
            _, start, piece_id = best[end]
            if piece_id == self.unk:
                unknown.append(word[start:end])
            else:
                if unknown:
                    strings.append("".join(reversed(unknown)))
                    unknown = []
                strings.append(word[start:end])
            end = start
        if unknown:
            strings.append("".join(reversed(unknown)))
        return [self._ids.get(s, self.unk) for s in reversed(strings)]

    def _continues_word(self, token: str) -> bool:
        return not token.startswith("\u2581")


def load_tokenizer_json(path: str | os.PathLike):
    """The tokenizer a ``tokenizer.json`` describes (a file, or a folder holding one).

    Byte-level BPE -> ``BPETokenizer``; WordPiece -> ``WordPieceTokenizer``; Unigram ->
    ``UnigramTokenizer``. Anything else is refused with the type named.
    """
    path = tokenizer_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e}); expected a tokenizer.json") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ValueError(f"{path}: has no model section; expected a tokenizer.json")
    kind = data["model"].get("type")
    if kind is None:         # old files leave the type out; tell the models apart by their fields
        kind = ("BPE" if "merges" in data["model"] else "Unigram" if isinstance(data["model"].get("vocab"), list)
                else "WordPiece")
    try:
        if kind == "BPE":
            return BPETokenizer.from_json_dict(data, str(path))
        if kind == "WordPiece":
            return WordPieceTokenizer(data, str(path))
        if kind == "Unigram":
            return UnigramTokenizer(data, str(path))
    except (KeyError, TypeError, AttributeError, IndexError, OverflowError) as e:
        # a field missing or of the wrong type where no check above names it
        raise ValueError(f"{path}: a malformed {kind} tokenizer.json ({type(e).__name__}: {e})") from None
    except ValueError as e:                 # a step's refusal: say which file it is in
        if str(path) in str(e):
            raise
        raise type(e)(f"{path}: {e}") from None
    raise ValueError(f"{path}: model type {kind!r} is not supported; expected BPE (byte-level), WordPiece or Unigram")
