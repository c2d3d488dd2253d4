"""The steps of a ``tokenizer.json`` pipeline, run the way the ``tokenizers`` library runs them.

A ``tokenizer.json`` names each step of its pipeline by type, with that step's options
(``tokenizer_json.py`` describes the whole pipeline). This module turns each type into a
plain function, one table per kind of step, in pipeline order:

    NORMALIZERS      str -> str                       BertNormalizer, Precompiled, NFKC, Strip, ...
    PRE_TOKENIZERS   [(piece, offset)] -> the same    BertPreTokenizer, Metaspace, Split, ...
    DECODERS         [token] -> [str], joined after   WordPiece, Metaspace, Replace, Fuse, ...
    post_processor   ids -> ids with the model's special tokens around them

``build(TABLE, kind, spec)`` makes the function for a step's spec; a "Sequence" of any
kind applies its parts in order. The regexes a file names (Split, Replace) are compiled at
load, refused there if they do not compile, and run under a time limit scaled to the text
(``data/tokenizer_patterns.py``).

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

import unicodedata

import regex

from minitransformer.data.tokenizer_patterns import TimedPattern

# Rust's char::is_whitespace: the White_Space property.
WHITESPACE = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000"
                       + "".join(chr(c) for c in range(0x2000, 0x200B)))
# Rust regex's \w: alphabetic, marks, decimal digits, connector punctuation, joiners.
_WORD = r"\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}"
_SPACES = "".join(f"\\u{ord(c):04x}" for c in sorted(WHITESPACE))


_REQUIRED = object()
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list",
               dict: "an object"}


def field(spec: dict, name: str, kind: type, default=_REQUIRED):
    """``spec[name]`` (``default`` when absent), refused unless it is of ``kind``: a file's
    values are checked where they are read, so that a wrong one is named at load instead of
    failing later, inside encode."""
    if name not in spec:
        if default is _REQUIRED:
            raise ValueError(f"tokenizer.json: the {spec.get('type')} step has no field {name!r}")
        return default
    value = spec[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ValueError(f"tokenizer.json: the {spec.get('type')} step's field {name!r} must be "
                         f"{_TYPE_NAMES.get(kind, kind.__name__)}, got {value!r:.60}")
    return value


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
    pattern = field(spec, "pattern", dict)
    content = field(spec, "content", str)
    if "String" in pattern:
        literal = field(pattern, "String", str)
        return lambda s: s.replace(literal, content) if literal else s
    compiled = TimedPattern(pattern.get("Regex"), "tokenizer.json: Replace pattern")
    return lambda s: compiled.sub(content, s)


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


def _prepend(text: str):
    return lambda s: text + s if s else s


def _sequence_of(builders: dict, kind: str, key: str):
    """The builder of a "Sequence" of ``kind``s (normalizers, pre-tokenizers or decoders):
    its parts, listed under ``key``, applied in order."""
    def build_sequence(spec: dict):
        parts = field(spec, key, list)
        if None in parts:
            raise ValueError(f"tokenizer.json: a Sequence of {kind}s lists null among its {key}; expected objects")
        steps = [build(builders, kind, part) for part in parts]

        def run(s):
            for step in steps:
                s = step(s)
            return s
        return run
    return build_sequence


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
    "Prepend": lambda spec: _prepend(field(spec, "prepend", str)),
}
NORMALIZERS["Sequence"] = _sequence_of(NORMALIZERS, "normalizer", "normalizers")


def build(builders: dict, kind: str, spec: dict | None):
    """The function for one step's ``spec`` (None for no step), from the table ``builders``."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise ValueError(f"tokenizer.json: a {kind} must be an object with a \"type\", got {spec!r:.60}")
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


BEHAVIORS = ("Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous")


def _behavior(spec: dict, default=_REQUIRED) -> str:
    """The spec's split behaviour: tokenizer.json writes it in PascalCase, the Python API in
    snake_case; anything else is refused at load."""
    name = field(spec, "behavior", str, default)
    name = "".join(part.capitalize() for part in name.split("_")) if "_" in name or name.islower() else name
    if name not in BEHAVIORS:
        raise ValueError(f"tokenizer.json: split behavior {name!r} is not supported; expected one of "
                         f"{', '.join(BEHAVIORS)}")
    return name


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


