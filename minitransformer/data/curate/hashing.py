"""Word and n-gram hashes as uint64 arrays: the shared fast path of repetition and MinHash.

Both the Gopher repetition filter (which n-grams repeat inside a document?) and MinHash
(which documents share n-grams?) look at every word n-gram of a document. Building each
n-gram as a Python tuple and hashing it costs a microsecond per n-gram; instead

1. ``word_hashes`` hashes every word once, in one compiled pass over the document's UTF-8
   bytes (64-bit FNV-1a, a Numba kernel), giving an array ``h`` of shape (n_words,);
2. ``ngram_hashes`` combines n consecutive word hashes with n whole-array operations
   (``combine``, also used for MinHash's band keys):
   ``g_i = (...((h_i * K + h_{i+1}) * K + h_{i+2}) ...) * K + h_{i+n-1}``, modulo 2^64, then
   a bit mixer (splitmix64's finaliser), so that each output bit depends on every input bit.

``min_hashes`` is the inner loop of MinHash (see ``dedup``): the minimum over a document's
shingles of each of k hash functions (a x + b) mod p, compiled, because the same computation as
one (S, k) NumPy expression (``min_hashes_reference``, kept as its readable twin and checked
against it in the tests) spends most of its time allocating temporaries and dividing.

The hashes are deterministic across processes and machines (Python's ``hash`` of a string
is salted per process, so it is never used here). Two different n-grams collide with
probability about 2^-64 per pair, far below anything a threshold can notice.
"""
from __future__ import annotations

import numba
import numpy as np

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_SPACE = 0x20
_K = np.uint64(0x9E3779B97F4A7C15)  # odd, so multiplying by it is a bijection mod 2^64
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@numba.njit(cache=True, nogil=True)
def _fnv1a_words(buf, out):  # pragma: no cover - compiled; tested through word_hashes
    # buf: uint8 UTF-8 bytes of words joined by single spaces; out: uint64 (n_words,)
    n = 0
    h = _FNV_OFFSET
    for i in range(buf.shape[0]):
        b = buf[i]
        if b == _SPACE:
            out[n] = h
            n += 1
            h = _FNV_OFFSET
        else:
            h = (h ^ np.uint64(b)) * _FNV_PRIME
    out[n] = h
    return n + 1


def word_hashes(words: list[str]) -> np.ndarray:
    """64-bit hashes of ``words`` (strings without whitespace, as from ``str.split()``)."""
    if not words:
        return np.empty(0, np.uint64)
    # Joining with single spaces is safe: a word from str.split() holds no 0x20 byte, and
    # no multi-byte UTF-8 sequence contains one either.
    buf = np.frombuffer(" ".join(words).encode("utf-8"), np.uint8)
    out = np.empty(len(words), np.uint64)
    _fnv1a_words(buf, out)
    return out


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array: a bijection that spreads every bit."""
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))


def combine(columns: list[np.ndarray]) -> np.ndarray:
    """One order-sensitive hash per position of equal-length uint64 arrays: n x (m,) -> (m,)."""
    g = columns[0].copy()
    for column in columns[1:]:
        g *= _K
        g += column
    return mix64(g)


def ngram_hashes(h: np.ndarray, n: int) -> np.ndarray:
    """Hashes of the n-grams of a word-hash sequence: (n_words,) -> (n_words - n + 1,)."""
    m = h.shape[0] - n + 1
    if m <= 0:
        return np.empty(0, np.uint64)
    return combine([h[j:j + m] for j in range(n)])


MERSENNE_31 = (1 << 31) - 1   # the prime of MinHash's hash functions


def min_hashes_reference(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """min over i of (a_j x_i + b_j) mod p, p = 2^31 - 1, for x (S,), a and b (k,) below p: (k,)."""
    block = x[:, None] * a + b                            # (S, 1) * (k,) -> (S, k); < 2^62
    return (block % np.uint64(MERSENNE_31)).min(axis=0)   # (S, k) -> (k,)


@numba.njit(cache=True, nogil=True)
def _min_hashes(x, a, b, out):  # pragma: no cover - compiled; tested against the reference
    p = np.uint64(MERSENNE_31)
    s31 = np.uint64(31)
    for j in range(a.shape[0]):
        aj, bj = a[j], b[j]
        m = p
        for i in range(x.shape[0]):
            h = aj * x[i] + bj
            # h mod (2^31 - 1) without a division: 2^31 = 1 (mod p), so the bits above 31
            # can be folded onto the low 31; twice brings h below 2p, one subtraction below p.
            h = (h & p) + (h >> s31)
            h = (h & p) + (h >> s31)
            if h >= p:
                h -= p
            if h < m:
                m = h
        out[j] = m


def min_hashes(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The same as ``min_hashes_reference``, compiled: (S,), (k,), (k,) -> (k,) uint64."""
    out = np.empty(a.shape, np.uint64)
    _min_hashes(x, a, b, out)
    return out
