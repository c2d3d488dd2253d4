"""The C4 cleaning rules (Raffel et al. 2020, "Colossal Clean Crawled Corpus").

Unlike Gopher's rules, C4 edits the document: it walks the lines and drops those that look
like page furniture rather than prose, and drops the whole document for a few signs of
placeholder text or code. In C4's order, for each stripped, non-blank line:

1. a line with a word longer than 1,000 characters is dropped (minified code, base64);
2. Wikipedia-style citation marks "[1]", "[edit]", "[citation needed]" are removed;
3. a line not ending in terminal punctuation (". ? ! \\""), or ending in "...", is dropped
   (menus, buttons, headings, truncated teasers);
4. a line with fewer than 3 words is dropped;
5. a line containing "lorem ipsum" drops the whole document (template filler);
6. a line containing "javascript" is dropped ("please enable JavaScript" notices);
7. a line containing "{" drops the whole document (code);
8. a line with cookie or policy boilerplate ("terms of use", "privacy policy", ...) is dropped.

The document is dropped when the kept lines hold fewer than 5 sentences. Rules 5 and 7 only
see lines that survived 1-4, as in C4: a "{" in a menu line that is dropped anyway does not
condemn the page. Sentences are counted as runs of ". ! ?" (closing quotes or brackets may
follow) before whitespace or the end of the line, at least one per kept line; C4 used NLTK's
Punkt tokenizer, which also knows abbreviations.
"""
from __future__ import annotations

import dataclasses
import re

from .knobs import knob

TERMINAL_PUNCTUATION = (".", "?", "!", '"')
POLICY_PHRASES = ("terms of use", "privacy policy", "cookie policy", "uses cookies",
                  "use of cookies", "use cookies")

_CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*(?=\s|$)")


@dataclasses.dataclass(frozen=True)
class C4Config:
    enabled: bool = knob(True, "run C4's line and document rules")
    max_word_length: int = knob(1000, "drop lines with a word longer than this many characters")
    remove_citations: bool = knob(True, "remove [1], [edit] and [citation needed] marks")
    require_terminal_punctuation: bool = knob(True, "drop lines not ending in . ? ! or a double quote")
    min_words_per_line: int = knob(3, "drop lines with fewer words than this")
    drop_lorem_ipsum: bool = knob(True, "drop documents with a kept line containing 'lorem ipsum'")
    drop_javascript_lines: bool = knob(True, "drop lines mentioning 'javascript'")
    drop_curly_brace: bool = knob(True, "drop documents with a kept line containing '{'")
    drop_policy_lines: bool = knob(True, "drop lines with cookie or policy boilerplate")
    min_sentences: int = knob(5, "drop documents whose kept lines hold fewer sentences than this")


def c4_clean(text: str, cfg: C4Config = C4Config()) -> tuple[str, str | None]:
    """(the kept lines, None) or ("", the reason the document is dropped).

    Kept lines stay in order, and a blank line stays between paragraphs (C4 joined all kept
    lines with single newlines), so a page with nothing to remove comes back unchanged.
    """
    kept: list[str] = []
    sentences = 0
    for line in text.split("\n"):
        line = line.strip()
        if not line:
            if kept and kept[-1]:
                kept.append("")  # keep one blank line between paragraphs
            continue
        if len(line) > cfg.max_word_length and any(len(w) > cfg.max_word_length for w in line.split()):
            continue
        if cfg.remove_citations:
            line = _CITATION.sub("", line)
        if cfg.require_terminal_punctuation and (
                not line.endswith(TERMINAL_PUNCTUATION) or line.endswith("...")):
            continue
        if len(line.split()) < cfg.min_words_per_line:
            continue
        lower = line.lower()
        if cfg.drop_lorem_ipsum and "lorem ipsum" in lower:
            return "", "lorem_ipsum"
        if cfg.drop_javascript_lines and "javascript" in lower:
            continue
        if cfg.drop_curly_brace and "{" in line:
            return "", "curly_brace"
        if cfg.drop_policy_lines and any(phrase in lower for phrase in POLICY_PHRASES):
            continue
        sentences += max(1, len(_SENTENCE_END.findall(line)))
        kept.append(line)
    if sentences < cfg.min_sentences:
        return "", "too_few_sentences"
    return "\n".join(kept).strip("\n"), None
