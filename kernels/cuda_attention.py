"""Scaled dot-product attention on a CUDA GPU, FlashAttention style, in Numba CUDA.

The math, the masking rules and the dropout stream are those of ``attention.py`` (read its
docstring first); only the mapping onto the GPU differs:

- Forward: one thread block per (batch*head, run of ``block_q`` queries), one thread per
  query. The block walks the keys in tiles of ``block_k``, loaded cooperatively into
  shared memory; each thread scores its query against the tile, updates its running max
  m and sum l (online softmax) and its accumulator of exp(S - m) V in registers. Only O
  and the row log-sum-exp M = m + log l are written. Tiles wholly in a row block's causal
  future are never loaded.
- Backward, in three kernels so that no two threads add into the same memory: one gives
  Delta = rowsum(dO * O); one has a thread per key that walks the query tiles and
  accumulates its dK and dV rows; one has a thread per query that walks the key tiles and
  accumulates its dQ row (and writes dS into the bias gradient). Both rebuild
  P = exp(S - M) from the saved M; no (Tq, Tk) matrix is stored.

A thread per row with its row in registers is the simple GPU design: it does not use
tensor cores and leaves speed on the table against cuDNN/FlashAttention, but every
step is the textbook's, and it needs no warp-level intrinsics, so the simulator runs it.

It is the reference for ``cuda_flash_attention`` (the kernel dispatch runs on CUDA): the
tests compare the two, under the simulator and on a GPU. It still runs what that kernel
does not: float64, and head sizes that are not a multiple of 8 or exceed 128.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from minitransformer import backend

from . import attention, rng
from . import _cuda
from ._cuda import bind_cuda, contiguous, float_type, launch_stream

cuda = None  # numba.cuda once a kernel is built (see _cuda.bind_cuda)

BLOCK_Q = 64
_SHARED_BYTES = 32768   # for the two shared tiles of a block (48 KiB is the static limit)


def tile_rows(dim: int, itemsize: int, threads: int = BLOCK_Q) -> int:
    """Rows per shared-memory tile: two (rows, dim) tiles must fit in _SHARED_BYTES."""
    rows = threads
    while rows > 1 and 2 * rows * dim * itemsize > _SHARED_BYTES:
        rows //= 2
    return rows


@functools.lru_cache(maxsize=None)
def _device_keep():
    bind_cuda(globals())
    return cuda.jit(device=True)(rng.keep_scalar)


@functools.lru_cache(maxsize=None)
def _device_visible():
    bind_cuda(globals())

    @cuda.jit(device=True)
    def visible(mask, has_mask, causal, b, h, i, j, offset):
        """May query i attend to key j? (bottom-right causal, then the boolean mask)"""
        if causal and j > i + offset:
            return False
        if has_mask:
            return mask[b if mask.shape[0] > 1 else 0, h if mask.shape[1] > 1 else 0,
                        i if mask.shape[2] > 1 else 0, j if mask.shape[3] > 1 else 0]
        return True

    return visible


@functools.lru_cache(maxsize=None)
def _forward_kernel(ft, dim, threads, tile):
    keep = _device_keep()
    visible = _device_visible()
    bind_cuda(globals())

    @cuda.jit
    def forward(q, k, v, tq, tk, n_heads, mask, has_mask, bias, has_bias, scale, causal,
                dropout_p, hashed_seed, threshold, o, lse):
        # q, o: (BH*Tq, D); k, v: (BH*Tk, D); lse: (BH*Tq,)
        k_s = cuda.shared.array((tile, dim), dtype=ft)
        v_s = cuda.shared.array((tile, dim), dtype=ft)
        q_r = cuda.local.array(dim, dtype=ft)      # this thread's query row, scaled
        acc = cuda.local.array(dim, dtype=ft)      # running sum of exp(S - m) V
        s_r = cuda.local.array(tile, dtype=ft)     # this row's scores for the current tile
        n_qb = (tq + threads - 1) // threads
        bh = cuda.blockIdx.x // n_qb
        i0 = (cuda.blockIdx.x % n_qb) * threads
        b = bh // n_heads
        h = bh % n_heads
        tid = cuda.threadIdx.x
        i = i0 + tid
        active = i < tq
        row = bh * tq + i
        offset = tk - tq
        neg_inf = ft(-math.inf)
        inv_keep = ft(1.0 / (1.0 - dropout_p))
        bb = b if bias.shape[0] > 1 else 0
        for d in range(dim):
            q_r[d] = q[row, d] * ft(scale) if active else ft(0.0)
            acc[d] = 0.0
        m = neg_inf
        l = ft(0.0)
        # Keys at or past k_end are in the causal future of every row of this block.
        k_end = min(tk, min(i0 + threads, tq) + offset) if causal else tk
        for j0 in range(0, k_end, tile):
            nk = min(tile, k_end - j0)
            for idx in range(tid, nk * dim, threads):
                c = idx // dim
                d = idx % dim
                k_s[c, d] = k[bh * tk + j0 + c, d]
                v_s[c, d] = v[bh * tk + j0 + c, d]
            cuda.syncthreads()
            if active:
                tile_max = neg_inf
                for c in range(nk):
                    s = neg_inf
                    if visible(mask, has_mask, causal, b, h, i, j0 + c, offset):
                        s = ft(0.0)
                        for d in range(dim):
                            s += q_r[d] * k_s[c, d]
                        if has_bias:
                            s += bias[bb, h, i, j0 + c]
                    s_r[c] = s
                    tile_max = max(tile_max, s)
                m_new = max(m, tile_max)
                if m_new > neg_inf:
                    alpha = math.exp(m - m_new)    # rescales what was summed under m
                    l *= alpha
                    for d in range(dim):
                        acc[d] *= alpha
                    for c in range(nk):
                        p = math.exp(s_r[c] - m_new)
                        l += p
                        if dropout_p > 0.0:
                            counter = np.uint64(row * tk + j0 + c)
                            p = p * inv_keep if keep(hashed_seed, counter, threshold) else ft(0.0)
                        if p != 0.0:
                            for d in range(dim):
                                acc[d] += p * v_s[c, d]
                    m = m_new
            cuda.syncthreads()
        if active:
            if l > 0.0:
                for d in range(dim):
                    o[row, d] = acc[d] / l
                lse[row] = m + math.log(l)
            else:
                for d in range(dim):
                    o[row, d] = 0.0
                lse[row] = neg_inf

    return forward


@functools.lru_cache(maxsize=None)
def _delta_kernel(ft):
    bind_cuda(globals())

    @cuda.jit
    def delta_kernel(do, o, delta):
        r = cuda.grid(1)
        if r < do.shape[0]:
            acc = ft(0.0)
            for d in range(do.shape[1]):
                acc += do[r, d] * o[r, d]
            delta[r] = acc

    return delta_kernel


@functools.lru_cache(maxsize=None)
def _dkdv_kernel(ft, dim, threads, tile):
    keep = _device_keep()
    visible = _device_visible()
    bind_cuda(globals())

    @cuda.jit
    def dkdv(q, k, v, do, lse, delta, tq, tk, n_heads, mask, has_mask, bias, has_bias, scale,
             causal, dropout_p, hashed_seed, threshold, dk, dv):
        # One thread per key j: dV_j = sum_i P_drop_ij dO_i, dK_j = scale sum_i dS_ij Q_i
        q_s = cuda.shared.array((tile, dim), dtype=ft)
        do_s = cuda.shared.array((tile, dim), dtype=ft)
        lse_s = cuda.shared.array(tile, dtype=ft)
        delta_s = cuda.shared.array(tile, dtype=ft)
        k_r = cuda.local.array(dim, dtype=ft)
        v_r = cuda.local.array(dim, dtype=ft)
        dk_r = cuda.local.array(dim, dtype=ft)
        dv_r = cuda.local.array(dim, dtype=ft)
        n_kb = (tk + threads - 1) // threads
        n_qt = (tq + tile - 1) // tile
        bh = cuda.blockIdx.x // n_kb
        j0 = (cuda.blockIdx.x % n_kb) * threads
        b = bh // n_heads
        h = bh % n_heads
        tid = cuda.threadIdx.x
        j = j0 + tid
        active = j < tk
        col = bh * tk + j
        offset = tk - tq
        sc = ft(scale)
        neg_inf = ft(-math.inf)
        inv_keep = ft(1.0 / (1.0 - dropout_p))
        bb = b if bias.shape[0] > 1 else 0
        for d in range(dim):
            k_r[d] = k[col, d] if active else ft(0.0)
            v_r[d] = v[col, d] if active else ft(0.0)
            dk_r[d] = 0.0
            dv_r[d] = 0.0
        # Queries before j0 - offset see none of this block's keys under a causal mask.
        qt_first = max(j0 - offset, 0) // tile if causal else 0
        for qt in range(qt_first, n_qt):
            i0 = qt * tile
            nq = min(tile, tq - i0)
            for idx in range(tid, nq * dim, threads):
                r = idx // dim
                d = idx % dim
                q_s[r, d] = q[bh * tq + i0 + r, d]
                do_s[r, d] = do[bh * tq + i0 + r, d]
            for r in range(tid, nq, threads):
                lse_s[r] = lse[bh * tq + i0 + r]
                delta_s[r] = delta[bh * tq + i0 + r]
            cuda.syncthreads()
            if active:
                for r in range(nq):
                    i = i0 + r
                    if lse_s[r] == neg_inf or not visible(mask, has_mask, causal, b, h, i, j,
                                                          offset):
                        continue
                    s = ft(0.0)
                    dp = ft(0.0)
                    for d in range(dim):
                        s += q_s[r, d] * k_r[d]
                        dp += do_s[r, d] * v_r[d]
                    s *= sc
                    if has_bias:
                        s += bias[bb, h, i, j]
                    p = math.exp(s - lse_s[r])
                    f = ft(1.0)
                    if dropout_p > 0.0:
                        counter = np.uint64((bh * tq + i) * tk + j)
                        f = inv_keep if keep(hashed_seed, counter, threshold) else ft(0.0)
                    ds = p * (dp * f - delta_s[r])
                    for d in range(dim):
                        dv_r[d] += p * f * do_s[r, d]
                        dk_r[d] += ds * sc * q_s[r, d]
            cuda.syncthreads()
        if active:
            for d in range(dim):
                dk[col, d] = dk_r[d]
                dv[col, d] = dv_r[d]

    return dkdv


@functools.lru_cache(maxsize=None)
def _dq_kernel(ft, dim, threads, tile):
    keep = _device_keep()
    visible = _device_visible()
    bind_cuda(globals())

    @cuda.jit
    def dq_kernel(q, k, v, do, lse, delta, tq, tk, n_heads, mask, has_mask, bias, has_bias,
                  scale, causal, dropout_p, hashed_seed, threshold, dq, dbias):
        # One thread per query i: dQ_i = scale sum_j dS_ij K_j; dbias_ij = dS_ij
        k_s = cuda.shared.array((tile, dim), dtype=ft)
        v_s = cuda.shared.array((tile, dim), dtype=ft)
        q_r = cuda.local.array(dim, dtype=ft)
        do_r = cuda.local.array(dim, dtype=ft)
        dq_r = cuda.local.array(dim, dtype=ft)
        n_qb = (tq + threads - 1) // threads
        bh = cuda.blockIdx.x // n_qb
        i0 = (cuda.blockIdx.x % n_qb) * threads
        b = bh // n_heads
        h = bh % n_heads
        tid = cuda.threadIdx.x
        i = i0 + tid
        row = bh * tq + i
        offset = tk - tq
        sc = ft(scale)
        neg_inf = ft(-math.inf)
        inv_keep = ft(1.0 / (1.0 - dropout_p))
        # A fully masked row (M = -inf) has no gradient.
        active = i < tq and lse[min(row, lse.shape[0] - 1)] > neg_inf
        m_i = lse[row] if active else ft(0.0)
        delta_i = delta[row] if active else ft(0.0)
        bb = b if bias.shape[0] > 1 else 0
        shared_bias = dbias.shape[0] == 1
        for d in range(dim):
            q_r[d] = q[row, d] if active else ft(0.0)
            do_r[d] = do[row, d] if active else ft(0.0)
            dq_r[d] = 0.0
        k_end = min(tk, min(i0 + threads, tq) + offset) if causal else tk
        for j0 in range(0, k_end, tile):
            nk = min(tile, k_end - j0)
            for idx in range(tid, nk * dim, threads):
                c = idx // dim
                d = idx % dim
                k_s[c, d] = k[bh * tk + j0 + c, d]
                v_s[c, d] = v[bh * tk + j0 + c, d]
            cuda.syncthreads()
            if active:
                for c in range(nk):
                    j = j0 + c
                    if not visible(mask, has_mask, causal, b, h, i, j, offset):
                        continue
                    s = ft(0.0)
                    dp = ft(0.0)
                    for d in range(dim):
                        s += q_r[d] * k_s[c, d]
                        dp += do_r[d] * v_s[c, d]
                    s *= sc
                    if has_bias:
                        s += bias[bb, h, i, j]
                    p = math.exp(s - m_i)
                    if dropout_p > 0.0:
                        counter = np.uint64(row * tk + j)
                        dp = dp * inv_keep if keep(hashed_seed, counter, threshold) else ft(0.0)
                    ds = p * (dp - delta_i)
                    for d in range(dim):
                        dq_r[d] += ds * sc * k_s[c, d]
                    if has_bias:
                        if shared_bias:
                            # Every batch entry adds into the one bias of head h.
                            cuda.atomic.add(dbias, (0, h, i, j), ds)
                        else:
                            dbias[b, h, i, j] = ds
            cuda.syncthreads()
        if i < tq:
            for d in range(dim):
                dq[row, d] = dq_r[d]

    return dq_kernel


# ---------------------------------------------------------------------------------------
# Python-side wrappers
# ---------------------------------------------------------------------------------------

def _prepare_mask(xp, mask, shape):
    """The mask of ``attention._prepare_mask``, on ``xp``'s device."""
    return attention._prepare_mask(mask, shape, xp=xp, finish=functools.partial(contiguous, xp=xp))


