"""Unicode normalisation: the first stage, so every later rule sees one spelling of the text.

The same visible text can arrive as different code point sequences: "é" as one code point
(U+00E9) or as "e" plus a combining accent (U+0065 U+0301); Windows line ends; invisible
zero-width spaces and byte-order marks pasted in from web pages. Left alone, these make two
copies of one page hash differently (so exact deduplication misses them) and make word and
line counts depend on the encoder that produced the page.

``normalize_text`` applies one Unicode normal form (NFC by default: it composes characters
but, unlike NFKC, does not rewrite "²" as "2" or "ﬁ" as "fi"), turns every line end into
"\\n", deletes control and zero-width characters (keeping tab and newline), strips
whitespace at the end of each line and at both ends of the document.
"""
from __future__ import annotations

import dataclasses
import re
import unicodedata

from .knobs import knob

FORMS = ("NFC", "NFKC", "NFD", "NFKD")


@dataclasses.dataclass(frozen=True)
class NormalizeConfig:
    enabled: bool = knob(True, "run Unicode normalisation")
    form: str = knob("NFC", "Unicode normal form: NFC, NFKC, NFD or NFKD")

    def __post_init__(self):
        if self.form not in FORMS:
            raise ValueError(f"normalize.form must be one of {', '.join(FORMS)}, got {self.form!r}; "
                             "NFC is the safe default")


# Everything str.splitlines() treats as a line boundary, so that "\n" alone splits lines later.
_LINE_END = re.compile("\r\n|[\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
# The remaining C0 and C1 controls other than tab and newline, DEL, zero-width space, joiners
# and the byte-order mark: characters with no visible form that only split words invisibly.
_INVISIBLE = re.compile("[\x00-\x08\x0e-\x1b\x1f\x7f-\x84\x86-\x9f\u200b-\u200d\u2060\ufeff]")
_TRAILING_SPACE = re.compile(r"[ \t\u00a0]+(?=\n)")


def normalize_text(text: str, form: str = "NFC") -> str:
    """Return ``text`` in one canonical spelling (see the module docstring)."""
    if not unicodedata.is_normalized(form, text):  # a fast check; most text already is
        text = unicodedata.normalize(form, text)
    text = _LINE_END.sub("\n", text)
    text = _INVISIBLE.sub("", text)
    text = _TRAILING_SPACE.sub("", text)
    return text.strip()
