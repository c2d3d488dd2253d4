"""FineWeb's own quality rules (Penedo et al. 2024), added on top of Gopher and C4.

FineWeb's authors found these by comparing what survived the earlier filters in good and bad
crawl dumps. On the non-blank lines (stripped) of a document, it fails when

* at most 12% of the lines end in sentence-final punctuation (a menu, a list of links);
* at least 67% of the lines are at most 30 characters long (lists, tables, tag clouds);
* repeated lines (each copy after the first) hold at least 1% of the characters, newlines
  not counted (navigation repeated in header and footer);
* there are more than 0.3 newlines per word (text broken into one- or two-word lines).

Sentence-final punctuation is any Unicode ``Sentence_Terminal`` character or "…",
optionally followed by closing quotes or brackets, so "。" and "!)" both count.

Note the comparisons: the first three rules fail *at* their threshold (<=, >=, >=), the last
one only above it, as in FineWeb.
"""
from __future__ import annotations

import dataclasses

import regex

from .knobs import knob
from .quality import nonblank_lines, repeated

_ENDS_SENTENCE = regex.compile(r"[\p{Sentence_Terminal}…][\"'”’»)\]]*$")


@dataclasses.dataclass(frozen=True)
class FineWebConfig:
    enabled: bool = knob(True, "run FineWeb's extra rules")
    min_punct_lines: float = knob(0.12, "a share of lines ending in punctuation at or below this fails")
    short_line_length: int = knob(30, "a line of at most this many characters is short")
    max_short_lines: float = knob(0.67, "a share of short lines at or above this fails")
    max_dup_line_chars: float = knob(0.01, "a character share of repeated lines at or above this fails")
    max_newlines_per_word: float = knob(0.3, "more newlines per word than this fails")


def fineweb_quality(text: str, cfg: FineWebConfig = FineWebConfig()) -> str | None:
    """The first FineWeb rule ``text`` breaks, or None when it passes them all."""
    lines = nonblank_lines(text)
    if not lines:
        return "empty"
    n = len(lines)
    if sum(1 for line in lines if _ENDS_SENTENCE.search(line)) / n <= cfg.min_punct_lines:
        return "punct_lines"
    if sum(len(line) <= cfg.short_line_length for line in lines) / n >= cfg.max_short_lines:
        return "short_lines"
    if repeated(lines)[1] / (len(text) - text.count("\n")) >= cfg.max_dup_line_chars:
        return "dup_line_chars"
    if text.count("\n") / len(text.split()) > cfg.max_newlines_per_word:
        return "list_like"
    return None
