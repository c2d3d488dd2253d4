"""Learning byte-pair-encoding merges (Sennrich et al. 2016, on bytes as in GPT-2).

BPE training starts from single bytes and repeatedly merges the most frequent adjacent pair
of tokens into a new token, until the vocabulary is full. Two ideas make it fast:

1. **Count unique chunks, not text.** The text is first cut into chunks by a regex (words
   with their leading space, runs of digits, punctuation, whitespace) and no merge ever
   crosses a chunk boundary. So training only needs each distinct chunk and how often it
   occurs: a corpus of a million words has perhaps fifty thousand distinct ones, and every
   pair count is a sum over those, weighted by frequency.

2. **Update pair counts incrementally.** After merging pair (a, b), only the chunks that
   contain (a, b) change. We keep, for every pair, the set of chunks it occurs in, rewrite
   just those chunks, and adjust the counts of the pairs that disappeared or appeared. The
   most frequent pair comes from a max-heap whose stale entries (a count that has since
   dropped) are corrected when they reach the top ("lazy deletion").

Token ids here are local to training: 0..255 are the bytes, 256 + i is the i-th merge.
``BPETokenizer.train`` maps them into its final vocabulary layout.
"""
from __future__ import annotations

import heapq
from collections import defaultdict
from typing import Iterable, Mapping


def learn_merges(
    chunk_counts: Mapping[bytes, int],
    num_merges: int,
    min_frequency: int = 2,
    forbidden: Iterable[bytes] = (),
) -> list[tuple[int, int]]:
    """The BPE merges, in the order learned, as pairs of local token ids.

    chunk_counts: each distinct pre-split chunk (its UTF-8 bytes) -> how often it occurs.
    num_merges: stop after this many merges.
    min_frequency: stop when the most frequent pair occurs fewer times than this.
    forbidden: byte strings that must never become a token (special tokens' text, so an
        ordinary token can never collide with one).

    Ties between equally frequent pairs go to the smallest (left id, right id), so training
    is deterministic.
    """
    forbidden = set(forbidden)
    words = [list(chunk) for chunk in chunk_counts]      # each chunk as a list of token ids
    freqs = list(chunk_counts.values())
    token_bytes = [bytes([b]) for b in range(256)]

    pair_count: dict[tuple[int, int], int] = defaultdict(int)
    pair_words: dict[tuple[int, int], set[int]] = defaultdict(set)   # pair -> chunks holding it
    for w, (word, f) in enumerate(zip(words, freqs)):
        for pair in zip(word, word[1:]):
            pair_count[pair] += f
            pair_words[pair].add(w)

    # Max-heap through negated counts; ties pop the smallest pair first.
    heap = [(-c, pair) for pair, c in pair_count.items()]
    heapq.heapify(heap)
    banned: set[tuple[int, int]] = set()
    merges: list[tuple[int, int]] = []

    while len(merges) < num_merges and heap:
        neg, pair = heapq.heappop(heap)
        count = pair_count.get(pair, 0)
        if count <= 0 or pair in banned:
            continue
        if count != -neg:           # stale: the count dropped since this entry was pushed
            heapq.heappush(heap, (-count, pair))
            continue
        if count < min_frequency:
            break
        a, b = pair
        merged = token_bytes[a] + token_bytes[b]
        if merged in forbidden:
            banned.add(pair)
            continue

        new = len(token_bytes)
        token_bytes.append(merged)
        merges.append(pair)

        grown = set()               # pairs whose count went up: they need a fresh heap entry
        for w in pair_words.pop(pair):
            word = words[w]
            rewritten = _merge_pair(word, a, b, new)
            if rewritten is None:   # a stale membership: an earlier merge removed the pair
                continue
            f = freqs[w]
            # Subtracting every old pair and adding every new one is simpler than patching
            # neighbours by hand, and chunks are a few tokens long.
            for p in zip(word, word[1:]):
                pair_count[p] -= f
            for p in zip(rewritten, rewritten[1:]):
                pair_count[p] += f
                if new in p:
                    pair_words[p].add(w)
                    grown.add(p)
            words[w] = rewritten
        del pair_count[pair]
        for p in grown:
            heapq.heappush(heap, (-pair_count[p], p))
    return merges


def _merge_pair(word: list[int], a: int, b: int, new: int) -> list[int] | None:
    """``word`` with every (a, b), scanned left to right, replaced by ``new``; None if none."""
    out = []
    i, n = 0, len(word)
    found = False
    while i < n:
        if i + 1 < n and word[i] == a and word[i + 1] == b:
            out.append(new)
            i += 2
            found = True
        else:
            out.append(word[i])
            i += 1
    return out if found else None
