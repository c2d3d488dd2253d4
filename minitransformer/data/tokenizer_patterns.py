"""Regular expressions from tokenizer files, compiled with care and run with a time limit.

A tokenizer.json names its pre-tokenizer's split pattern (and a normalizer may name a
replacement pattern); the file may come from anywhere. A backtracking regex engine can take
time exponential in the text's length on some patterns: nested quantifiers such as
``(a{1,5}){1,20}b`` or ``(.*?,){11}P`` try every way of dividing a run of characters among
the repetitions before they fail. One such pattern would hang every encode.

So every pattern read from a file is a ``TimedPattern``:

- **at load** it is compiled, and a pattern that does not compile (or is not a string) is
  refused with a ValueError naming the field and the pattern. So is one whose counted
  repeats, nested, would unroll into millions of steps: ``regex`` compiles ``a{3}`` as
  ``aaa``, so ``((a{1000}){1000}){1000}`` would take minutes and gigabytes to compile;
  ``unrolled_size`` estimates that size before compiling;
- **on each text** it runs under the ``regex`` package's ``timeout``, a limit scaled to the
  text's length: ``base`` seconds plus ``per_char`` seconds per character, of processor
  time (what ``regex`` measures: on a busy machine the wall-clock wait is longer). Real split
  patterns take well under a microsecond per character, so the default (2 s + 10 us per
  character: 12 s for a million characters) is a hundred-fold allowance: reaching it means
  the pattern has gone exponential, not that the text is long. Past it, ``PatternTimeout``
  (a ValueError) names the pattern and the text's length.

The limit is one setting for the process: ``set_pattern_time_limit(base, per_char)``, or
``with pattern_time_limit(base, per_char): ...`` for a block. A pattern marked ``trusted``
(the ones this library ships, GPT-2's and cl100k's, which have no nested quantifiers) runs
without the limit: the ``regex`` timeout costs 30-60% of the split's time on the hot path
of encoding a corpus.
"""
from __future__ import annotations

import contextlib

import regex


class PatternTimeout(ValueError):
    """A tokenizer's pattern ran past its time limit on one text (see the module docstring)."""


_limit = {"base": 2.0, "per_char": 1e-5}     # seconds; see set_pattern_time_limit


def set_pattern_time_limit(base: float | None = None, per_char: float | None = None) -> tuple[float, float]:
    """Set the time one pattern may take on one text, ``base + per_char * len(text)`` seconds
    (None keeps a part as it is); returns the previous (base, per_char)."""
    previous = (_limit["base"], _limit["per_char"])
    for name, value in (("base", base), ("per_char", per_char)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"set_pattern_time_limit: {name} must be a number of seconds >= 0, got {value!r}")
        _limit[name] = float(value)
    return previous


@contextlib.contextmanager
def pattern_time_limit(base: float | None = None, per_char: float | None = None):
    """The time limit of ``set_pattern_time_limit`` for the duration of a ``with`` block."""
    previous = set_pattern_time_limit(base, per_char)
    try:
        yield
    finally:
        set_pattern_time_limit(*previous)


def time_limit(length: int) -> float:
    """Seconds a pattern may take on a text of ``length`` characters."""
    return _limit["base"] + _limit["per_char"] * length


def shown(pattern: str, width: int = 60) -> str:
    """The pattern as an error message shows it: quoted, and cut to ``width`` characters."""
    return repr(pattern[:width]) + (f"... ({len(pattern):,} characters)" if len(pattern) > width else "")


MAX_UNROLLED = 1_000_000       # steps a pattern may compile into (about 0.4 s of compiling)
_COUNT = regex.compile(r"\{(\d*)(?:,(\d*))?\}")
_NAMED_ESCAPE = regex.compile(r"\\[pPNx]\{[^}]*\}|\\.", regex.DOTALL)


def _class_end(pattern: str, i: int) -> int:
    """The index just past the character class opening at ``pattern[i] == "["``: escapes are
    skipped, nested classes (regex's version 1 sets) counted, a "]" first in the set is literal."""
    depth, j = 0, i
    while j < len(pattern):
        c = pattern[j]
        if c == "\\":
            j += 2
            continue
        if c == "[":
            depth += 1
            j += 1
            if pattern.startswith("^", j):
                j += 1
            if pattern.startswith("]", j):
                j += 1
            continue
        if c == "]":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return j


def _item_end(pattern: str, i: int) -> int:
    """The index just past the character, escape (``\\p{L}`` whole) or class at ``i``."""
    if pattern[i] == "[":
        return max(_class_end(pattern, i), i + 1)
    escape = _NAMED_ESCAPE.match(pattern, i) if pattern[i] == "\\" else None
    return escape.end() if escape else i + 1


