"""A counter-based random number generator for attention dropout.

Attention dropout must drop the same entries in the backward pass as in the forward pass,
and a fused kernel never stores the (T x T) dropout mask. So the mask is a pure function of
(seed, position): each entry's keep/drop decision is a hash of its flat index
``c = (bh * Tq + i) * Tk + j`` mixed with the seed. Backward recomputes it for free, and the
plain reference and every kernel draw exactly the same mask.

The hash is SplitMix64 (Steele, Lea and Flood 2014), whose output passes BigCrush.
Arithmetic is on unsigned 64-bit integers and wraps, in NumPy, CuPy and Numba alike.
"""
from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_TO_UNIT = 1.0 / 9007199254740992.0  # 2**-53


def splitmix64(x):
    """SplitMix64 finaliser of uint64 ``x`` (a scalar or an array of any array module)."""
    z = x + _GOLDEN
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


def uniform(seed, counter):
    """A float64 in [0, 1) for each uint64 ``counter``, determined by ``seed`` alone."""
    h = splitmix64(counter ^ splitmix64(np.uint64(seed)))
    return (h >> _S11).astype(np.float64) * _TO_UNIT if hasattr(h, "astype") else float(h >> _S11) * _TO_UNIT


def dropout_keep_mask(xp, seed: int, bh: int, tq: int, tk: int, p: float):
    """Boolean keep-mask of shape (bh, tq, tk): entry (b, i, j) is kept when its uniform >= p."""
    counter = xp.arange(bh * tq * tk, dtype=xp.uint64).reshape(bh, tq, tk)
    with np.errstate(over="ignore"):
        return uniform(seed, counter) >= p


# ---------------------------------------------------------------------------------------
# The same decision one entry at a time, for kernels. These are plain Python on NumPy
# scalars; the CPU kernels compile them with ``numba.njit`` and the CUDA kernels with
# ``cuda.jit(device=True)``, so every implementation runs this one source. The comparison
# is done on integers: ``u = (h >> 11) * 2**-53 >= p`` holds exactly when
# ``h >> 11 >= ceil(p * 2**53)``, because both sides are exact in float64.
# ---------------------------------------------------------------------------------------

def seed_hash(seed: int):
    """The per-seed word that every counter is mixed with: ``splitmix64(seed)`` as uint64."""
    with np.errstate(over="ignore"):
        return splitmix64(np.uint64(seed))


def keep_threshold(p: float):
    """The integer threshold of :func:`keep_scalar`: ``ceil(p * 2**53)`` as uint64."""
    return np.uint64(np.ceil(np.float64(p) * 9007199254740992.0))


def keep_scalar(hashed_seed, counter, threshold):
    """True when entry ``counter`` (uint64) is kept; the same decision as ``dropout_keep_mask``."""
    z = (counter ^ hashed_seed) + _GOLDEN
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    z = z ^ (z >> _S31)
    return (z >> _S11) >= threshold
