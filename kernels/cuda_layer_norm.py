"""LayerNorm and RMSNorm on a CUDA GPU: one read and one write per row each way.

The math is that of ``layer_norm.py``. LayerNorm over the last axis of x (N rows of C),
with mu = mean(x), r = 1 / sqrt(mean((x - mu)^2) + eps), xhat = (x - mu) r:

    y  = xhat w + b
    dx = r (gx - mean(gx) - xhat mean(gx xhat)),    gx = g w
    dw = sum over rows of g xhat,    db = sum over rows of g

RMSNorm drops the centring and the bias: r = 1 / sqrt(mean(x^2) + eps), xhat = x r,
y = xhat w, dx = r (gx - xhat mean(gx xhat)), dw = sum over rows of g xhat.

**Forward**: one thread block per row, thread ``tid`` owning columns tid, tid + threads, ...
A row of at most ``_cuda.MAX_PER_THREAD`` columns per thread (C = 768 takes 6 each of 128
threads) is loaded once into registers; the mean, the variance of the centred values (two
reductions over the registers, so no cancellation of mean(x^2) - mu^2) and the output
come from there. A wider row takes the looped path, which rereads it from memory.

**Backward**: dx needs two row sums (of gx and gx xhat), as the forward needs two; dw and db
are sums over all rows. A block handles rows b, b + B, b + 2B, ... for a fixed number of
blocks B (a function of the shape alone) and keeps its threads' shares of dw and db in
registers across its rows; at the end it writes them to its own row of a (B, C) table,
which one CuPy reduction sums over blocks. No atomics: the sums are added in the same
order on every run, so dw and db are the same bit for bit from run to run.

The block reductions come from ``_cuda.reduction`` (warp shuffles on a GPU, shared memory
under the simulator). Arithmetic stays in the data's float type, as in every kernel here.
"""
from __future__ import annotations

import functools
import math

from minitransformer import backend

from . import _cuda
from ._cuda import bind_cuda, contiguous, float_type, grid_for, launch_stream, row_layout

cuda = None  # numba.cuda once a kernel is built (see _cuda.bind_cuda)

# Blocks of the backward, at most: each adds its rows' dw and db into a row of the (B, C)
# table, so B rows of partial sums are written and summed; enough blocks to fill a GPU.
BACKWARD_BLOCKS = 512


