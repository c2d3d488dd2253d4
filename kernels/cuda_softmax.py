"""Row softmax on a CUDA GPU: Numba CUDA kernels that take CuPy arrays directly.

The math is that of ``softmax.py``: y = exp(x - max) / sum, masked entries 0, a row with
nothing allowed all zeros; dx = y * (dy - sum(dy * y)).

One thread block per row; thread ``tid`` owns the elements tid, tid + threads, ... of the
row, so neighbouring threads read neighbouring floats and every load is coalesced. A
softmax is limited by memory traffic, not arithmetic, so the kernels are built to read each
input once:

- **Registers** (a row of at most ``MAX_PER_THREAD`` elements per thread): each thread
  loads its elements once into a local array of compile-time length, which the compiler
  keeps in registers, and takes the max, the exponentials and the scaled output from
  there. Forward: one read of x, one write of y. Backward: one read of y and dy, one write.
- **Looped** (wider rows): the forward keeps the "online" statistics of Milakov and
  Gimelshein (2018), a running max m and a sum s rescaled whenever the max grows,

      v > m:  s <- s exp(m - v) + 1,  m <- v;      else:  s <- s + exp(v - m),

  so one pass gives max and sum; the threads' (m, s) pairs are combined as
  M = max m, S = sum s exp(m - M), and a second pass writes exp(x - M) / S. Two reads
  and one write, against three reads for max, sum and write in turn. The backward reads
  y and dy for the dot product, then again for dx.

The block's max and sum come from ``_cuda.reduction``: warp shuffles on a GPU, a tree in
shared memory under Numba's CUDA simulator (which has no shuffles, and where the tests run
the kernels). Arithmetic stays in the data's float type: every constant is formed as ``ft``.

The launch helpers and both block reductions are in ``_cuda.py``.
"""
from __future__ import annotations

import functools
import math

from minitransformer import backend

from . import _cuda
from ._cuda import NEG_INF, bind_cuda, contiguous, float_type, grid_for, launch_stream, row_layout, row_mask

cuda = None  # numba.cuda once a kernel is built (see _cuda.bind_cuda)


@functools.lru_cache(maxsize=None)
def _forward_kernel(ft, threads, per_thread, shuffle):
    """The forward kernel for float type ``ft``; ``per_thread`` 0 builds the looped path."""
    reduce = _cuda.reduction(shuffle)
    red_len = _cuda.scratch_length(threads, shuffle)
    slots = max(per_thread, 1)
    bind_cuda(globals())

    @cuda.jit
    def kernel(x, mask_rows, mask_index, has_mask, y):
        # x, y: (N, V); mask_rows: (R, 1 or V) bool; mask_index: (N,) row of mask_rows
        red = cuda.shared.array(red_len, dtype=ft)
        vals = cuda.local.array(slots, dtype=ft)
        tid = cuda.threadIdx.x
        width = x.shape[1]
        wide = mask_rows.shape[1] > 1
        neg_inf = ft(NEG_INF)
        zero = ft(0.0)
        one = ft(1.0)
        for row in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            mrow = mask_index[row] if has_mask else 0
            if per_thread:
                # The row's elements of this thread, masked and missing ones as -inf.
                m = neg_inf
                for k in range(per_thread):
                    j = tid + k * threads
                    v = neg_inf
                    if j < width and (not has_mask or mask_rows[mrow, j if wide else 0]):
                        v = x[row, j]
                    vals[k] = v
                    m = max(m, v)
                m = reduce(red, tid, m, threads, True)
                total = zero
                for k in range(per_thread):
                    # A row with nothing allowed has m = -inf and comes out zeros.
                    e = math.exp(vals[k] - m) if m > neg_inf else zero
                    vals[k] = e
                    total += e
                total = reduce(red, tid, total, threads, False)
                inv = one / total if m > neg_inf else zero
                for k in range(per_thread):
                    j = tid + k * threads
                    if j < width:
                        y[row, j] = vals[k] * inv
            else:
                m = neg_inf
                s = zero
                for j in range(tid, width, threads):
                    if not has_mask or mask_rows[mrow, j if wide else 0]:
                        v = x[row, j]
                        if v > m:
                            s = s * math.exp(m - v) + one      # exp(-inf) = 0 at the start
                            m = v
                        elif m > neg_inf:
                            s += math.exp(v - m)
                top = reduce(red, tid, m, threads, True)
                s = s * math.exp(m - top) if m > neg_inf else zero
                total = reduce(red, tid, s, threads, False)
                inv = one / total if top > neg_inf else zero
                for j in range(tid, width, threads):
                    allowed = not has_mask or mask_rows[mrow, j if wide else 0]
                    y[row, j] = math.exp(x[row, j] - top) * inv if allowed and top > neg_inf else zero

    return kernel


