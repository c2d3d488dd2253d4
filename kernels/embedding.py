"""The gradient of an embedding lookup on the CPU: a scatter-add without sorting.

The forward looks up row ids[i] of a (V, C) table for every position i; its backward adds
each position's output gradient into the row it came from:

    dweight[v] = sum over positions i with ids[i] == v of g[i]

The reference is ``numpy.add.at(dweight, ids, g)``, which handles repeated ids correctly
but goes through NumPy's generic indexed-ufunc machinery, one small row at a time.

Here the table's rows are split into fixed blocks and the blocks among threads. Each
thread zeroes its own rows and then scans all the ids, adding g[i] into those rows of its
own that they name. No two threads write the same row, so no locks and no per-thread
copies of the table are needed; reading all the ids in every thread costs a few bytes per
position. Every row receives its additions in position order, as in ``numpy.add.at``, so
the result is the same bit for bit whatever the number of threads.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._cpu import compute_dtype, readonly, run_parallel

# About this many table elements per block of rows. Zeroing a row costs far less than a
# row of the other kernels, and every thread rereads all the ids, so the blocks are larger:
# a table under two blocks (256K floats) is filled on the calling thread alone.
BLOCK_ELEMENTS = 1 << 18


@njit(nogil=True, cache=True)
def _embedding_backward(first, stop, step, block, ids, g, dw):
    # A thread's share is the contiguous blocks first .. stop - 1 (step is 1), i.e. the
    # table rows [first * block, stop * block).
    lo = first * block
    hi = min(stop * block, dw.shape[0])
    dw[lo:hi] = 0.0
    width = g.shape[1]
    for i in range(ids.size):
        row = ids[i]
        if lo <= row < hi:
            dst = dw[row]
            src = g[i]
            for j in range(width):
                dst[j] += src[j]


def embedding_backward(ids, g, num_rows: int):
    """dweight (num_rows, C) for integer ``ids`` (any shape) and gradient ``g`` (*ids.shape, C)."""
    ids = np.asarray(ids)
    g = np.asarray(g)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"embedding_backward: ids must be integers, got dtype {ids.dtype}")
    if g.shape[:-1] != ids.shape or g.ndim == 0:
        raise ValueError(f"embedding_backward: gradient shape {g.shape} must be the ids shape "
                         f"{ids.shape} plus one axis of channels")
    flat_ids = readonly(ids, np.int64).reshape(-1)
    if flat_ids.size and (flat_ids.min() < 0 or flat_ids.max() >= num_rows):
        raise ValueError(f"embedding_backward: ids must be in [0, {num_rows}), got min "
                         f"{int(flat_ids.min())}, max {int(flat_ids.max())}; pass the table's "
                         "number of rows as num_rows")
    dtype = compute_dtype(g.dtype)
    width = g.shape[-1]
    g2 = readonly(g, dtype).reshape(-1, width)                    # (..., C) -> (N, C)
    dw = np.empty((num_rows, width), dtype)
    if num_rows and width:
        block = max(1, min(num_rows, BLOCK_ELEMENTS // width))
        run_parallel(_embedding_backward, -(-num_rows // block), block, flat_ids, g2, dw,
                     contiguous=True)
    else:
        dw[...] = 0.0
    return dw.astype(g.dtype, copy=False)
