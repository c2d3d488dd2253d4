"""Tokenizers of published checkpoints, read from their ``tokenizer.json``.

A ``tokenizer.json`` (the file format of the ``tokenizers`` library) describes a pipeline.
BERT's runs a WordPiece model, T5's a SentencePiece Unigram model; this module runs such
pipelines step by step, the way ``tokenizers`` does, so that ids match it exactly:

    text
     1. added tokens    cut out first: [CLS], [MASK], </s>, <extra_id_0> ... (those marked
                        "normalized" are looked for after step 2 instead)
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
own) and a ``WordPieceTokenizer`` or ``UnigramTokenizer`` otherwise; all three share
``encode``, ``decode``, ``vocab_size`` and the special ids (``pad_id``, ``eos_id``, ...).

Character classes follow Rust's definitions (``tokenizers`` is written in Rust): whitespace
is Unicode's White_Space property (so U+001F is *not* whitespace, though Python's
``str.isspace`` says it is). Categories come from Python's ``unicodedata``, whose Unicode
version differs from the tables compiled into ``tokenizers``, so characters assigned in
recent versions can be classified differently; as with the BPE tokenizer, exact parity holds
for characters both know. Measured over every code point (Python 3.11's Unicode 14,
tokenizers 0.23): BertNormalizer treats 454 code points differently (recent marks, format
characters and case pairs), BertPreTokenizer 106 (recent punctuation), and the Whitespace
pre-tokenizer 4,699 (letters unassigned in Unicode 14). All but four were assigned after
Unicode 3.2; those four (U+1734, U+1885, U+1886, U+166D) changed category since.
"""
from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from pathlib import Path
from typing import Iterable

import regex

from minitransformer.data.tokenizer import ROLE_NAMES, BPETokenizer

UNK_NAMES = ("[UNK]", "<unk>", "<|unk|>")
_CACHE_LIMIT = 1 << 20      # words kept in the encode cache before it is cleared
_SENTINEL = regex.compile(r"<extra_id_(\d+)>")

# Rust's char::is_whitespace: the White_Space property.
WHITESPACE = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000"
                       + "".join(chr(c) for c in range(0x2000, 0x200B)))
# Rust regex's \w: alphabetic, marks, decimal digits, connector punctuation, joiners.
_WORD = r"\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}"
_SPACES = "".join(f"\\u{ord(c):04x}" for c in sorted(WHITESPACE))


def _is_punctuation(c: str) -> bool:
    """BERT's punctuation: ASCII symbols ($, +, ^ ... are not Unicode punctuation) or a P* category."""
    return (c.isascii() and not c.isalnum() and 33 <= ord(c) <= 126) or unicodedata.category(c)[0] == "P"


def _is_control(c: str) -> bool:
    """BERT's control characters (deleted by clean_text); tab and newlines count as whitespace."""
    return c not in "\t\n\r" and unicodedata.category(c) in ("Cc", "Cf", "Co")


_CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
        (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _is_cjk(c: str) -> bool:
    """CJK ideographs, which BERT surrounds with spaces so each becomes a word."""
    return any(lo <= ord(c) <= hi for lo, hi in _CJK)


# =======================================================================================
# Normalizers: str -> str
# =======================================================================================

def bert_normalizer(spec: dict):
    clean, cjk = spec.get("clean_text", True), spec.get("handle_chinese_chars", True)
    lowercase = spec.get("lowercase", True)
    strip = spec.get("strip_accents")
    strip = lowercase if strip is None else strip     # BERT: uncased models also strip accents

    def normalize(s: str) -> str:
        if clean:
            s = "".join(" " if c in WHITESPACE else c for c in s
                        if c not in ("\x00", "\ufffd") and not _is_control(c))
        if cjk:
            s = "".join(f" {c} " if _is_cjk(c) else c for c in s)
        if strip:
            s = "".join(c for c in unicodedata.normalize("NFD", s) if unicodedata.category(c) != "Mn")
        if lowercase:
            s = "".join(c.lower() for c in s)       # per character: no final-sigma rule, as in Rust
        return s
    return normalize


class Precompiled:
    """SentencePiece's compiled normalization table (``precompiled_charsmap``).

    The blob is a little-endian u32 byte count, a double-array trie of that many bytes
    (Darts-clone layout: each 32-bit unit packs a label, a has-leaf bit and an offset to
    its children, which sit at ``position ^ offset ^ byte``), then NUL-terminated
    replacement strings that the trie's leaf values index. Text is looked up one grapheme
    cluster at a time; a cluster (under 6 bytes) whose bytes begin with a key becomes that
    key's replacement (the shortest key wins, and the rest of the cluster is dropped: odd,
    but what ``tokenizers`` does); otherwise each character is looked up alone.
    """

    def __init__(self, blob: bytes):
        if len(blob) < 4:
            raise ValueError("precompiled_charsmap is shorter than its 4-byte length field")
        size = int.from_bytes(blob[:4], "little")
        if size % 4 or 4 + size > len(blob):
            raise ValueError(f"precompiled_charsmap declares a {size}-byte trie in a {len(blob)}-byte blob")
        trie = blob[4:4 + size]
        self.units = [int.from_bytes(trie[i:i + 4], "little") for i in range(0, size, 4)]
        self.replacements = blob[4 + size:]
        self._cache: dict[str, str | None] = {}

    @staticmethod
    def _offset(unit: int) -> int:
        return (unit >> 10) << ((unit & (1 << 9)) >> 6)

    def lookup(self, key: str) -> str | None:
        """The replacement of the shortest key that ``key``'s UTF-8 bytes start with, or None."""
        if key in self._cache:
            return self._cache[key]
        units, found = self.units, None
        try:
            node = self._offset(units[0])
            for byte in key.encode("utf-8"):
                if byte == 0:
                    break
                node ^= byte
                unit = units[node]
                if unit & ((1 << 31) | 0xFF) != byte:
                    break
                node ^= self._offset(unit)
                if (unit >> 8) & 1:
                    start = units[node] & ((1 << 31) - 1)
                    end = self.replacements.find(b"\x00", start)
                    found = self.replacements[start:end if end >= 0 else None].decode("utf-8", "replace")
                    break
        except IndexError:              # a damaged trie points outside itself: no match
            found = None
        self._cache[key] = found
        return found

    def __call__(self, s: str) -> str:
        out = []
        for grapheme in regex.findall(r"\X", s):
            if len(grapheme.encode("utf-8")) < 6:
                whole = self.lookup(grapheme)
                if whole is not None:
                    out.append(whole)
                    continue
            for c in grapheme:
                r = self.lookup(c)
                out.append(c if r is None else r)
        return "".join(out)


def precompiled(spec: dict):
    import base64

    return Precompiled(base64.b64decode(spec["precompiled_charsmap"]))


def _replace(spec: dict):
    pattern = spec["pattern"]
    content = spec["content"]
    if "String" in pattern:
        literal = pattern["String"]
        return lambda s: s.replace(literal, content) if literal else s
    compiled = regex.compile(pattern["Regex"])
    return lambda s: compiled.sub(lambda m: content, s)


def _strip(spec: dict):
    left, right = spec.get("strip_left", True), spec.get("strip_right", True)

    def strip(s: str) -> str:
        i, j = 0, len(s)
        while left and i < j and s[i] in WHITESPACE:
            i += 1
        while right and j > i and s[j - 1] in WHITESPACE:
            j -= 1
        return s[i:j]
    return strip


def _strip_accents(spec: dict):
    # Every combining mark (Mn, Mc, Me); BertNormalizer's own accent stripping drops only Mn.
    return lambda s: "".join(c for c in s if unicodedata.category(c)[0] != "M")


def _sequence_of(builders: dict, kind: str, key: str):
    """The builder of a "Sequence" of ``kind``s (normalizers, pre-tokenizers or decoders):
    its parts, listed under ``key``, applied in order."""
    def build(spec: dict):
        steps = [_build(builders, kind, part) for part in spec[key]]

        def run(s):
            for step in steps:
                s = step(s)
            return s
        return run
    return build


NORMALIZERS = {
    "BertNormalizer": bert_normalizer,
    "Precompiled": precompiled,
    "NFC": lambda spec: lambda s: unicodedata.normalize("NFC", s),
    "NFD": lambda spec: lambda s: unicodedata.normalize("NFD", s),
    "NFKC": lambda spec: lambda s: unicodedata.normalize("NFKC", s),
    "NFKD": lambda spec: lambda s: unicodedata.normalize("NFKD", s),
    "Lowercase": lambda spec: lambda s: "".join(c.lower() for c in s),
    "StripAccents": _strip_accents,
    "Strip": _strip,
    "Replace": _replace,
    "Prepend": lambda spec: lambda s: spec["prepend"] + s if s else s,
}
NORMALIZERS["Sequence"] = _sequence_of(NORMALIZERS, "normalizer", "normalizers")


def _build(builders: dict, kind: str, spec: dict | None):
    if spec is None:
        return None
    t = spec.get("type")
    if t not in builders:
        raise ValueError(f"tokenizer.json: {kind} type {t!r} is not supported; supported: {', '.join(builders)}")
    return builders[t](spec)


# =======================================================================================
# Pre-tokenizers: list of (piece, offset) -> list of (piece, offset)
#
# A piece's offset is where it starts in the normalized text of its segment; Metaspace's
# "first" scheme asks whether a piece starts the whole input.
# =======================================================================================

def delimit(text: str, matches) -> list[tuple[int, int, bool]]:
    """(start, end, is delimiter) entries covering ``text``: each of the (start, end)
    ``matches`` is one delimiter, and each gap between them one ordinary entry."""
    entries, pos = [], 0
    for start, end in matches:
        if start == end:
            continue
        if start > pos:
            entries.append((pos, start, False))
        entries.append((start, end, True))
        pos = end
    if pos < len(text):
        entries.append((pos, len(text), False))
    return entries


def split_pieces(entries, behavior: str):
    """Cut a text at its delimiter ``entries`` (from ``delimit``), as ``tokenizers`` does.

    behavior: "Removed" (drop delimiters), "Isolated" (each its own piece),
    "MergedWithPrevious" / "MergedWithNext" (glued to the neighbouring piece, unless that
    neighbour is a delimiter too), "Contiguous" (a run of delimiters is one piece).
    Returns (start, end) spans, empty ones dropped.
    """
    spans = []
    if behavior == "Removed":
        spans = [(s, e) for s, e, m in entries if not m]
    elif behavior == "Isolated":
        spans = [(s, e) for s, e, _ in entries]
    elif behavior == "MergedWithPrevious":
        previous = False
        for s, e, m in entries:
            if m and not previous and spans:
                spans[-1] = (spans[-1][0], e)
            else:
                spans.append((s, e))
            previous = m
    elif behavior == "MergedWithNext":
        previous = False
        for s, e, m in reversed(entries):
            if m and not previous and spans:
                spans[-1] = (s, spans[-1][1])
            else:
                spans.append((s, e))
            previous = m
        spans.reverse()
    elif behavior == "Contiguous":
        previous = False
        for s, e, m in entries:
            if m == previous and spans:
                spans[-1] = (spans[-1][0], e)
            else:
                spans.append((s, e))
            previous = m
    else:
        raise ValueError(f"tokenizer.json: split behavior {behavior!r} is not supported")
    return [(s, e) for s, e in spans if e > s]


def _behavior(name: str) -> str:
    """tokenizer.json writes behaviours in PascalCase; the Python API uses snake_case."""
    return "".join(part.capitalize() for part in name.split("_")) if "_" in name or name.islower() else name


def _splitter(find, behavior: str, invert: bool = False):
    """A pre-tokenizer that cuts every piece at the matches ``find(piece)`` returns
    (with ``invert``, the matches are what is kept and the gaps the delimiters)."""
    def run(pieces):
        out = []
        for text, offset in pieces:
            entries = delimit(text, find(text))
            if invert:
                entries = [(s, e, not m) for s, e, m in entries]
            out.extend((text[s:e], offset + s) for s, e in split_pieces(entries, behavior))
        return out
    return run


def _char_matches(predicate):
    return lambda text: [(i, i + 1) for i, c in enumerate(text) if predicate(c)]


def _regex_matches(pattern):
    compiled = regex.compile(pattern)
    return lambda text: [m.span() for m in compiled.finditer(text)]


def _whitespace_split(spec):
    return _splitter(_char_matches(lambda c: c in WHITESPACE), "Removed")


def _bert_pre_tokenizer(spec):
    spaces = _splitter(_char_matches(lambda c: c in WHITESPACE), "Removed")
    punctuation = _splitter(_char_matches(_is_punctuation), "Isolated")
    return lambda pieces: punctuation(spaces(pieces))


def _whitespace(spec):
    words = _regex_matches(rf"[{_WORD}]+|[^{_WORD}{_SPACES}]+")

    def run(pieces):           # keep the matches, drop what lies between them
        return [(t[s:e], o + s) for t, o in pieces for s, e in words(t)]
    return run


def _punctuation(spec):
    return _splitter(_char_matches(_is_punctuation), _behavior(spec.get("behavior", "Isolated")))


def _digits(spec):
    numeric = _char_matches(lambda c: unicodedata.category(c)[0] == "N")    # Rust's char::is_numeric
    return _splitter(numeric, "Isolated" if spec.get("individual_digits", False) else "Contiguous")


def _split(spec):
    pattern = spec["pattern"]
    find = (_regex_matches(regex.escape(pattern["String"])) if "String" in pattern
            else _regex_matches(pattern["Regex"]))
    return _splitter(find, _behavior(spec["behavior"]), invert=spec.get("invert", False))


def _prepend_scheme(spec: dict) -> str:
    if "prepend_scheme" in spec:
        return spec["prepend_scheme"]
    return "always" if spec.get("add_prefix_space", True) else "never"   # files before tokenizers 0.15


def _metaspace(spec):
    mark, scheme, split = spec.get("replacement", "\u2581"), _prepend_scheme(spec), spec.get("split", True)

    def run(pieces):
        out = []
        for text, offset in pieces:
            if not text:
                continue
            text = text.replace(" ", mark)
            if not text.startswith(mark) and (scheme == "always" or (scheme == "first" and offset == 0)):
                text = mark + text
            if not split:
                out.append((text, offset))
                continue
            cuts = delimit(text, [(i, i + 1) for i, c in enumerate(text) if c == mark])
            out.extend((text[s:e], offset + s) for s, e in split_pieces(cuts, "MergedWithNext"))
        return out
    return run


PRE_TOKENIZERS = {
    "BertPreTokenizer": _bert_pre_tokenizer,
    "WhitespaceSplit": _whitespace_split,
    "Whitespace": _whitespace,
    "Metaspace": _metaspace,
    "Punctuation": _punctuation,
    "Digits": _digits,
    "Split": _split,
}
PRE_TOKENIZERS["Sequence"] = _sequence_of(PRE_TOKENIZERS, "pre_tokenizer", "pretokenizers")


# =======================================================================================
# Decoders: list of token strings -> list of strings (joined at the end)
# =======================================================================================

def _wordpiece_cleanup(s: str) -> str:
    for dirty, clean in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                         (" 'm", "'m"), (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        s = s.replace(dirty, clean)
    return s


def _wordpiece_decoder(spec):
    prefix, cleanup = spec.get("prefix", "##"), spec.get("cleanup", True)

    def run(tokens):
        out = []
        for i, t in enumerate(tokens):
            if i > 0:
                t = t[len(prefix):] if t.startswith(prefix) else " " + t
            out.append(_wordpiece_cleanup(t) if cleanup else t)
        return out
    return run


def _metaspace_decoder(spec):
    mark, scheme = spec.get("replacement", "\u2581"), _prepend_scheme(spec)

    def run(tokens):
        # The first token's marks were added by the pre-tokenizer (unless it never adds them).
        return [t.replace(mark, "" if i == 0 and scheme != "never" else " ") for i, t in enumerate(tokens)]
    return run


def _replace_decoder(spec):
    replace = _replace(spec)
    return lambda tokens: [replace(t) for t in tokens]


def _strip_decoder(spec):
    content, start, stop = spec["content"], spec.get("start", 0), spec.get("stop", 0)

    def strip(t: str) -> str:
        chars = list(t)
        begin = next((i for i in range(min(start, len(chars))) if chars[i] != content), min(start, len(chars)))
        end = len(chars)
        for _ in range(stop):
            if end > begin and chars[end - 1] == content:
                end -= 1
            else:
                break
        return "".join(chars[begin:end])
    return lambda tokens: [strip(t) for t in tokens]


DECODERS = {
    "WordPiece": _wordpiece_decoder,
    "Metaspace": _metaspace_decoder,
    "Replace": _replace_decoder,
    "Strip": _strip_decoder,
    "Fuse": lambda spec: lambda tokens: ["".join(tokens)],
}
DECODERS["Sequence"] = _sequence_of(DECODERS, "decoder", "decoders")


# =======================================================================================
# Post-processors: ids of the text -> ids with the model's special tokens around them
# =======================================================================================

def _post_processor(spec: dict | None):
    if spec is None:
        return lambda ids: ids
    t = spec.get("type")
    if t == "TemplateProcessing":
        specials = {name: list(v["ids"]) for name, v in spec.get("special_tokens", {}).items()}
        template = []
        for item in spec["single"]:
            if "SpecialToken" in item:
                template.append(specials[item["SpecialToken"]["id"]])
            elif item["Sequence"]["id"] == "A":
                template.append(None)            # where the text's ids go
            else:
                raise ValueError("tokenizer.json: a single-sequence template may only use sequence A")
        return lambda ids: [i for part in template for i in (ids if part is None else part)]
    if t == "BertProcessing":
        cls, sep = spec["cls"][1], spec["sep"][1]
        return lambda ids: [cls, *ids, sep]
    raise ValueError(f"tokenizer.json: post_processor type {t!r} is not supported; supported: "
                     "TemplateProcessing, BertProcessing")


# =======================================================================================
# The tokenizer
# =======================================================================================

class PipelineTokenizer:
    """A tokenizer.json pipeline around a WordPiece or Unigram model (see the module docstring).

    encode(text, add_special_tokens=False): ids; with ``add_special_tokens`` the
    post-processor's template adds the model's special tokens ([CLS] ... [SEP], or ...
    </s>), as ``tokenizers``' own ``encode`` does by default. Added tokens found in the
    text (e.g. "[MASK]", "<extra_id_0>") become their ids; ``allowed_special=()`` treats
    the special ones as plain text instead.
    decode(ids, skip_special_tokens=False): text.
    """

    def __init__(self, data: dict, source: str = "tokenizer.json"):
        self.source = source
        self._data = data
        self._normalize = _build(NORMALIZERS, "normalizer", data.get("normalizer"))
        self._pre_tokenize = _build(PRE_TOKENIZERS, "pre_tokenizer", data.get("pre_tokenizer"))
        self._decode = _build(DECODERS, "decoder", data.get("decoder"))
        self._added: dict[str, int] = {}
        self._added_normalized: dict[str, bool] = {}
        self._specials: dict[str, int] = {}
        for t in data.get("added_tokens", []):
            if t.get("single_word") or t.get("lstrip") or t.get("rstrip"):
                raise ValueError(f"{source}: added token {t['content']!r} uses single_word/lstrip/rstrip, "
                                 "which are not supported")
            self._added[t["content"]] = int(t["id"])
            self._added_normalized[t["content"]] = bool(t.get("normalized", False))
            if t.get("special", False):
                self._specials[t["content"]] = int(t["id"])
        self._id_to_added = {i: s for s, i in self._added.items()}
        self._special_id_set = frozenset(self._specials.values())
        self._post_process = _post_processor(data.get("post_processor"))
        self._cut_cache: dict[tuple, regex.Pattern | None] = {}
        self._word_cache: dict[str, list[int]] = {}
        self._fingerprint = None

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

    def __len__(self) -> int:
        return self.vocab_size

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

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._specials)

    @property
    def special_ids(self) -> tuple[int, ...]:
        return tuple(sorted(self._special_id_set))

    def is_special(self, i: int) -> bool:
        return i in self._special_id_set

    def _role_id(self, role: str, names) -> int:
        for name in names:
            i = self.token_to_id(name)
            if i is not None:
                return i
        raise ValueError(f"{self.source}: this tokenizer has no {role} token (looked for {', '.join(names)})")

    pad_id = property(lambda self: self._role_id("pad", ROLE_NAMES["pad"]))
    eos_id = property(lambda self: self._role_id("eos", ROLE_NAMES["eos"]))
    mask_id = property(lambda self: self._role_id("mask", ROLE_NAMES["mask"]))
    cls_id = property(lambda self: self._role_id("cls", ROLE_NAMES["cls"]))
    sep_id = property(lambda self: self._role_id("sep", ROLE_NAMES["sep"]))
    unk_id = property(lambda self: self._role_id("unk", UNK_NAMES))

    @property
    def num_sentinels(self) -> int:
        return sum(1 for s in self._added if _SENTINEL.fullmatch(s))

    def sentinel_id(self, k: int) -> int:
        """Id of T5's ``<extra_id_k>``."""
        i = self._added.get(f"<extra_id_{k}>")
        if i is None:
            raise ValueError(f"sentinel <extra_id_{k}> does not exist in {self.source} "
                             f"({self.num_sentinels} sentinels)")
        return i

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

    def _special_set(self, allowed_special) -> frozenset:
        if allowed_special == "all":
            return frozenset(self._specials)
        if isinstance(allowed_special, str):
            raise ValueError(f"encode: allowed_special must be 'all' or an iterable of special tokens, got "
                             f"the string {allowed_special!r}; write allowed_special={{{allowed_special!r}}}")
        return frozenset(allowed_special)

    def encode(self, text: str, add_special_tokens: bool = False,
               allowed_special: str | Iterable[str] = "all") -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"encode: text must be a str, got {type(text).__name__}")
        allowed = self._special_set(allowed_special)
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

    def encode_batch(self, texts: Iterable[str], **kwargs) -> list[list[int]]:
        return [self.encode(t, **kwargs) for t in texts]

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

    def save(self, path: str | os.PathLike) -> Path:
        """Write the tokenizer.json back as it was read (a file, or a folder to put it in)."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self._data, ensure_ascii=False, indent=1), encoding="utf-8")
        return path

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            canonical = json.dumps(self._data, sort_keys=True, ensure_ascii=False)
            self._fingerprint = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
        return self._fingerprint

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, specials={len(self._specials)})"


class WordPieceTokenizer(PipelineTokenizer):
    """BERT's WordPiece: each word is split greedily into the longest pieces in the
    vocabulary, left to right, pieces after the first written with the "##" prefix; a word
    with a part no piece covers, or longer than ``max_input_chars_per_word``, is [UNK]."""

    def __init__(self, data: dict, source: str = "tokenizer.json"):
        model = data["model"]
        self.vocab: dict[str, int] = {str(k): int(v) for k, v in model["vocab"].items()}
        self._tokens = {i: t for t, i in self.vocab.items()}
        self.prefix = model.get("continuing_subword_prefix", "##")
        self.max_chars = int(model.get("max_input_chars_per_word", 100))
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
        self.pieces: list[str] = [str(p) for p, _ in model["vocab"]]
        self.scores: list[float] = [float(s) for _, s in model["vocab"]]
        self._ids = {}
        for i, p in enumerate(self.pieces):
            self._ids.setdefault(p, i)
        self.unk = model.get("unk_id")
        if self.unk is None:
            raise ValueError(f"{source}: Unigram model without unk_id is not supported")
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
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
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
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: a malformed {kind} tokenizer.json ({type(e).__name__}: {e})") from None
    raise ValueError(f"{path}: model type {kind!r} is not supported; expected BPE (byte-level), WordPiece or Unigram")
