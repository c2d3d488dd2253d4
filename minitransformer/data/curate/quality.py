"""Gopher's quality and repetition rules (Rae et al. 2021, "MassiveText" quality filtering).

Both rules look at a document as a whole and either keep it unchanged or drop it with a
reason. They encode what a page of real prose looks like:

Quality (``gopher_quality``). A *word* is a whitespace-separated token; a word made only of
punctuation and symbols ("-", "...", "|") is not counted in the length rules.

* between 50 and 100,000 words, with a mean word length between 3 and 10 characters
  (shorter: lists of numbers or code; longer: URLs, base64, run-together text);
* at most 0.1 "#" per word and, separately, at most 0.1 ellipses ("..." or "…") per word
  (hashtag spam, truncated teasers);
* at most 90% of the non-blank lines start with a bullet and at most 30% end with an
  ellipsis (navigation menus, lists of truncated links);
* at least 80% of the words contain a letter (tables of numbers, symbol soup);
* at least 2 of the stop words {the, be, to, of, and, that, have, with} occur (counted as
  distinct words; a page with none of them is not English prose).

Repetition (``gopher_repetition``). Repeated content is boilerplate or generated spam, and a
model trained on it learns to loop. With paragraphs separated by blank lines and lines by
newlines (blank ones ignored), a document fails when

* more than 30% of its paragraphs, or of its lines, repeat an earlier one; or the repeated
  copies hold more than 20% of its characters (paragraphs and lines separately);
* the most frequent word 2-, 3- or 4-gram (if it occurs at least twice) covers more than
  20%, 18% or 16% of the word characters, counting every occurrence;
* the words inside repeated occurrences of 5-, 6-, ..., 10-grams (each n-gram after its
  first occurrence; a word inside several counts once) hold more than 15%, 14%, 13%, 12%,
  11% or 10% of the word characters.

"Word characters" are the characters of the words, whitespace excluded.

Where the paper leaves a detail open, the choice here, and how datatrove's widely used
implementation differs: words are split on whitespace (datatrove uses a word tokenizer that
splits off punctuation); stop words count once each, as the paper's "at least two of the
following words" reads (datatrove counts occurrences); blank lines are not lines; a top
n-gram must occur at least twice, since a single occurrence is not repetition (datatrove
also scores n-grams seen once, which can drop short documents for being short).
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np
import regex

from .hashing import ngram_hashes, word_hashes
from .knobs import knob

STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
BULLETS = ("•", "‣", "◦", "·", "-", "*")
ELLIPSES = ("...", "…")

# Whole whitespace-separated tokens made only of punctuation and symbols, or without a letter:
# one scan of the text instead of one regex call per word.
_SYMBOL_TOKEN = regex.compile(r"(?<!\S)[\p{P}\p{S}]+(?!\S)")
_LETTERLESS_TOKEN = regex.compile(r"(?<!\S)[^\s\p{L}]+(?!\S)")
_STOP_WORD = re.compile(r"\b(?:" + "|".join(STOP_WORDS) + r")\b", re.IGNORECASE)
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def nonblank_lines(text: str) -> list[str]:
    """The lines of ``text`` that hold something, stripped."""
    return [line.strip() for line in text.split("\n") if line.strip()]


@dataclasses.dataclass(frozen=True)
class GopherQualityConfig:
    enabled: bool = knob(True, "run Gopher's quality rules")
    min_words: int = knob(50, "fewer words than this fails")
    max_words: int = knob(100_000, "more words than this fails")
    min_mean_word_length: float = knob(3.0, "a mean word length below this fails")
    max_mean_word_length: float = knob(10.0, "a mean word length above this fails")
    max_hash_ratio: float = knob(0.1, "more '#' per word than this fails")
    max_ellipsis_ratio: float = knob(0.1, "more ellipses per word than this fails")
    max_bullet_lines: float = knob(0.9, "a larger share of lines starting with a bullet fails")
    max_ellipsis_lines: float = knob(0.3, "a larger share of lines ending in an ellipsis fails")
    min_alpha_words: float = knob(0.8, "a smaller share of words containing a letter fails")
    min_stop_words: int = knob(2, "fewer distinct stop words (the, be, to, ...) than this fails")


def gopher_quality(text: str, cfg: GopherQualityConfig = GopherQualityConfig()) -> str | None:
    """The first Gopher quality rule ``text`` breaks, or None when it passes them all."""
    words = text.split()
    symbols = _SYMBOL_TOKEN.findall(text)
    n_real = len(words) - len(symbols)
    if n_real < max(cfg.min_words, 1):
        return "too_few_words"
    if n_real > cfg.max_words:
        return "too_many_words"
    mean_length = (sum(map(len, words)) - sum(map(len, symbols))) / n_real
    if mean_length < cfg.min_mean_word_length:
        return "short_mean_word_length"
    if mean_length > cfg.max_mean_word_length:
        return "long_mean_word_length"
    n = len(words)
    if text.count("#") / n > cfg.max_hash_ratio:
        return "hash_ratio"
    if sum(map(text.count, ELLIPSES)) / n > cfg.max_ellipsis_ratio:
        return "ellipsis_ratio"
    lines = nonblank_lines(text)
    if sum(line.startswith(BULLETS) for line in lines) / len(lines) > cfg.max_bullet_lines:
        return "bullet_lines"
    if sum(line.endswith(ELLIPSES) for line in lines) / len(lines) > cfg.max_ellipsis_lines:
        return "ellipsis_lines"
    if (n - len(_LETTERLESS_TOKEN.findall(text))) / n < cfg.min_alpha_words:
        return "alpha_words"
    if _count_stop_words(text, cfg.min_stop_words) < cfg.min_stop_words:
        return "stop_words"
    return None


def _count_stop_words(text: str, enough: int) -> int:
    """Distinct stop words in ``text``, counting no further than ``enough``."""
    seen: set[str] = set()
    for m in _STOP_WORD.finditer(text):
        seen.add(m.group().lower())
        if len(seen) >= enough:
            break
    return len(seen)


@dataclasses.dataclass(frozen=True)
class GopherRepetitionConfig:
    enabled: bool = knob(True, "run Gopher's repetition rules")
    max_dup_paragraphs: float = knob(0.30, "a larger share of repeated paragraphs fails")
    max_dup_paragraph_chars: float = knob(0.20, "a larger character share in repeated paragraphs fails")
    max_dup_lines: float = knob(0.30, "a larger share of repeated lines fails")
    max_dup_line_chars: float = knob(0.20, "a larger character share in repeated lines fails")
    max_top_2gram: float = knob(0.20, "a larger word-character share of the top 2-gram fails")
    max_top_3gram: float = knob(0.18, "a larger word-character share of the top 3-gram fails")
    max_top_4gram: float = knob(0.16, "a larger word-character share of the top 4-gram fails")
    max_dup_5gram: float = knob(0.15, "a larger word-character share in repeated 5-grams fails")
    max_dup_6gram: float = knob(0.14, "a larger word-character share in repeated 6-grams fails")
    max_dup_7gram: float = knob(0.13, "a larger word-character share in repeated 7-grams fails")
    max_dup_8gram: float = knob(0.12, "a larger word-character share in repeated 8-grams fails")
    max_dup_9gram: float = knob(0.11, "a larger word-character share in repeated 9-grams fails")
    max_dup_10gram: float = knob(0.10, "a larger word-character share in repeated 10-grams fails")


def repeated(items: list[str]) -> tuple[int, int]:
    """(how many items repeat an earlier one, how many characters those repeats hold)."""
    seen: set[str] = set()
    count = chars = 0
    for item in items:
        if item in seen:
            count += 1
            chars += len(item)
        else:
            seen.add(item)
    return count, chars


def gopher_repetition(text: str, cfg: GopherRepetitionConfig = GopherRepetitionConfig()) -> str | None:
    """The first Gopher repetition rule ``text`` breaks, or None when it passes them all."""
    if not text:
        return None
    paragraphs = [p.strip() for p in _PARAGRAPH_BREAK.split(text) if p.strip()]
    count, chars = repeated(paragraphs)
    if count / max(len(paragraphs), 1) > cfg.max_dup_paragraphs:
        return "dup_paragraphs"
    if chars / len(text) > cfg.max_dup_paragraph_chars:
        return "dup_paragraph_chars"
    lines = nonblank_lines(text)
    count, chars = repeated(lines)
    if count / max(len(lines), 1) > cfg.max_dup_lines:
        return "dup_lines"
    if chars / len(text) > cfg.max_dup_line_chars:
        return "dup_line_chars"

    words = text.split()
    lengths = np.fromiter(map(len, words), np.int64, len(words))  # (W,)
    total = int(lengths.sum())
    if total == 0:
        return None
    h = word_hashes(words)                                        # (W,)
    # window_chars[i] = characters of words i..i+n-1, from one running sum.
    running = np.concatenate(([0], np.cumsum(lengths)))           # (W + 1,)
    for n in (2, 3, 4):
        g = ngram_hashes(h, n)                                    # (W - n + 1,)
        if g.size == 0:
            break
        limit = getattr(cfg, f"max_top_{n}gram")
        ordered = np.sort(g)
        run_starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        counts = np.diff(np.r_[run_starts, g.size])                # occurrences per n-gram
        top = counts.max()
        if top < 2:
            continue
        window_chars = running[n:] - running[:-n]                  # (W - n + 1,)
        # Most documents pass even with the longest window as the top n-gram: skip finding it.
        if top * window_chars.max() / total <= limit:
            continue
        is_top = np.isin(g, ordered[run_starts[counts == top]])
        if top * window_chars[is_top].max() / total > limit:
            return f"top_{n}gram"
    for n in range(5, 11):
        g = ngram_hashes(h, n)                                    # (W - n + 1,)
        ordered = np.sort(g)
        if not (ordered[1:] == ordered[:-1]).any():
            break  # no repeated n-gram, and so none longer: a repeated (n+1)-gram contains one
        _, first = np.unique(g, return_index=True)
        repeat = np.ones(g.size, bool)
        repeat[first] = False
        starts = np.flatnonzero(repeat)
        # Mark words i..i+n-1 of each repeat: +1 at its start, -1 past its end, running sum.
        edges = np.zeros(len(words) + 1, np.int64)
        edges[starts] += 1        # starts are distinct, so plain fancy-index updates suffice
        edges[starts + n] -= 1
        covered = np.cumsum(edges[:-1]) > 0                          # (W,)
        if lengths[covered].sum() / total > getattr(cfg, f"max_dup_{n}gram"):
            return f"dup_{n}gram"
    return None
