"""A word blocklist: drop documents that contain words or phrases from a list the user gives.

Lists of slurs, adult-content terms or other words a team decides it does not want its model
to learn from are a blunt but common tool against harmful content (C4 used one). What belongs
on such a list is a decision for whoever trains the model, so the project ships no list of its
own: the user passes a file.

The file is UTF-8 text with one word or phrase per line; blank lines and lines starting with
"#" are ignored. Matching is on whole words, ignoring case: the entry "ass" does not match
"class" or "assess". A word here is a run of letters, digits and underscores, with inner
apostrophes or hyphens ("don't", "e-mail"); a phrase matches the same words in a row.

Blunt means biased: word lists are known to remove text in dialects and about minorities at
a higher rate (Dodge et al. 2021 on C4), which is why the list, its threshold and the report
of what it removed are all visible.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable

import regex

from .knobs import knob

_WORD = regex.compile(r"\w+(?:['’-]\w+)*")


@dataclasses.dataclass(frozen=True)
class BlocklistConfig:
    enabled: bool = knob(True, "run the blocklist (only when a list file is given)")
    path: str | None = knob(None, "the list: UTF-8, one word or phrase per line, '#' comments")
    max_hits: int = knob(0, "drop documents with more blocklisted words or phrases than this")


def _words(text: str) -> list[str]:
    return [w.casefold() for w in _WORD.findall(text)]


class Blocklist:
    """Whole-word, case-insensitive matching of a list of words and phrases."""

    def __init__(self, entries: Iterable[str]):
        # phrases[n] holds the n-word entries as tuples; one set lookup per position and n.
        self.phrases: dict[int, set[tuple[str, ...]]] = {}
        for entry in entries:
            words = tuple(_words(entry))
            if words:
                self.phrases.setdefault(len(words), set()).add(words)
        if not self.phrases:
            raise ValueError("blocklist: the list holds no words; give a file with one word "
                             "or phrase per line")

    @classmethod
    def from_file(cls, path: str | Path) -> "Blocklist":
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise FileNotFoundError(f"blocklist: no file {path}; pass an existing word list "
                                    "(one word or phrase per line)") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"blocklist: cannot read {path} as UTF-8 text ({e}); "
                             "pass a UTF-8 word list") from None
        entries = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
        try:
            return cls(entries)
        except ValueError:
            raise ValueError(f"blocklist: {path} holds no words (only blank or '#' lines); "
                             "put one word or phrase per line") from None

    def __len__(self) -> int:
        return sum(map(len, self.phrases.values()))

    def matches(self, text: str) -> list[str]:
        """Every blocklisted word or phrase in ``text``, in order of length then position."""
        words = _words(text)
        found = []
        for n, entries in sorted(self.phrases.items()):
            windows = zip(*(words[i:] for i in range(n)))  # the n-word windows of the text
            found.extend(" ".join(w) for w in windows if w in entries)
        return found