def unrolled_size(pattern: str) -> int:
    """An estimate, from above, of the steps ``pattern`` compiles into once counted repeats
    are unrolled: a character, escape or class counts 1, a group the sum of its contents, and
    ``x{m,n}`` multiplies ``x`` by the larger count (``*``, ``+``, ``?`` unroll nothing)."""
    frames = [[0, 0]]                      # per open group: [size so far, size of the last item]
    i = 0
    while i < len(pattern):
        c, frame = pattern[i], frames[-1]
        count = _COUNT.match(pattern, i) if c == "{" else None
        if count is not None and (count.group(1) or count.group(2)):
            # (12 digits are plenty to exceed the limit; more would only slow int() down)
            times = max(int(count.group(1)[:12] or 0), int((count.group(2) or "")[:12] or 0), 1)
            frame[0] += frame[1] * (times - 1)
            frame[1] *= times
            i = count.end()
            continue
        if c == "(":
            frames.append([0, 0])
            i += 1
            continue
        if c == ")" and len(frames) > 1:
            size = max(frames.pop()[0], 1)
            frames[-1][0] += size
            frames[-1][1] = size
            i += 1
            continue
        if c == "|":
            frame[1] = 0
            i += 1
            continue
        if c in "*+?":
            i += 1
            continue
        frame[0] += 1                      # one character, escape or class
        frame[1] = 1
        i = _item_end(pattern, i)
    while len(frames) > 1:                 # an unclosed group: compiling will refuse it anyway
        size = frames.pop()[0]
        frames[-1][0] += size
    return frames[0][0]


class TimedPattern:
    """A compiled pattern whose every use runs under the time limit.

    pattern: the regex, as the file writes it.
    what: where it comes from, for messages ("tokenizer.json: Split pattern").
    trusted: a pattern of this library's own, run without the limit.
    """

    def __init__(self, pattern, what: str, trusted: bool = False):
        if not isinstance(pattern, str):
            raise ValueError(f"{what} must be a regex string, got {type(pattern).__name__} {pattern!r:.60}")
        size = unrolled_size(pattern)
        if size > MAX_UNROLLED:
            raise ValueError(f"{what} {shown(pattern)} unrolls its counted repeats into about {size:,} steps, more "
                             f"than the {MAX_UNROLLED:,} a tokenizer's pattern may take to compile; fix the pattern")
        try:
            self._compiled = regex.compile(pattern)
        except (regex.error, RecursionError, OverflowError, ValueError) as e:
            # RecursionError: the parser recurses once per nested group.
            raise ValueError(f"{what} {shown(pattern)} is not a valid regex ({type(e).__name__}: {e}); "
                             "fix the pattern in the file") from None
        self.pattern = pattern
        self.what = what
        self.trusted = trusted

    def _timeout(self, text: str) -> float | None:
        return None if self.trusted else time_limit(len(text))

    def _timed_out(self, text: str, limit: float) -> PatternTimeout:
        return PatternTimeout(f"{self.what} {shown(self.pattern)} ran past its time limit of {limit:.3g} s on a "
                              f"text of {len(text):,} characters (a pattern that backtracks without end, such as "
                              "nested quantifiers); fix the pattern, or raise the limit with "
                              "minitransformer.data.set_pattern_time_limit")

    def findall(self, text: str) -> list[str]:
        """The text of every match (whole matches: a pattern's own groups do not change them)."""
        if self._compiled.groups:          # findall would return the groups' text instead
            return [m.group() for m in self.finditer(text)]
        limit = self._timeout(text)
        try:
            return self._compiled.findall(text, timeout=limit)
        except TimeoutError:
            raise self._timed_out(text, limit) from None

    def finditer(self, text: str) -> list:
        """Every match, as a list: the limit covers the whole scan, which must end inside it."""
        limit = self._timeout(text)
        try:
            return list(self._compiled.finditer(text, timeout=limit))
        except TimeoutError:
            raise self._timed_out(text, limit) from None

    def spans(self, text: str) -> list[tuple[int, int]]:
        """(start, end) of every match."""
        return [m.span() for m in self.finditer(text)]

    def sub(self, replacement: str, text: str) -> str:
        """``text`` with every match replaced by the literal ``replacement``."""
        limit = self._timeout(text)
        try:
            return self._compiled.sub(lambda m: replacement, text, timeout=limit)
        except TimeoutError:
            raise self._timed_out(text, limit) from None
