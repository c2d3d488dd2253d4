"""Generated corpora with known answers, for the curation tests and benchmark.

Real crawls come with no labels saying which page copies which, so the quality of
near-duplicate removal cannot be measured on them. Here every document is generated, and the
generator knows which documents are small edits of which:

* ``Prose`` writes English-shaped text (sentences of pseudo-words and common function words,
  paragraphs separated by blank lines) that passes every quality rule at its defaults;
* ``Prose.edit`` makes a near-duplicate by substituting, deleting or inserting a small share
  of the words;
* ``Prose.junk`` writes pages that a rule should drop: menus, spam, filler, code, tables;
* ``write_corpus`` mixes them into a .jsonl file of a target size and returns the labels.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

FUNCTION_WORDS = ("the", "of", "and", "to", "a", "in", "that", "is", "was", "with", "for", "as",
                  "on", "by", "have", "be", "it", "from", "at", "this", "which", "were", "are")
_ONSETS = ("b", "br", "d", "f", "g", "gr", "k", "l", "m", "n", "p", "pl", "r", "s", "st", "t",
           "tr", "v", "w", "z")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ou")
_CODAS = ("", "", "", "n", "r", "s", "t", "l", "m", "nd", "st")
JUNK_KINDS = ("menu", "spam", "lorem", "code", "table", "short")


class Prose:
    """Pseudo-English text over a fixed vocabulary (the seed fixes the vocabulary)."""

    def __init__(self, seed: int = 0, vocab_size: int = 6000):
        rng = np.random.default_rng(seed)
        words: set[str] = set()
        while len(words) < vocab_size:
            n = rng.integers(1, 4)
            word = "".join(_ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))]
                           for _ in range(n)) + _CODAS[rng.integers(len(_CODAS))]
            if 2 <= len(word) <= 11:
                words.add(word)
        self.vocab = sorted(words)
        weights = 1.0 / (np.arange(vocab_size) + 20.0)  # Zipf-like: a few words are common
        self.p = weights / weights.sum()

    def words(self, rng: np.random.Generator, n: int) -> list[str]:
        content = rng.choice(len(self.vocab), size=n, p=self.p)
        function = rng.integers(len(FUNCTION_WORDS), size=n)
        is_function = rng.random(n) < 0.3
        return [FUNCTION_WORDS[f] if isf else self.vocab[c]
                for c, f, isf in zip(content, function, is_function)]

    def document(self, rng: np.random.Generator, n_words: int) -> str:
        """Paragraphs of 3-6 sentences of 8-20 words, about ``n_words`` words in all."""
        words = self.words(rng, n_words)
        paragraphs, sentences, i = [], [], 0
        while i < len(words):
            k = int(rng.integers(8, 21))
            sentence = words[i:i + k]
            i += k
            sentences.append(" ".join([sentence[0].capitalize(), *sentence[1:]]) + ".")
            if len(sentences) >= rng.integers(3, 7) or i >= len(words):
                paragraphs.append(" ".join(sentences))
                sentences = []
        return "\n\n".join(paragraphs)

    def edit(self, rng: np.random.Generator, text: str, rate: float) -> str:
        """A near-duplicate: about ``rate`` of the words substituted, deleted or inserted.

        Only words without punctuation are touched, so sentences keep their full stops.
        """
        paragraphs = [p.split(" ") for p in text.split("\n\n")]
        slots = [(i, j) for i, p in enumerate(paragraphs) for j, w in enumerate(p) if w.isalpha()]
        n_edits = max(1, int(round(rate * len(slots))))
        chosen = rng.choice(len(slots), size=min(n_edits, len(slots)), replace=False)
        # Edit from the back so earlier positions stay valid after deletions and insertions.
        for k in sorted(chosen.tolist(), key=lambda k: slots[k], reverse=True):
            i, j = slots[k]
            op = rng.integers(3)
            new = self.vocab[rng.integers(len(self.vocab))]
            if op == 0:
                paragraphs[i][j] = new
            elif op == 1 and len(paragraphs[i]) > 1:
                del paragraphs[i][j]
            else:
                paragraphs[i].insert(j, new)
        return "\n\n".join(" ".join(p) for p in paragraphs)

    def junk(self, rng: np.random.Generator, kind: str) -> str:
        """A page one of the rules should drop (``kind`` is one of JUNK_KINDS)."""
        if kind == "menu":      # short lines, no punctuation
            return "\n".join(" ".join(self.words(rng, int(rng.integers(1, 4)))).title()
                             for _ in range(int(rng.integers(20, 60))))
        if kind == "spam":      # one sentence over and over
            line = " ".join(self.words(rng, 12)).capitalize() + "!"
            return "\n".join([line] * int(rng.integers(10, 40)))
        if kind == "lorem":     # template filler inside otherwise good prose
            good = self.document(rng, 200).split("\n\n")
            good.insert(1, "Lorem ipsum dolor sit amet, consectetur adipiscing elit.")
            return "\n\n".join(good)
        if kind == "code":
            body = "\n".join(f"    {w} = {w}_{i} + {i};" for i, w in enumerate(self.words(rng, 30)))
            return "function main() {\n" + body + "\n}"
        if kind == "table":     # numbers, few letters
            return "\n".join(" ".join(str(int(x)) for x in rng.integers(0, 10_000, 8))
                             for _ in range(int(rng.integers(20, 60))))
        if kind == "short":
            return " ".join(self.words(rng, 12)).capitalize() + "."
        raise ValueError(f"junk kind must be one of {', '.join(JUNK_KINDS)}, got {kind!r}")


@dataclasses.dataclass
class CorpusLabels:
    """What the generator planted, by document id."""
    near_duplicates: set[str]   # every member of a near-duplicate cluster except its first
    clusters: int               # clusters with at least one near-duplicate
    exact_copies: set[str]      # exact copies of an earlier document
    junk: set[str]
    documents: int
    bytes: int


def write_corpus(path: str | Path, target_bytes: int, *, seed: int = 0, near_dup_share: float = 0.1,
                 exact_dup_share: float = 0.02, junk_share: float = 0.2,
                 words: tuple[int, int] = (150, 1200), edit_rate: tuple[float, float] = (0.005, 0.02),
                 ) -> CorpusLabels:
    """Write a .jsonl corpus of about ``target_bytes`` and return what was planted in it.

    Each document is, with the given probabilities, a near-duplicate (an edit of a random
    earlier prose document, or of one of its near-duplicates), an exact copy of an earlier
    prose document, junk, or otherwise fresh prose.
    """
    gen = Prose(seed)
    rng = np.random.default_rng(seed + 1)
    labels = CorpusLabels(set(), 0, set(), set(), 0, 0)
    prose: list[tuple[str, int]] = []   # (text, cluster) of earlier prose documents
    clusters_with_dups: set[int] = set()
    with open(path, "w", encoding="utf-8") as f:
        while labels.bytes < target_bytes:
            doc_id = f"doc-{labels.documents:07d}"
            u = rng.random()
            if prose and u < near_dup_share:
                base, cluster = prose[int(rng.integers(len(prose)))]
                text = gen.edit(rng, base, float(rng.uniform(*edit_rate)))
                prose.append((text, cluster))
                labels.near_duplicates.add(doc_id)
                clusters_with_dups.add(cluster)
            elif prose and u < near_dup_share + exact_dup_share:
                text = prose[int(rng.integers(len(prose)))][0]
                labels.exact_copies.add(doc_id)
            elif u < near_dup_share + exact_dup_share + junk_share:
                text = gen.junk(rng, JUNK_KINDS[int(rng.integers(len(JUNK_KINDS)))])
                labels.junk.add(doc_id)
            else:
                text = gen.document(rng, int(rng.integers(*words)))
                prose.append((text, len(prose)))
            line = json.dumps({"id": doc_id, "url": f"https://example.com/{doc_id}", "text": text})
            f.write(line + "\n")
            labels.bytes += len(line) + 1
            labels.documents += 1
    labels.clusters = len(clusters_with_dups)
    return labels
