"""LayerNorm and RMSNorm on the CPU: one read and one write per row each way.

LayerNorm over the last axis of x (N rows of C after flattening the leading axes), with
mu = mean(x), r = 1 / sqrt(mean((x - mu)^2) + eps), xhat = (x - mu) r:

    y    = xhat w + b
    dx   = r (gx - mean(gx) - xhat mean(gx xhat)),    gx = g w
    dw   = sum over rows of g xhat,    db = sum over rows of g

RMSNorm (T5) drops the centring and the bias: r = 1 / sqrt(mean(x^2) + eps), xhat = x r,

    y    = xhat w,    dx = r (gx - xhat mean(gx xhat)),    dw = sum over rows of g xhat

The reference (``minitransformer.functional.LayerNorm`` / ``RMSNorm``) takes about a dozen
passes over memory and keeps xhat, an array as large as x, for backward. Here a row of C
floats fits in the L1 cache, so each row is read from memory once, its statistics and
output computed from the cached copy, and its output written once; backward keeps only
the per-row mean and r (two floats per row) and rebuilds xhat from x on the fly.

The parameter gradients dw and db are sums over all rows. Rows are grouped in fixed blocks
whose size depends only on the shape; each block sums its rows in order into its own row of
a (blocks, C) table, and the table is summed over blocks at the end. Threads take whole
blocks, so the result is the same, bit for bit, whatever the number of threads.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._cpu import FASTMATH, compute_dtype, readonly, run_parallel

# About this many elements per block of rows: a unit of work large beside a thread
# hand-off, and enough units for two threads to share a transformer's activations evenly.
BLOCK_ELEMENTS = 1 << 15


def rows_per_block(n_rows: int, width: int) -> int:
    """Rows in one block of work: a function of the shape alone (never of the thread count)."""
    return max(1, min(n_rows, BLOCK_ELEMENTS // max(width, 1)))


# ---------------------------------------------------------------------------------------
# Kernels: each runs blocks first, first + step, ... < stop of ``block`` rows of (N, C) arrays.
# error_model="numpy" lets the divisions compile without a zero-divisor check (see gelu.py).
# ---------------------------------------------------------------------------------------

@njit(nogil=True, fastmath=FASTMATH, error_model="numpy", cache=True)
def _layer_norm_forward(first, stop, step, block, x, w, b, eps, y, mean, rstd):
    n, c = x.shape
    inv_c = x.dtype.type(1.0 / c)
    one = x.dtype.type(1.0)
    for blk in range(first, stop, step):
        for r in range(blk * block, min((blk + 1) * block, n)):
            xr = x[r]
            yr = y[r]
            total = x.dtype.type(0.0)
            for j in range(c):
                total += xr[j]
            mu = total * inv_c
            # Two passes over the cached row: the variance of the centred values does not
            # suffer the cancellation of mean(x^2) - mu^2.
            sq = x.dtype.type(0.0)
            for j in range(c):
                d = xr[j] - mu
                sq += d * d
            rs = one / np.sqrt(sq * inv_c + eps)
            for j in range(c):
                yr[j] = (xr[j] - mu) * rs * w[j] + b[j]
            mean[r] = mu
            rstd[r] = rs


@njit(nogil=True, fastmath=FASTMATH, error_model="numpy", cache=True)
def _layer_norm_backward(first, stop, step, block, x, w, mean, rstd, g, dx, dw_part, db_part):
    n, c = x.shape
    inv_c = x.dtype.type(1.0 / c)
    for blk in range(first, stop, step):
        dwb = dw_part[blk]
        dbb = db_part[blk]
        dwb[:] = 0.0
        dbb[:] = 0.0
        for r in range(blk * block, min((blk + 1) * block, n)):
            xr = x[r]
            gr = g[r]
            dxr = dx[r]
            mu = mean[r]
            rs = rstd[r]
            sum_gx = x.dtype.type(0.0)
            sum_gx_xhat = x.dtype.type(0.0)
            for j in range(c):
                xhat = (xr[j] - mu) * rs
                gx = gr[j] * w[j]
                sum_gx += gx
                sum_gx_xhat += gx * xhat
                dwb[j] += gr[j] * xhat
                dbb[j] += gr[j]
            mean_gx = sum_gx * inv_c
            mean_gx_xhat = sum_gx_xhat * inv_c
            for j in range(c):
                xhat = (xr[j] - mu) * rs
                dxr[j] = rs * (gr[j] * w[j] - mean_gx - xhat * mean_gx_xhat)


@njit(nogil=True, fastmath=FASTMATH, error_model="numpy", cache=True)
def _rms_norm_forward(first, stop, step, block, x, w, eps, y, rstd):
    n, c = x.shape
    inv_c = x.dtype.type(1.0 / c)
    one = x.dtype.type(1.0)
    for blk in range(first, stop, step):
        for r in range(blk * block, min((blk + 1) * block, n)):
            xr = x[r]
            yr = y[r]
            sq = x.dtype.type(0.0)
            for j in range(c):
                sq += xr[j] * xr[j]
            rs = one / np.sqrt(sq * inv_c + eps)
            for j in range(c):
                yr[j] = xr[j] * rs * w[j]
            rstd[r] = rs


@njit(nogil=True, fastmath=FASTMATH, error_model="numpy", cache=True)
def _rms_norm_backward(first, stop, step, block, x, w, rstd, g, dx, dw_part):
    n, c = x.shape
    inv_c = x.dtype.type(1.0 / c)
    for blk in range(first, stop, step):
        dwb = dw_part[blk]
        dwb[:] = 0.0
        for r in range(blk * block, min((blk + 1) * block, n)):
            xr = x[r]
            gr = g[r]
            dxr = dx[r]
            rs = rstd[r]
            sum_gx_xhat = x.dtype.type(0.0)
            for j in range(c):
                xhat = xr[j] * rs
                sum_gx_xhat += gr[j] * w[j] * xhat
                dwb[j] += gr[j] * xhat
            mean_gx_xhat = sum_gx_xhat * inv_c
            for j in range(c):
                dxr[j] = rs * (gr[j] * w[j] - xr[j] * rs * mean_gx_xhat)


# ---------------------------------------------------------------------------------------
# Python-side wrappers
# ---------------------------------------------------------------------------------------

def _rows(x, dtype):
    """x as a read-only (N, C) array of ``dtype``."""
    return readonly(x, dtype).reshape(-1, x.shape[-1])          # (..., C) -> (N, C)


def _param(p, c, fill, dtype, name, what):
    """A (C,) parameter as a read-only array of ``dtype``; ``fill`` everywhere when None."""
    if p is None:
        return readonly(np.full(c, fill, dtype))
    p = np.asarray(p)
    if p.shape != (c,):
        raise ValueError(f"{name}: {what} shape {p.shape} must be ({c},), the last axis of the "
                         "input")
    return readonly(p, dtype)


def _check_input(x, name):
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"{name}: input shape {x.shape} needs a non-empty last axis to "
                         "normalise over")


def _check_grad(g, x, name):
    if g.shape != x.shape:
        raise ValueError(f"{name}: gradient shape {g.shape} must equal the input shape {x.shape}")


def _blocks(x2):
    n, c = x2.shape
    block = rows_per_block(n, c)
    return block, -(-n // block)


def layer_norm_forward(x, weight=None, bias=None, eps: float = 1e-5):
    """LayerNorm of ``x`` over its last axis: returns ``(y, mean, rstd)``.

    ``mean`` and ``rstd`` (shape ``x.shape[:-1]``) are what ``layer_norm_backward`` needs.
    ``weight``/``bias`` of shape (C,), or None for 1 and 0.
    """
    x = np.asarray(x)
    _check_input(x, "layer_norm_forward")
    dtype = compute_dtype(x.dtype)
    c = x.shape[-1]
    x2 = _rows(x, dtype)
    w = _param(weight, c, 1.0, dtype, "layer_norm_forward", "weight")
    b = _param(bias, c, 0.0, dtype, "layer_norm_forward", "bias")
    y = np.empty_like(x2)
    mean = np.empty(x2.shape[0], dtype)
    rstd = np.empty(x2.shape[0], dtype)
    if x2.shape[0]:
        block, n_blocks = _blocks(x2)
        run_parallel(_layer_norm_forward, n_blocks, block, x2, w, b, dtype.type(eps), y, mean,
                     rstd, contiguous=True)
    lead = x.shape[:-1]
    return y.reshape(x.shape).astype(x.dtype, copy=False), mean.reshape(lead), rstd.reshape(lead)


def layer_norm_backward(x, weight, mean, rstd, g):
    """Gradients ``(dx, dw, db)`` of LayerNorm at input ``x`` for the output gradient ``g``.

    ``mean``/``rstd`` come from ``layer_norm_forward``; ``weight`` None means 1 (dw is then
    still the gradient a weight of ones would get).
    """
    x = np.asarray(x)
    g = np.asarray(g)
    _check_input(x, "layer_norm_backward")
    _check_grad(g, x, "layer_norm_backward")
    dtype = compute_dtype(x.dtype)
    c = x.shape[-1]
    x2 = _rows(x, dtype)
    g2 = _rows(g, dtype)
    w = _param(weight, c, 1.0, dtype, "layer_norm_backward", "weight")
    mean = readonly(mean, dtype).reshape(-1)
    rstd = readonly(rstd, dtype).reshape(-1)
    dx = np.empty_like(x2)
    if x2.shape[0] == 0:
        return dx.reshape(x.shape), np.zeros(c, dtype), np.zeros(c, dtype)
    block, n_blocks = _blocks(x2)
    dw_part = np.empty((n_blocks, c), dtype)                     # one row per block of rows
    db_part = np.empty((n_blocks, c), dtype)
    run_parallel(_layer_norm_backward, n_blocks, block, x2, w, mean, rstd, g2, dx, dw_part,
                 db_part, contiguous=True)
    return (dx.reshape(x.shape).astype(x.dtype, copy=False),
            dw_part.sum(axis=0), db_part.sum(axis=0))


def rms_norm_forward(x, weight=None, eps: float = 1e-6):
    """RMSNorm of ``x`` over its last axis: returns ``(y, rstd)``, rstd of shape x.shape[:-1]."""
    x = np.asarray(x)
    _check_input(x, "rms_norm_forward")
    dtype = compute_dtype(x.dtype)
    c = x.shape[-1]
    x2 = _rows(x, dtype)
    w = _param(weight, c, 1.0, dtype, "rms_norm_forward", "weight")
    y = np.empty_like(x2)
    rstd = np.empty(x2.shape[0], dtype)
    if x2.shape[0]:
        block, n_blocks = _blocks(x2)
        run_parallel(_rms_norm_forward, n_blocks, block, x2, w, dtype.type(eps), y, rstd,
                     contiguous=True)
    return y.reshape(x.shape).astype(x.dtype, copy=False), rstd.reshape(x.shape[:-1])


def rms_norm_backward(x, weight, rstd, g):
    """Gradients ``(dx, dw)`` of RMSNorm at input ``x`` for the output gradient ``g``."""
    x = np.asarray(x)
    g = np.asarray(g)
    _check_input(x, "rms_norm_backward")
    _check_grad(g, x, "rms_norm_backward")
    dtype = compute_dtype(x.dtype)
    c = x.shape[-1]
    x2 = _rows(x, dtype)
    g2 = _rows(g, dtype)
    w = _param(weight, c, 1.0, dtype, "rms_norm_backward", "weight")
    rstd = readonly(rstd, dtype).reshape(-1)
    dx = np.empty_like(x2)
    if x2.shape[0] == 0:
        return dx.reshape(x.shape), np.zeros(c, dtype)
    block, n_blocks = _blocks(x2)
    dw_part = np.empty((n_blocks, c), dtype)
    run_parallel(_rms_norm_backward, n_blocks, block, x2, w, rstd, g2, dx, dw_part,
                 contiguous=True)
    return dx.reshape(x.shape).astype(x.dtype, copy=False), dw_part.sum(axis=0)
