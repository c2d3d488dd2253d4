"""Row softmax on the CPU: Numba kernels over the last axis of an array of any rank.

    y_ij  = exp(x_ij - m_i) / sum_k exp(x_ik - m_i),      m_i = max_k x_ik
    dx_ij = y_ij * (dy_ij - sum_k dy_ik y_ik)

An optional boolean mask (True = allowed) gives masked entries probability 0, and a row
with nothing allowed comes out all zeros instead of 0/0 = NaN.

The kernel is built around the memory hierarchy. A row of a few thousand floats fits in
the L1/L2 cache, so the row is read from memory once (the max pass) and its later passes
(exponentiate and sum, then scale) hit the cache; the output is written once. The
textbook's alternative, the "online" softmax that keeps a running max and rescales the
running sum, saves a pass over memory only when a row does not fit in cache, and pays
for it with two exponentials per entry instead of one.

The shared runtime (the SIMD exponential :func:`~._cpu.fast_exp`, the row max, the thread
runner, the mask compaction) is in ``_cpu.py``.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._cpu import FASTMATH, compute_dtype, exp_sub_sum, readonly, row_mask, row_max, run_parallel

_NO_ROWS = readonly(np.ones((1, 1), dtype=np.bool_))
_NO_INDEX = readonly(np.zeros(1, dtype=np.int64))


# ---------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------

@njit(fastmath=FASTMATH, cache=True, inline="always")
def _softmax_row(src, yr, lanes):
    """yr = softmax(src) for one row; all zeros when nothing is allowed (every entry -inf)."""
    m = row_max(src, lanes)
    if m == src.dtype.type(-np.inf):
        yr[:] = 0.0
        return
    inv = src.dtype.type(1.0) / exp_sub_sum(src, m, yr)
    for j in range(yr.size):
        yr[j] *= inv


@njit(nogil=True, fastmath=FASTMATH, cache=True)
def _softmax_forward(first, stop, step, x, mask_rows, mask_index, has_mask, y):
    # x, y: (N, V); rows first, first + step, ... < stop
    width = x.shape[1]
    neg_inf = x.dtype.type(-np.inf)
    shifted = np.empty(width, x.dtype)
    lanes = np.empty(16, x.dtype)
    for r in range(first, stop, step):
        xr = x[r]
        # Two call sites rather than one variable holding either row: x is read-only and
        # ``shifted`` is not, and a variable of both types compiles to code 1.35x slower.
        if has_mask:
            allowed = mask_rows[mask_index[r]]
            # Masked entries become -inf, whose exponential is exactly 0.
            for j in range(width):
                shifted[j] = xr[j] if allowed[j if allowed.size > 1 else 0] else neg_inf
            _softmax_row(shifted, y[r], lanes)
        else:
            _softmax_row(xr, y[r], lanes)


@njit(nogil=True, fastmath=FASTMATH, cache=True)
def _softmax_backward(first, stop, step, y, dy, dx):
    width = y.shape[1]
    for r in range(first, stop, step):
        yr = y[r]
        dyr = dy[r]
        dxr = dx[r]
        dot = y.dtype.type(0.0)
        for j in range(width):
            dot += dyr[j] * yr[j]
        for j in range(width):
            dxr[j] = yr[j] * (dyr[j] - dot)


def softmax_forward(x, mask=None):
    """Softmax over the last axis of ``x``; ``mask``: None, or bool broadcastable to x."""
    x = np.asarray(x)
    shape = x.shape
    dtype = compute_dtype(x.dtype)
    if x.size == 0:
        return np.zeros(shape, dtype=x.dtype)
    x2 = readonly(x, dtype).reshape(-1, shape[-1])  # (..., V) -> (N, V)
    if mask is None:
        rows, index, has_mask = _NO_ROWS, _NO_INDEX, False
    else:
        rows, index = row_mask(mask, shape)
        has_mask = True
    y = np.empty(shape, dtype)          # allocated in its final shape: the caller gets no view
    run_parallel(_softmax_forward, x2.shape[0], x2, rows, index, has_mask, y.reshape(x2.shape),
                 contiguous=True)
    return y.astype(x.dtype, copy=False)


def softmax_backward(y, dy):
    """Gradient of the softmax: dx = y * (dy - sum(dy * y, axis=-1, keepdims=True))."""
    y = np.asarray(y)
    dy = np.asarray(dy)
    if y.shape != dy.shape:
        raise ValueError(f"softmax_backward: dy shape {dy.shape} must equal y shape {y.shape}")
    dtype = compute_dtype(y.dtype)
    if y.size == 0:
        return np.zeros(y.shape, dtype=y.dtype)
    y2 = readonly(y, dtype).reshape(-1, y.shape[-1])
    dy2 = readonly(dy, dtype).reshape(-1, y.shape[-1])
    dx = np.empty(y.shape, dtype)
    run_parallel(_softmax_backward, y2.shape[0], y2, dy2, dx.reshape(y2.shape), contiguous=True)
    return dx.astype(y.dtype, copy=False)