def _prepare_bias(xp, bias, shape, ft):
    b, h, tq, tk = shape
    if bias is None:
        return xp.zeros((1, 1, 1, 1), dtype=ft), False
    if bias.ndim != 4 or bias.shape[0] not in (1, b) or tuple(bias.shape[1:]) != (h, tq, tk):
        raise ValueError(f"attention: bias shape {bias.shape} must be (1 or {b}, {h}, {tq}, {tk}); "
                         "give one bias per head, shared over the batch or one per entry")
    return contiguous(bias, ft, xp), True


def _common(q, k, v, mask, bias, scale, dropout_p, seed):
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4 or k.shape != v.shape \
            or k.shape[:2] != q.shape[:2] or k.shape[3] != q.shape[3]:
        raise ValueError(f"attention: shapes q {q.shape}, k {k.shape}, v {v.shape} do not fit; "
                         "expected q (B, H, Tq, D) and k, v (B, H, Tk, D)")
    xp = backend.xp(q)
    B, H, tq, dim = q.shape
    tk = k.shape[2]
    ft = float_type(q.dtype)
    scale = 1.0 / math.sqrt(dim) if scale is None else float(scale)
    mask4, has_mask = _prepare_mask(xp, mask, (B, H, tq, tk))
    bias4, has_bias = _prepare_bias(xp, bias, (B, H, tq, tk), ft)
    if not 0.0 <= float(dropout_p) < 1.0:
        raise ValueError(f"attention: dropout_p must be in [0, 1), got {dropout_p}")
    if dropout_p > 0.0 and seed is None:
        raise ValueError("attention: dropout_p > 0 needs a seed (the same one in forward "
                         "and backward); pass seed=backend.next_seed()")
    hashed = rng.seed_hash(int(seed)) if dropout_p > 0.0 else np.uint64(0)
    threshold = rng.keep_threshold(dropout_p) if dropout_p > 0.0 else np.uint64(0)
    return (xp, B, H, tq, tk, dim, ft, scale, mask4, has_mask, bias4, has_bias,
            float(dropout_p), hashed, threshold)