def _regex_matches(pattern, what: str, trusted: bool = False):
    return TimedPattern(pattern, what, trusted).spans


def _whitespace_split(spec):
    return _splitter(_char_matches(lambda c: c in WHITESPACE), "Removed")


def _bert_pre_tokenizer(spec):
    spaces = _splitter(_char_matches(lambda c: c in WHITESPACE), "Removed")
    punctuation = _splitter(_char_matches(_is_punctuation), "Isolated")
    return lambda pieces: punctuation(spaces(pieces))


def _whitespace(spec):
    words = _regex_matches(rf"[{_WORD}]+|[^{_WORD}{_SPACES}]+", "Whitespace pre-tokenizer", trusted=True)

    def run(pieces):           # keep the matches, drop what lies between them
        return [(t[s:e], o + s) for t, o in pieces for s, e in words(t)]
    return run


def _punctuation(spec):
    return _splitter(_char_matches(_is_punctuation), _behavior(spec, "Isolated"))


def _digits(spec):
    numeric = _char_matches(lambda c: unicodedata.category(c)[0] == "N")    # Rust's char::is_numeric
    return _splitter(numeric, "Isolated" if spec.get("individual_digits", False) else "Contiguous")


def _split(spec):
    pattern = field(spec, "pattern", dict)
    if "String" in pattern:            # a literal: no backtracking to limit
        find = _regex_matches(regex.escape(field(pattern, "String", str)), "tokenizer.json: Split string",
                              trusted=True)
    else:
        find = _regex_matches(pattern.get("Regex"), "tokenizer.json: Split pattern")
    return _splitter(find, _behavior(spec), invert=spec.get("invert", False))


def _prepend_scheme(spec: dict) -> str:
    if "prepend_scheme" in spec:
        return field(spec, "prepend_scheme", str)
    return "always" if spec.get("add_prefix_space", True) else "never"   # files before tokenizers 0.15


def _metaspace(spec):
    mark, scheme, split = field(spec, "replacement", str, "\u2581"), _prepend_scheme(spec), spec.get("split", True)

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
    prefix, cleanup = field(spec, "prefix", str, "##"), spec.get("cleanup", True)

    def run(tokens):
        out = []
        for i, t in enumerate(tokens):
            if i > 0:
                t = t[len(prefix):] if t.startswith(prefix) else " " + t
            out.append(_wordpiece_cleanup(t) if cleanup else t)
        return out
    return run


def _metaspace_decoder(spec):
    mark, scheme = field(spec, "replacement", str, "\u2581"), _prepend_scheme(spec)

    def run(tokens):
        # The first token's marks were added by the pre-tokenizer (unless it never adds them).
        return [t.replace(mark, "" if i == 0 and scheme != "never" else " ") for i, t in enumerate(tokens)]
    return run


def _replace_decoder(spec):
    replace = _replace(spec)
    return lambda tokens: [replace(t) for t in tokens]


def _strip_decoder(spec):
    content, start, stop = field(spec, "content", str), field(spec, "start", int, 0), field(spec, "stop", int, 0)

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

def post_processor(spec: dict | None):
    """The post-processor of ``spec``: the identity without one."""
    if spec is None:
        return lambda ids: ids
    t = spec.get("type")
    if t == "TemplateProcessing":
        specials = {name: list(v["ids"]) for name, v in field(spec, "special_tokens", dict, {}).items()}
        for name, ids in specials.items():
            if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
                raise ValueError(f"tokenizer.json: TemplateProcessing's special token {name!r} has ids {ids!r:.60}; "
                                 "expected token ids (integers >= 0)")
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
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in (cls, sep)):
            raise ValueError(f"tokenizer.json: BertProcessing's cls and sep ids must be integers >= 0, got {cls!r}, "
                             f"{sep!r}")
        return lambda ids: [cls, *ids, sep]
    raise ValueError(f"tokenizer.json: post_processor type {t!r} is not supported; supported: "
                     "TemplateProcessing, BertProcessing")
