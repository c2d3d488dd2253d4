"""Regular expressions from tokenizer files, compiled with care and run with a time limit.

A tokenizer.json names its pre-tokenizer's split pattern (and a normalizer may name a
replacement pattern); the file may come from anywhere. A backtracking regex engine can take
time exponential in the text's length on some patterns: nested quantifiers such as
``(a{1,5}){1,20}b`` or ``(.*?,){11}P`` try every way of dividing a run of characters among
the repetitions before they fail. One such pattern would hang every encode.

So every pattern read from a file is a ``TimedPattern``:

- **at load** it is compiled, and a pattern that does not compile (or is not a string) is
  refused with a ValueError naming the field and the pattern;
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


class TimedPattern:
    """A compiled pattern whose every use runs under the time limit.

    pattern: the regex, as the file writes it.
    what: where it comes from, for messages ("tokenizer.json: Split pattern").
    trusted: a pattern of this library's own, run without the limit.
    """

    def __init__(self, pattern, what: str, trusted: bool = False):
        if not isinstance(pattern, str):
            raise ValueError(f"{what} must be a regex string, got {type(pattern).__name__} {pattern!r:.60}")
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