@functools.lru_cache(maxsize=None)
def _kernels(ft, threads, per_thread, shuffle, rms):
    """(forward, backward) for LayerNorm, or RMSNorm when ``rms``; ``per_thread`` 0: looped."""
    reduce = _cuda.reduction(shuffle)
    red_len = _cuda.scratch_length(threads, shuffle)
    slots = max(per_thread, 1)
    bind_cuda(globals())

    @cuda.jit
    def forward(x, w, b, eps, inv_c, y, mean, rstd):
        # x, y: (N, C); w, b: (C,); mean, rstd: (N,); eps and inv_c = 1/C of type ft
        red = cuda.shared.array(red_len, dtype=ft)
        vals = cuda.local.array(slots, dtype=ft)
        tid = cuda.threadIdx.x
        c = x.shape[1]
        zero = ft(0.0)
        for row in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            mu = zero
            if not rms:
                total = zero
                if per_thread:
                    for k in range(per_thread):
                        j = tid + k * threads
                        v = x[row, j] if j < c else zero
                        vals[k] = v
                        total += v
                else:
                    for j in range(tid, c, threads):
                        total += x[row, j]
                mu = reduce(red, tid, total, threads, False) * inv_c
            sq = zero
            if per_thread:
                for k in range(per_thread):
                    j = tid + k * threads
                    if rms:
                        vals[k] = x[row, j] if j < c else zero
                    d = vals[k] - mu if j < c else zero
                    sq += d * d
            else:
                for j in range(tid, c, threads):
                    d = x[row, j] - mu
                    sq += d * d
            rs = ft(1.0) / math.sqrt(reduce(red, tid, sq, threads, False) * inv_c + eps)
            if per_thread:
                for k in range(per_thread):
                    j = tid + k * threads
                    if j < c:
                        y[row, j] = (vals[k] - mu) * rs * w[j] + b[j]
            else:
                for j in range(tid, c, threads):
                    y[row, j] = (x[row, j] - mu) * rs * w[j] + b[j]
            if tid == 0:
                mean[row] = mu
                rstd[row] = rs

    @cuda.jit
    def backward(x, w, mean, rstd, g, inv_c, dx, dw_part, db_part):
        # x, g, dx: (N, C); w: (C,); mean, rstd: (N,); dw_part, db_part: (blocks, C)
        red = cuda.shared.array(red_len, dtype=ft)
        xhats = cuda.local.array(slots, dtype=ft)
        gxs = cuda.local.array(slots, dtype=ft)
        dws = cuda.local.array(slots, dtype=ft)         # this thread's columns of dw, db
        dbs = cuda.local.array(slots, dtype=ft)
        tid = cuda.threadIdx.x
        blk = cuda.blockIdx.x
        c = x.shape[1]
        zero = ft(0.0)
        if per_thread:
            for k in range(per_thread):
                dws[k] = zero
                dbs[k] = zero
        else:
            for j in range(tid, c, threads):
                dw_part[blk, j] = zero
                db_part[blk, j] = zero
        for row in range(blk, x.shape[0], cuda.gridDim.x):
            mu = zero if rms else mean[row]
            rs = rstd[row]
            sum_gx = zero
            sum_gx_xhat = zero
            if per_thread:
                for k in range(per_thread):
                    j = tid + k * threads
                    xhat = zero
                    gj = zero
                    gx = zero
                    if j < c:
                        xhat = (x[row, j] - mu) * rs
                        gj = g[row, j]
                        gx = gj * w[j]
                    xhats[k] = xhat
                    gxs[k] = gx
                    sum_gx += gx
                    sum_gx_xhat += gx * xhat
                    dws[k] += gj * xhat
                    dbs[k] += gj
            else:
                for j in range(tid, c, threads):
                    xhat = (x[row, j] - mu) * rs
                    gx = g[row, j] * w[j]
                    sum_gx += gx
                    sum_gx_xhat += gx * xhat
                    dw_part[blk, j] += g[row, j] * xhat
                    db_part[blk, j] += g[row, j]
            mean_gx = zero if rms else reduce(red, tid, sum_gx, threads, False) * inv_c
            mean_gx_xhat = reduce(red, tid, sum_gx_xhat, threads, False) * inv_c
            if per_thread:
                for k in range(per_thread):
                    j = tid + k * threads
                    if j < c:
                        dx[row, j] = rs * (gxs[k] - mean_gx - xhats[k] * mean_gx_xhat)
            else:
                for j in range(tid, c, threads):
                    xhat = (x[row, j] - mu) * rs
                    dx[row, j] = rs * (g[row, j] * w[j] - mean_gx - xhat * mean_gx_xhat)
        if per_thread:
            for k in range(per_thread):
                j = tid + k * threads
                if j < c:
                    dw_part[blk, j] = dws[k]
                    db_part[blk, j] = dbs[k]

    return forward, backward


# ---------------------------------------------------------------------------------------
# Python-side wrappers
# ---------------------------------------------------------------------------------------

def _layout(x, ft, threads, rms, name):
    """x as (N, C) of ``ft``, the kernels for its width, and the block size."""
    xp = backend.xp(x)
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"{name}: input shape {x.shape} needs a non-empty last axis to "
                         "normalise over")
    shuffle = not _cuda.simulating()
    threads, per_thread = row_layout(x.shape[-1], threads, shuffle, name)
    x2 = contiguous(x, ft, xp).reshape(-1, x.shape[-1])          # (..., C) -> (N, C)
    return x2, _kernels(ft, threads, per_thread, shuffle, rms), threads


def _param(xp, p, c, fill, ft, name, what):
    """A (C,) parameter as a contiguous array of ``ft``; ``fill`` everywhere when None."""
    if p is None:
        return xp.full(c, fill, dtype=ft)
    if p.shape != (c,):
        raise ValueError(f"{name}: {what} shape {p.shape} must be ({c},), the last axis of the "
                         "input")
    return contiguous(p, ft, xp)


