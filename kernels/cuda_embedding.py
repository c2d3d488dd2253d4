"""The gradient of an embedding lookup on a CUDA GPU: a deterministic sum over sorted segments.

The forward looks up row ids[i] of a (V, C) table for every position i; its backward adds
each position's output gradient into the row it came from:

    dweight[v] = sum over positions i with ids[i] == v of g[i]

The usual GPU kernel is a scatter-add with atomics, one thread per element of g: fast, but
the additions into a row land in whatever order the threads reach it, so a repeated id
gives a result that varies in its last bits from run to run. This kernel is deterministic
instead, and adds in position order, as ``numpy.add.at`` and the CPU kernel do, so the
three agree bit for bit:

1. Sort the positions by id (on the device). The key id * N + position is unique, so any
   sort gives the one order, by id and then by position.
2. ``searchsorted`` finds where each table row's run of positions starts: the positions of
   row v are order[starts[v]:starts[v + 1]].
3. One thread block per table row, threads over the C columns: each thread adds its
   columns of g over the row's positions and writes them once. A row no id names is
   written as zeros, so the table is written whole, once, with no zeroing pass first.

The sort costs a few microseconds for the thousands of ids of a batch. An id outside
[0, V) lies before starts[0] or after starts[V] and so adds into no row; the ids are checked
when they are on the host (``F.embedding`` checks them at the lookup), not here, since a
check of a device array would cost a transfer to the host.
"""
from __future__ import annotations

import functools

from minitransformer import backend

from . import _cuda
from ._cuda import THREADS, bind_cuda, contiguous, float_type, grid_for, launch_stream

cuda = None  # numba.cuda once a kernel is built (see _cuda.bind_cuda)


@functools.lru_cache(maxsize=None)
def _kernel(ft):
    bind_cuda(globals())

    @cuda.jit
    def kernel(order, starts, g, dw):
        # order: (N,) positions sorted by id; starts: (V + 1,); g: (N, C); dw: (V, C)
        tid = cuda.threadIdx.x
        width = g.shape[1]
        for row in range(cuda.blockIdx.x, dw.shape[0], cuda.gridDim.x):
            lo = starts[row]
            hi = starts[row + 1]
            for j in range(tid, width, cuda.blockDim.x):
                acc = ft(0.0)
                for k in range(lo, hi):
                    acc += g[order[k], j]
                dw[row, j] = acc

    return kernel


def embedding_backward(ids, g, num_rows: int, *, threads=THREADS):
    """dweight (num_rows, C) for integer ``ids`` (any shape) and gradient ``g`` (*ids.shape, C)."""
    xp = backend.xp(g)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"embedding_backward: ids must be integers, got dtype {ids.dtype}")
    if g.shape[:-1] != ids.shape or g.ndim == 0:
        raise ValueError(f"embedding_backward: gradient shape {g.shape} must be the ids shape "
                         f"{ids.shape} plus one axis of channels")
    if backend.device_of(ids) == "cpu" and ids.size and (ids.min() < 0 or ids.max() >= num_rows):
        raise ValueError(f"embedding_backward: ids must be in [0, {num_rows}), got min "
                         f"{int(ids.min())}, max {int(ids.max())}; pass the table's "
                         "number of rows as num_rows")
    ft = float_type(g.dtype)
    width = g.shape[-1]
    flat = contiguous(xp.asarray(ids), xp.int64, xp).reshape(-1)
    n = flat.size
    g2 = contiguous(g, ft, xp).reshape(-1, width)                 # (..., C) -> (N, C)
    order = contiguous(xp.argsort(flat * n + xp.arange(n, dtype=xp.int64)), xp.int64, xp)
    starts = contiguous(xp.searchsorted(flat[order], xp.arange(num_rows + 1, dtype=xp.int64)),
                        xp.int64, xp)                             # (V + 1,)
    dw = _cuda.empty(xp, (num_rows, width), ft)
    if num_rows and width:
        _kernel(ft)[grid_for(num_rows), threads, launch_stream(g)](order, starts, g2, dw)
    return dw.astype(g.dtype, copy=False)