def attention_forward(q, k, v, mask=None, bias=None, scale=None, causal=False, dropout_p=0.0,
                      seed=None, *, block_q=BLOCK_Q, block_k=None):
    """O and the row log-sum-exp on the GPU; see ``attention.attention_forward``.

    ``block_q`` is the number of queries (threads) per block, ``block_k`` the keys per
    shared-memory tile (by default as many as fit).
    """
    (xp, B, H, tq, tk, dim, ft, scale, mask4, has_mask, bias4, has_bias, p, hashed,
     threshold) = _common(q, k, v, mask, bias, scale, dropout_p, seed)
    o = xp.zeros((B * H * tq, dim), ft)
    lse = xp.full(B * H * tq, -np.inf, ft)
    if o.size and tk:
        tile = block_k or tile_rows(dim, np.dtype(ft).itemsize, block_q)
        kernel = _forward_kernel(ft, dim, block_q, tile)
        grid = B * H * (-(-tq // block_q))
        kernel[grid, block_q, launch_stream(q)](
            contiguous(q, ft, xp).reshape(-1, dim), contiguous(k, ft, xp).reshape(-1, dim),
            contiguous(v, ft, xp).reshape(-1, dim), tq, tk, H, mask4, has_mask, bias4,
            has_bias, scale, bool(causal), p, hashed, threshold, o, lse)
    return (o.reshape(B, H, tq, dim).astype(q.dtype, copy=False),
            lse.reshape(B, H, tq))   # lse stays in the compute dtype (float32 for halves)


def into(out, grads):
    """(dq, dk, dv, dbias) with dq, dk, dv copied into ``out``'s three arrays, where given
    (``attention.attention_backward``'s ``out``); ``grads`` as they are otherwise."""
    if out is None:
        return grads
    for target, g in zip(out, grads[:3]):
        target[...] = g
    return (*out, grads[3])


def attention_backward(q, k, v, o, lse, do, mask=None, bias=None, scale=None, causal=False,
                       dropout_p=0.0, seed=None, *, block_q=BLOCK_Q, block_k=None, out=None):
    """(dq, dk, dv, dbias) on the GPU; see ``attention.attention_backward``."""
    (xp, B, H, tq, tk, dim, ft, scale, mask4, has_mask, bias4, has_bias, p, hashed,
     threshold) = _common(q, k, v, mask, bias, scale, dropout_p, seed)
    n_bh = B * H
    dq = xp.zeros((n_bh * tq, dim), ft)
    dk = xp.zeros((n_bh * tk, dim), ft)
    dv = xp.zeros((n_bh * tk, dim), ft)
    dbias = xp.zeros(bias4.shape, ft) if has_bias else None
    if dq.size and dk.size:
        stream = launch_stream(q)
        tile = block_k or tile_rows(dim, np.dtype(ft).itemsize, block_q)
        q2 = contiguous(q, ft, xp).reshape(-1, dim)
        k2 = contiguous(k, ft, xp).reshape(-1, dim)
        v2 = contiguous(v, ft, xp).reshape(-1, dim)
        o2 = contiguous(o, ft, xp).reshape(-1, dim)
        do2 = contiguous(do, ft, xp).reshape(-1, dim)
        lse1 = contiguous(lse, ft, xp).reshape(-1)
        delta = _cuda.empty(xp, n_bh * tq, ft)
        _delta_kernel(ft)[-(-(n_bh * tq) // 128), 128, stream](do2, o2, delta)
        args = (q2, k2, v2, do2, lse1, delta, tq, tk, H, mask4, has_mask, bias4, has_bias,
                scale, bool(causal), p, hashed, threshold)
        _dkdv_kernel(ft, dim, block_q, tile)[n_bh * (-(-tk // block_q)), block_q, stream](
            *args, dk, dv)
        _dq_kernel(ft, dim, block_q, tile)[n_bh * (-(-tq // block_q)), block_q, stream](
            *args, dq, dbias if has_bias else xp.zeros((1, 1, 1, 1), ft))

    def back(a):  # (BH*T, D) -> (B, H, T, D) in the caller's dtype
        return a.reshape(B, H, -1, dim).astype(q.dtype, copy=False)

    return into(out, (back(dq), back(dk), back(dv),
                      None if dbias is None else dbias.astype(q.dtype, copy=False)))