@functools.lru_cache(maxsize=None)
def _backward_kernel(ft, threads, per_thread, shuffle):
    """The backward kernel for float type ``ft``; ``per_thread`` 0 builds the looped path."""
    reduce = _cuda.reduction(shuffle)
    red_len = _cuda.scratch_length(threads, shuffle)
    slots = max(per_thread, 1)
    bind_cuda(globals())

    @cuda.jit
    def kernel(y, dy, dx):
        # y, dy, dx: (N, V)
        red = cuda.shared.array(red_len, dtype=ft)
        ys = cuda.local.array(slots, dtype=ft)
        gs = cuda.local.array(slots, dtype=ft)
        tid = cuda.threadIdx.x
        width = y.shape[1]
        zero = ft(0.0)
        for row in range(cuda.blockIdx.x, y.shape[0], cuda.gridDim.x):
            dot = zero
            if per_thread:
                for k in range(per_thread):
                    j = tid + k * threads
                    yv = y[row, j] if j < width else zero
                    gv = dy[row, j] if j < width else zero
                    ys[k] = yv
                    gs[k] = gv
                    dot += yv * gv
                dot = reduce(red, tid, dot, threads, False)
                for k in range(per_thread):
                    j = tid + k * threads
                    if j < width:
                        dx[row, j] = ys[k] * (gs[k] - dot)
            else:
                for j in range(tid, width, threads):
                    dot += dy[row, j] * y[row, j]
                dot = reduce(red, tid, dot, threads, False)
                for j in range(tid, width, threads):
                    dx[row, j] = y[row, j] * (dy[row, j] - dot)

    return kernel


def softmax_forward(x, mask=None, *, threads=None):
    """Softmax over the last axis of a CuPy array (or NumPy under the simulator).

    ``threads``: the block size, a power of two (a multiple of 32 on a GPU); unset, the
    smallest from 128 up that holds a row in registers (see ``_cuda.row_layout``).
    """
    xp = backend.xp(x)
    shape = x.shape
    ft = float_type(x.dtype)
    if x.size == 0:
        return xp.zeros(shape, dtype=x.dtype)
    shuffle = not _cuda.simulating()
    threads, per_thread = row_layout(shape[-1], threads, shuffle, "softmax_forward")
    x2 = contiguous(x, ft, xp).reshape(-1, shape[-1])      # (..., V) -> (N, V)
    if mask is None:
        rows, index, has_mask = xp.ones((1, 1), dtype=bool), xp.zeros(1, dtype=xp.int64), False
    else:
        rows, index = row_mask(xp, mask, shape)
        has_mask = True
    y = _cuda.empty(xp, x2.shape, x2.dtype)
    kernel = _forward_kernel(ft, threads, per_thread, shuffle)
    kernel[grid_for(x2.shape[0]), threads, launch_stream(x)](x2, rows, index, has_mask, y)
    return y.reshape(shape).astype(x.dtype, copy=False)


def softmax_backward(y, dy, *, threads=None):
    """dx = y * (dy - sum(dy * y, axis=-1, keepdims=True)) on the GPU."""
    xp = backend.xp(y)
    if y.shape != dy.shape:
        raise ValueError(f"softmax_backward: dy shape {dy.shape} must equal y shape {y.shape}")
    ft = float_type(y.dtype)
    if y.size == 0:
        return xp.zeros(y.shape, dtype=y.dtype)
    shuffle = not _cuda.simulating()
    threads, per_thread = row_layout(y.shape[-1], threads, shuffle, "softmax_backward")
    y2 = contiguous(y, ft, xp).reshape(-1, y.shape[-1])
    dy2 = contiguous(dy, ft, xp).reshape(-1, y.shape[-1])
    dx = _cuda.empty(xp, y2.shape, y2.dtype)
    kernel = _backward_kernel(ft, threads, per_thread, shuffle)
    kernel[grid_for(y2.shape[0]), threads, launch_stream(y)](y2, dy2, dx)
    return dx.reshape(y.shape).astype(y.dtype, copy=False)
