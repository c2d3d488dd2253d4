"""Deduplication: exact copies by content hash, near copies by MinHash LSH (as in FineWeb).

The web repeats itself: mirrors, syndicated news, templated pages that differ in a date.
Training on many copies of a text wastes compute and makes the model memorise it.

**Exact.** A 128-bit BLAKE2b digest of each (normalised) text goes into a set; a later
document with a digest already in the set is a copy. The first copy in input order stays.

**Near (MinHash).** Two documents are near-duplicates when the Jaccard similarity of their
sets of word 5-grams ("shingles"), |A ∩ B| / |A ∪ B|, is high. Comparing all pairs is
quadratic, so instead:

1. *Shingles.* Text is simplified (lowercase, each number -> "0", punctuation and symbols
   removed, whitespace collapsed) so trivial edits do not count; its word 5-grams are hashed
   to integers x in [0, p), p = 2^31 - 1 (a document of fewer than 5 words is one shingle).
2. *MinHash.* For k = 112 random hash functions h_j(x) = (a_j x + b_j) mod p with a_j in
   [1, p) and b_j in [0, p), the signature is sig_j = min over shingles of h_j(x). Each h_j
   orders the shingles at random, and two sets share their minimum with probability (close
   to) their Jaccard similarity J, so the share of equal signature entries estimates J with
   standard error sqrt(J(1-J)/k). The prime is 31 bits so that a_j x + b_j < 2^62 fits in a
   uint64: with a larger prime and a_j, x below 2^32 (to avoid overflow), a_j x would wrap
   around p only a few times, h_j would nearly preserve the order of x, and all k minima
   would fall on the same few shingles. All shingles of a document go through all k
   functions in one compiled loop (``hashing.min_hashes``; its NumPy twin is one (S, k)
   array expression).
3. *LSH bands.* The 112 entries are cut into b = 14 bands of r = 8 rows; each band is hashed
   to one 64-bit key. Two documents become candidates when any band key is equal, which
   happens with probability 1 - (1 - J^r)^b: an S-curve rising steeply around the usual
   threshold estimate (1/b)^(1/r) = 0.72 (it is 0.5 at J = 0.69 and 0.65 at 0.72), about
   0.001 at J = 0.3 and 0.9996 at J = 0.9.
4. *Clusters.* Candidate pairs are edges; union-find joins them into clusters (so a chain
   A~B~C is one cluster even if A and C are far apart), and only the first document of each
   cluster in input order survives.

Equal band keys are found by sorting each band's keys, not with one dictionary of buckets per
band: the same pairs, at 8 bytes per document and band instead of a dictionary entry's ~100.
"""
from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import regex

from .hashing import MERSENNE_31, combine, min_hashes, ngram_hashes, word_hashes
from .knobs import knob

_P = np.uint64(MERSENNE_31)
_NUMBER = regex.compile(r"\d+(?:[.,]\d+)*")
_PUNCTUATION = regex.compile(r"[\p{P}\p{S}]+")


@dataclasses.dataclass(frozen=True)
class ExactDedupConfig:
    enabled: bool = knob(True, "drop exact copies (same normalised text) after the first")


class ExactDeduplicator:
    """Remembers a digest of every text it is shown; says whether it saw the text before."""

    def __init__(self):
        self._seen: set[bytes] = set()

    def seen_before(self, text: str) -> bool:
        digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
        if digest in self._seen:
            return True
        self._seen.add(digest)
        return False


@dataclasses.dataclass(frozen=True)
class MinHashConfig:
    enabled: bool = knob(True, "drop near-duplicates by MinHash LSH, keeping the first of each cluster")
    ngram: int = knob(5, "words per shingle")
    bands: int = knob(14, "LSH bands")
    rows: int = knob(8, "signature rows per band (bands * rows hash functions in all)")
    seed: int = knob(1, "seed of the hash functions")

    def __post_init__(self):
        for name in ("ngram", "bands", "rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"minhash.{name} must be at least 1, got {getattr(self, name)}")

    @property
    def threshold(self) -> float:
        """The Jaccard similarity at which a pair becomes a candidate about half the time."""
        return (1 / self.bands) ** (1 / self.rows)


def minhash_words(text: str) -> list[str]:
    """The words MinHash shingles: lowercase, numbers as "0", no punctuation or symbols."""
    text = _NUMBER.sub("0", text.lower())
    return _PUNCTUATION.sub("", text).split()


class MinHasher:
    """Signatures and band keys of documents under one fixed family of hash functions."""

    def __init__(self, cfg: MinHashConfig = MinHashConfig()):
        self.cfg = cfg
        k = cfg.bands * cfg.rows
        rng = np.random.default_rng(cfg.seed)
        self.a = rng.integers(1, _P, size=k, dtype=np.uint64)  # (k,)
        self.b = rng.integers(0, _P, size=k, dtype=np.uint64)  # (k,)

    def shingles(self, text: str) -> np.ndarray:
        """Hashes in [0, p) of the word n-grams of the simplified text, as uint64: (S,)."""
        h = word_hashes(minhash_words(text))
        if h.size == 0:
            return h
        return ngram_hashes(h, min(self.cfg.ngram, h.size)) % _P

    def signature(self, text: str) -> np.ndarray | None:
        """The MinHash signature (bands * rows,) uint64, or None for a text without words."""
        x = self.shingles(text)                                       # (S,)
        if x.size == 0:
            return None
        return min_hashes(x, self.a, self.b)                          # (S,) -> (k,)

    def band_keys(self, sig: np.ndarray) -> np.ndarray:
        """One 64-bit key per band: (bands * rows,) -> (bands,)."""
        rows = sig.reshape(self.cfg.bands, self.cfg.rows)             # (B, R)
        return combine(list(rows.T))                                  # R x (B,) -> (B,)


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """The MinHash estimate of the Jaccard similarity: the share of equal entries."""
    return float(np.mean(sig_a == sig_b))


class UnionFind:
    """Disjoint sets over 0..n-1 whose root is always the smallest member."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]  # path halving keeps the trees shallow
            i = parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            # The larger root hangs under the smaller, so a cluster's root is its first document.
            self.parent[max(ri, rj)] = min(ri, rj)


def cluster_representatives(keys: np.ndarray) -> np.ndarray:
    """For band keys (N, bands), the first document of each document's cluster: (N,) int64.

    Document i survives deduplication exactly when ``result[i] == i``.
    """
    n, bands = keys.shape
    uf = UnionFind(n)
    for band in range(bands):
        order = np.argsort(keys[:, band], kind="stable")           # (N,)
        ordered = keys[order, band]                                  # (N,)
        for k in np.nonzero(ordered[1:] == ordered[:-1])[0]:         # neighbours with equal keys
            uf.union(int(order[k]), int(order[k + 1]))
    return np.fromiter((uf.find(i) for i in range(n)), np.int64, n)
