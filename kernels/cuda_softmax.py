"""Row softmax on a CUDA GPU: Numba CUDA kernels that take CuPy arrays directly.

The math is that of ``softmax.py``: y = exp(x - max) / sum, masked entries 0, a row with
nothing allowed all zeros; dx = y * (dy - sum(dy * y)).

One thread block per row. Each thread strides over the row (so neighbouring threads read
neighbouring floats, and every load is coalesced), keeps a private max and sum, and the
block combines them with a tree reduction in shared memory: three sweeps over the row
(max, sum of exponentials, write). The reductions use shared memory only, not warp
shuffles, so the same kernels run under Numba's CUDA simulator, where the tests check them.

The launch helpers and the block reduction are in ``_cuda.py``.
"""
from __future__ import annotations

import functools
import math

from minitransformer import backend

from . import _cuda
from ._cuda import THREADS, bind_cuda, block_reduce, contiguous, float_type, grid_for, launch_stream, row_mask

cuda = None  # numba.cuda once a kernel is built (see _cuda.bind_cuda)


@functools.lru_cache(maxsize=None)
def _forward_kernel(ft, threads):
    reduce = block_reduce()
    bind_cuda(globals())

    @cuda.jit
    def kernel(x, mask_rows, mask_index, has_mask, y):
        # x, y: (N, V); mask_rows: (R, 1 or V) bool; mask_index: (N,) row of mask_rows
        red = cuda.shared.array(threads, dtype=ft)
        tid = cuda.threadIdx.x
        width = x.shape[1]
        neg_inf = ft(-math.inf)
        for row in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            mrow = mask_index[row] if has_mask else 0
            wide = mask_rows.shape[1] > 1
            m = neg_inf
            for j in range(tid, width, threads):
                if not has_mask or mask_rows[mrow, j if wide else 0]:
                    m = max(m, x[row, j])
            m = reduce(red, tid, m, threads, True)
            total = ft(0.0)
            if m > neg_inf:
                for j in range(tid, width, threads):
                    if not has_mask or mask_rows[mrow, j if wide else 0]:
                        total += math.exp(x[row, j] - m)
            total = reduce(red, tid, total, threads, False)
            for j in range(tid, width, threads):
                allowed = not has_mask or mask_rows[mrow, j if wide else 0]
                # A row with nothing allowed has m = -inf and comes out zeros.
                y[row, j] = math.exp(x[row, j] - m) / total if allowed and m > neg_inf else 0.0

    return kernel


@functools.lru_cache(maxsize=None)
def _backward_kernel(ft, threads):
    reduce = block_reduce()
    bind_cuda(globals())

    @cuda.jit
    def kernel(y, dy, dx):
        red = cuda.shared.array(threads, dtype=ft)
        tid = cuda.threadIdx.x
        width = y.shape[1]
        for row in range(cuda.blockIdx.x, y.shape[0], cuda.gridDim.x):
            dot = ft(0.0)
            for j in range(tid, width, threads):
                dot += dy[row, j] * y[row, j]
            dot = reduce(red, tid, dot, threads, False)
            for j in range(tid, width, threads):
                dx[row, j] = y[row, j] * (dy[row, j] - dot)

    return kernel


def softmax_forward(x, mask=None, *, threads=THREADS):
    """Softmax over the last axis of a CuPy array (or NumPy under the simulator)."""
    xp = backend.xp(x)
    shape = x.shape
    ft = float_type(x.dtype)
    if x.size == 0:
        return xp.zeros(shape, dtype=x.dtype)
    x2 = contiguous(x, ft, xp).reshape(-1, shape[-1])      # (..., V) -> (N, V)
    if mask is None:
        rows, index, has_mask = xp.ones((1, 1), dtype=bool), xp.zeros(1, dtype=xp.int64), False
    else:
        rows, index = row_mask(xp, mask, shape)
        has_mask = True
    y = _cuda.empty(xp, x2.shape, x2.dtype)
    kernel = _forward_kernel(ft, threads)
    kernel[grid_for(x2.shape[0]), threads, launch_stream(x)](x2, rows, index, has_mask, y)
    return y.reshape(shape).astype(x.dtype, copy=False)


def softmax_backward(y, dy, *, threads=THREADS):
    """dx = y * (dy - sum(dy * y, axis=-1, keepdims=True)) on the GPU."""
    xp = backend.xp(y)
    if y.shape != dy.shape:
        raise ValueError(f"softmax_backward: dy shape {dy.shape} must equal y shape {y.shape}")
    ft = float_type(y.dtype)
    if y.size == 0:
        return xp.zeros(y.shape, dtype=y.dtype)
    y2 = contiguous(y, ft, xp).reshape(-1, y.shape[-1])
    dy2 = contiguous(dy, ft, xp).reshape(-1, y.shape[-1])
    dx = _cuda.empty(xp, y2.shape, y2.dtype)
    kernel = _backward_kernel(ft, threads)
    kernel[grid_for(y2.shape[0]), threads, launch_stream(y)](y2, dy2, dx)
    return dx.reshape(y.shape).astype(y.dtype, copy=False)