def _check_grad(g, x, name):
    if g.shape != x.shape:
        raise ValueError(f"{name}: gradient shape {g.shape} must equal the input shape {x.shape}")


def _norm_forward(x, weight, bias, eps, threads, rms, name):
    xp = backend.xp(x)
    ft = float_type(x.dtype)
    x2, (forward, _), threads = _layout(x, ft, threads, rms, name)
    n, c = x2.shape
    w = _param(xp, weight, c, 1.0, ft, name, "weight")
    b = _param(xp, bias, c, 0.0, ft, name, "bias")
    y = _cuda.empty(xp, x2.shape, ft)
    mean = _cuda.empty(xp, n, ft)
    rstd = _cuda.empty(xp, n, ft)
    if n:
        forward[grid_for(n), threads, launch_stream(x)](x2, w, b, ft(eps), ft(1.0 / c), y, mean,
                                                        rstd)
    lead = x.shape[:-1]
    return y.reshape(x.shape).astype(x.dtype, copy=False), mean.reshape(lead), rstd.reshape(lead)


def _norm_backward(x, weight, mean, rstd, g, threads, rms, name):
    xp = backend.xp(x)
    _check_grad(g, x, name)
    ft = float_type(x.dtype)
    x2, (_, backward), threads = _layout(x, ft, threads, rms, name)
    n, c = x2.shape
    g2 = contiguous(g, ft, xp).reshape(-1, c)
    w = _param(xp, weight, c, 1.0, ft, name, "weight")
    rstd = contiguous(rstd, ft, xp).reshape(-1)
    mean = rstd if mean is None else contiguous(mean, ft, xp).reshape(-1)
    dx = _cuda.empty(xp, x2.shape, ft)
    if n == 0:
        return dx.reshape(x.shape), xp.zeros(c, ft), xp.zeros(c, ft)
    blocks = min(n, BACKWARD_BLOCKS)
    dw_part = _cuda.empty(xp, (blocks, c), ft)                   # one row per block
    db_part = _cuda.empty(xp, (blocks, c), ft)
    backward[blocks, threads, launch_stream(x)](x2, w, mean, rstd, g2, ft(1.0 / c), dx, dw_part,
                                                db_part)
    return dx.reshape(x.shape).astype(x.dtype, copy=False), dw_part.sum(axis=0), db_part.sum(axis=0)


def layer_norm_forward(x, weight=None, bias=None, eps: float = 1e-5, *, threads=None):
    """LayerNorm of ``x`` over its last axis: returns ``(y, mean, rstd)``.

    ``mean`` and ``rstd`` (shape ``x.shape[:-1]``) are what ``layer_norm_backward`` needs.
    ``weight``/``bias`` of shape (C,), or None for 1 and 0. ``threads``: the block size,
    unset to hold a row in registers where one fits (``_cuda.row_layout``).
    """
    return _norm_forward(x, weight, bias, eps, threads, False, "layer_norm_forward")


def layer_norm_backward(x, weight, mean, rstd, g, *, threads=None):
    """Gradients ``(dx, dw, db)`` of LayerNorm at input ``x`` for the output gradient ``g``."""
    return _norm_backward(x, weight, mean, rstd, g, threads, False, "layer_norm_backward")


def rms_norm_forward(x, weight=None, eps: float = 1e-6, *, threads=None):
    """RMSNorm of ``x`` over its last axis: returns ``(y, rstd)``, rstd of shape x.shape[:-1]."""
    y, _, rstd = _norm_forward(x, weight, None, eps, threads, True, "rms_norm_forward")
    return y, rstd


def rms_norm_backward(x, weight, rstd, g, *, threads=None):
    """Gradients ``(dx, dw)`` of RMSNorm at input ``x`` for the output gradient ``g``."""
    dx, dw, _ = _norm_backward(x, weight, None, rstd, g, threads, True, "rms_norm_backward")
    return dx, dw
