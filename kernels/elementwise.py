"""The sum of two arrays on the CPU, on every core: a residual connection's add.

    out = a + b        (same shape, same float dtype)

There is no arithmetic to speed up here; what costs is memory. A new (B, T, C) activation
is written where the cache holds nothing of it, and a single thread's stores to such
memory are limited by how many cache lines one core can fetch and write back at once. Two
threads have twice as many lines in flight: measured here (2-core AVX-512 Intel machine,
float32 (1024, 768), a new output each time as in a training step), NumPy's ``a + b``
took 0.69 ms, this kernel 0.38 ms, PyTorch's add (also threaded) 0.29 ms. A BERT-base
forward makes 26 of these.

The reference is NumPy's ``a + b`` (``minitransformer.autograd.ops.Add``), which also
broadcasts; this kernel takes only what a residual connection is, two arrays of one shape,
and the op calls it for arrays of at least one ``CHUNK`` (smaller ones are not worth a
thread hand-off). Each element is one addition, so the result is NumPy's, bit for bit.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._cpu import FASTMATH, readonly, run_parallel

# Elements per unit of work (256 KiB of float32): a unit is large beside a thread hand-off,
# and a (B, T, C) activation of a real model splits into dozens, shared evenly.
CHUNK = 1 << 16


@njit(nogil=True, fastmath=FASTMATH, cache=True)
def _add(first, stop, step, chunk, a, b, out):
    # Slices from index 0 (see gelu.py: an arbitrary loop start keeps wraparound checks).
    lo, hi = first * chunk, min(stop * chunk, a.size)
    xs, ys, outs = a[lo:hi], b[lo:hi], out[lo:hi]
    for i in range(xs.size):
        outs[i] = xs[i] + ys[i]


def add(a, b, chunk: int = CHUNK):
    """a + b for two C-contiguous float32 or float64 NumPy arrays of one shape and dtype."""
    if a.shape != b.shape or a.dtype != b.dtype or a.dtype not in (np.float32, np.float64):
        raise ValueError(f"add: needs two float32 or float64 arrays of one shape and dtype, got "
                         f"{a.shape} {a.dtype} and {b.shape} {b.dtype}; broadcasting sums are "
                         "NumPy's a + b")
    if not (a.flags.c_contiguous and b.flags.c_contiguous):
        raise ValueError(f"add: needs C-contiguous arrays, got strides {a.strides} and {b.strides}; "
                         "a strided view is summed by NumPy's a + b")
    out = np.empty_like(a)
    run_parallel(_add, -(-a.size // chunk), chunk, readonly(a).reshape(-1), readonly(b).reshape(-1),
                 out.reshape(-1), contiguous=True)
    return out
