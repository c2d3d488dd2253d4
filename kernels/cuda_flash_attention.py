"""Scaled dot-product attention on a CUDA GPU in the FlashAttention-2 manner (float32), in Numba CUDA.

The math, the masking rules and the dropout stream are those of ``attention.py``; read its
docstring first. ``cuda_attention.py`` maps the same algorithm onto the GPU the simple way
(one thread per query) and is the reference this kernel is tested against, under the
simulator and on a GPU; it also still runs float64 inputs and head sizes this kernel was
not built for (see :func:`supported`). Here a block works like a small matrix-product
engine (Dao 2023, FlashAttention-2; the thread layout of a classic shared-memory SGEMM):

- **Tiles.** A block of 128 threads (four warps) owns a tile of ``bq`` query rows and walks
  the keys in tiles of ``bk``. Q, K and V tiles sit in shared memory, each row padded by
  one float so that threads reading a column hit different memory banks.
- **Register micro-tiles.** The threads form a ``ty`` x ``tx`` grid (16 x 8). Thread
  (y, x) computes the scores of rows y, y + ty, y + 2 ty, ... and columns x, x + tx, ...:
  a ``tm`` x ``tn`` micro-tile held in registers, built as a sum over d of outer products,
  so each value read from shared memory feeds ``tm`` or ``tn`` multiply-adds. It also owns
  the output columns x, x + tx, ... of its rows (``dn = D / tx`` of them).
- **Row statistics.** The ``tx`` threads of a row (neighbouring lanes of one warp) each see
  part of it. Per key tile they combine their partial maxima, so that all agree on the
  running max m: on a GPU by warp shuffles (:func:`_lane_reduce`), under the simulator,
  which has none, through shared memory; the tests run the one where each can run. The
  running sum l stays a per-thread partial (every thread of the row rescales by the same
  exp(m_old - m_new)) and is combined across the row once, at the end.
- **P V.** The probabilities go through shared memory (a thread needs a whole row of P
  and a whole column of V for its outputs): O += P V is a second micro-tile product.
- **Causal tiles.** Tiles wholly in the causal future are never visited (the loop stops at
  k_end, as in ``attention.tile_schedule``); only tiles that cross the diagonal (and the
  last, ragged tile) test each entry; the rest skip the test.
- **Backward** in two kernels, so that no two blocks add into the same memory and the result
  does not depend on scheduling. Both rebuild P = exp(S - M) from the saved row log-sum-exp
  M and form dS = P * (dP_drop - Delta), with dP = dO V^T and Delta = rowsum(dO * O) (from
  ``cuda_attention``'s small kernel). One block per key tile accumulates dK and dV over the
  query tiles (dV += P_drop^T dO, dK += scale dS^T Q, both micro-tile products); one block
  per query tile accumulates dQ over the key tiles (dQ += scale dS K) and writes dS into
  the bias gradient.

Static shared memory is limited to 48 KiB a block, which sets the tiles (:func:`tiles_for`):
at D = 64 the forward runs 64 x 32 tiles, at D = 128 32 x 16. All accumulators are local
arrays indexed only by loop counters of compile-time trip counts, which the compiler unrolls
into registers (``benchmarks/cuda_resources.py`` prints the figures: no spills at 64 and 128).

Not here: tensor cores (TF32 or half precision need ``mma`` instructions Numba does not
expose) and double buffering (Numba has no asynchronous copies to overlap a load with).
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

from . import _cuda, cuda_attention
from ._cuda import bind_cuda, contiguous, launch_stream

cuda = None  # numba.cuda once a kernel is built (see _cuda.bind_cuda)

THREADS = 128
TX = 8                      # threads sharing a row of scores: 8 neighbouring lanes of a warp
_SHARED_LIMIT = 48 * 1024   # static shared memory a block may declare
_FLOAT = 4                  # bytes of a float32
_CANDIDATES = ((64, 64), (64, 32), (32, 32), (32, 16), (16, 16))


class Tiles(NamedTuple):
    """The shape of one kernel's work: a block owns ``rows`` and walks ``cols`` at a time."""

    rows: int   # the block's own rows: queries (forward, dQ) or keys (dK/dV)
    cols: int   # the tile walked in the inner loop: keys (forward, dQ) or queries (dK/dV)
    ty: int     # thread rows; each thread holds rows // ty rows
    tx: int     # thread columns; each thread holds cols // tx columns and dim // tx outputs


def shared_bytes(kernel: str, dim: int, rows: int, cols: int) -> int:
    """Shared memory (bytes) of ``kernel`` ("forward", "dq" or "dkdv") at these tiles."""
    padded = dim + 1
    if kernel == "forward":    # Q, K, V tiles, P, the row maxima exchanged (simulator path)
        floats = rows * padded + 2 * cols * padded + rows * (cols + 1) + rows * TX
    elif kernel == "dq":       # Q, dO, K, V tiles, dS
        floats = 2 * rows * padded + 2 * cols * padded + rows * (cols + 1)
    elif kernel == "dkdv":     # K, V, Q, dO tiles, P^T, dS^T, M and Delta of the query tile
        floats = 2 * rows * padded + 2 * cols * padded + 2 * rows * (cols + 1) + 2 * cols
    else:
        raise ValueError(f"shared_bytes: kernel {kernel!r} is not 'forward', 'dq' or 'dkdv'")
    return floats * _FLOAT


@functools.lru_cache(maxsize=None)
def tiles_for(kernel: str, dim: int) -> Tiles:
    """The largest tiles of ``_CANDIDATES`` whose shared memory fits in 48 KiB."""
    ty = THREADS // TX
    for rows, cols in _CANDIDATES:
        if shared_bytes(kernel, dim, rows, cols) <= _SHARED_LIMIT:
            return Tiles(rows, cols, ty, TX)
    raise ValueError(f"flash attention: head size {dim} leaves no tile that fits 48 KiB of "
                     "shared memory; use cuda_attention for it")


def supported(dtype, dim: int) -> bool:
    """Whether this kernel runs the case: float32 compute (float16 and float32 inputs), D a
    multiple of 8 up to 128 (past that the accumulators no longer fit in registers)."""
    return _cuda.float_type(dtype) is np.float32 and dim % TX == 0 and 0 < dim <= 128


def use_shuffles() -> bool:
    """Whether the kernels combine row statistics by warp shuffles (on a GPU) or through
    shared memory (under Numba's simulator, which has no shuffles)."""
    from numba import config

    return not config.ENABLE_CUDASIM


@functools.lru_cache(maxsize=None)
def _lane_reduce(lanes, is_max):
    """A device function: the max (or sum) of a value over each group of ``lanes``
    neighbouring lanes of a warp, in log2(lanes) butterfly steps (lane l swaps with lane
    l xor offset); every lane of the warp calls it, so the full-warp mask holds."""
    bind_cuda(globals())

    @cuda.jit(device=True)
    def reduce(value):
        offset = lanes // 2
        while offset > 0:
            other = cuda.shfl_xor_sync(0xFFFFFFFF, value, offset)
            value = max(value, other) if is_max else value + other
            offset //= 2
        return value

    return reduce


@functools.lru_cache(maxsize=None)
def _forward_kernel(dim, rows, cols, ty, tx, shuffle):
    keep = cuda_attention._device_keep()
    visible = cuda_attention._device_visible()
    lane_max = _lane_reduce(tx, True)
    lane_sum = _lane_reduce(tx, False)
    bind_cuda(globals())
    ft = np.float32
    bq, bk = rows, cols
    bk_padded = bk + 1
    red_rows = 1 if shuffle else bq
    tm, tn, dn = bq // ty, bk // tx, dim // tx
    threads = ty * tx
    # Shared tiles get one float more per row, so that the threads reading a column of a
    # tile hit different memory banks (shapes must be constants here, hence named).
    padded = dim + 1

    @cuda.jit
    def forward(q, k, v, tq, tk, n_heads, mask, has_mask, bias, has_bias, scale, causal,
                dropout_p, hashed_seed, threshold, o, lse):
        # q, o: (BH*Tq, D); k, v: (BH*Tk, D); lse: (BH*Tq,)
        q_s = cuda.shared.array((bq, padded), ft)     # scale Q of this block's rows
        k_s = cuda.shared.array((bk, padded), ft)
        v_s = cuda.shared.array((bk, padded), ft)
        p_s = cuda.shared.array((bq, bk_padded), ft)      # P_drop of the current tile
        red = cuda.shared.array((red_rows, tx), ft)    # partial row maxima (then sums)
        s_r = cuda.local.array((tm, tn), ft)           # this thread's scores
        acc = cuda.local.array((tm, dn), ft)           # its share of sum exp(S - m) V
        m_r = cuda.local.array(tm, ft)                 # running max of each of its rows
        l_r = cuda.local.array(tm, ft)                 # its part of the running sum
        alpha_r = cuda.local.array(tm, ft)
        mx_r = cuda.local.array(tm, ft)                # the tile's row maxima (shuffles)
        q_reg = cuda.local.array(tm, ft)
        k_reg = cuda.local.array(tn, ft)
        n_qb = (tq + bq - 1) // bq
        bh = cuda.blockIdx.x // n_qb
        i0 = (cuda.blockIdx.x % n_qb) * bq
        nq = min(bq, tq - i0)
        b = bh // n_heads
        h = bh % n_heads
        tid = cuda.threadIdx.x
        y = tid // tx
        x = tid % tx
        offset = tk - tq
        neg_inf = ft(-math.inf)
        zero = ft(0.0)
        sc = ft(scale)
        inv_keep = ft(1.0 / (1.0 - dropout_p))
        bb = b if bias.shape[0] > 1 else 0
        for idx in range(tid, bq * dim, threads):
            r = idx // dim
            d = idx % dim
            q_s[r, d] = q[bh * tq + i0 + r, d] * sc if r < nq else zero
        for a in range(tm):
            m_r[a] = neg_inf
            l_r[a] = zero
            for e in range(dn):
                acc[a, e] = zero
        # Keys at or past k_end are in the causal future of every row of this block.
        k_end = min(tk, i0 + nq + offset) if causal else tk
        for j0 in range(0, k_end, bk):
            nk = min(bk, k_end - j0)
            for idx in range(tid, bk * dim, threads):
                c = idx // dim
                d = idx % dim
                k_s[c, d] = k[bh * tk + j0 + c, d] if c < nk else zero
                v_s[c, d] = v[bh * tk + j0 + c, d] if c < nk else zero
            cuda.syncthreads()
            # S micro-tile = (scale Q) K^T, one outer product per d.
            for a in range(tm):
                for c in range(tn):
                    s_r[a, c] = zero
            for d in range(dim):
                for a in range(tm):
                    q_reg[a] = q_s[y + ty * a, d]
                for c in range(tn):
                    k_reg[c] = k_s[x + tx * c, d]
                for a in range(tm):
                    for c in range(tn):
                        s_r[a, c] += q_reg[a] * k_reg[c]
            # Only a tile crossing the diagonal, or the last one, tests each entry's position.
            ragged = j0 + bk > k_end or (causal and j0 + bk - 1 > i0 + offset)
            for a in range(tm):
                i = min(i0 + y + ty * a, tq - 1)   # rows past Tq compute, but are never written
                row_max = neg_inf
                for c in range(tn):
                    j = j0 + x + tx * c
                    s = s_r[a, c]
                    if ragged and (j >= k_end or (causal and j > i + offset)):
                        s = neg_inf
                    elif has_mask and not visible(mask, True, False, b, h, i, j, offset):
                        s = neg_inf
                    elif has_bias:
                        s += bias[bb, h, i, j]
                    s_r[a, c] = s
                    row_max = max(row_max, s)
                if shuffle:
                    mx_r[a] = lane_max(row_max)
                else:
                    red[y + ty * a, x] = row_max
            if not shuffle:
                cuda.syncthreads()
            for a in range(tm):
                r = y + ty * a
                m_new = max(m_r[a], mx_r[a]) if shuffle else m_r[a]
                if not shuffle:
                    for t in range(tx):
                        m_new = max(m_new, red[r, t])
                # A row that has seen no visible key yet keeps m = -inf and adds nothing.
                alpha = math.exp(m_r[a] - m_new) if m_new > neg_inf else ft(1.0)
                m_r[a] = m_new
                alpha_r[a] = alpha
                part = l_r[a] * alpha
                for c in range(tn):
                    p = math.exp(s_r[a, c] - m_new) if m_new > neg_inf else zero
                    part += p
                    if dropout_p > 0.0:
                        counter = np.uint64((bh * tq + i0 + r) * tk + j0 + x + tx * c)
                        p = p * inv_keep if keep(hashed_seed, counter, threshold) else zero
                    p_s[r, x + tx * c] = p
                l_r[a] = part
            cuda.syncthreads()
            # O micro-tile: acc = alpha acc + P_drop V.
            for a in range(tm):
                for e in range(dn):
                    acc[a, e] *= alpha_r[a]
            for c in range(nk):
                for a in range(tm):
                    q_reg[a] = p_s[y + ty * a, c]
                for e in range(dn):
                    v_c = v_s[c, x + tx * e]
                    for a in range(tm):
                        acc[a, e] += q_reg[a] * v_c
            cuda.syncthreads()
        # The row sums: each thread's part, added across the tx threads of the row.
        for a in range(tm):
            if shuffle:
                l_r[a] = lane_sum(l_r[a])
            else:
                red[y + ty * a, x] = l_r[a]
        if not shuffle:
            cuda.syncthreads()
        for a in range(tm):
            r = y + ty * a
            if r < nq:
                row = bh * tq + i0 + r
                total = l_r[a]
                if not shuffle:
                    total = zero
                    for t in range(tx):
                        total += red[r, t]
                if total > zero:
                    inv = ft(1.0) / total
                    for e in range(dn):
                        o[row, x + tx * e] = acc[a, e] * inv
                    if x == 0:
                        lse[row] = m_r[a] + math.log(total)
                else:   # no visible key: O = 0 and M = -inf, as in the reference
                    for e in range(dn):
                        o[row, x + tx * e] = zero
                    if x == 0:
                        lse[row] = neg_inf

    return forward


@functools.lru_cache(maxsize=None)
def _dkdv_kernel(dim, rows, cols, ty, tx):
    keep = cuda_attention._device_keep()
    visible = cuda_attention._device_visible()
    bind_cuda(globals())
    ft = np.float32
    bk, bq = rows, cols
    bq_padded = bq + 1
    tm, tn, dn = bk // ty, bq // tx, dim // tx
    threads = ty * tx
    # Shared tiles get one float more per row, so that the threads reading a column of a
    # tile hit different memory banks (shapes must be constants here, hence named).
    padded = dim + 1

    @cuda.jit
    def dkdv(q, k, v, do, lse, delta, tq, tk, n_heads, mask, has_mask, bias, has_bias, scale,
             causal, dropout_p, hashed_seed, threshold, dk, dv):
        # One block per key tile: dV = sum_i P_drop_ij dO_i, dK = scale sum_i dS_ij Q_i over
        # the query tiles; the thread micro-tiles are S^T (keys x queries).
        k_s = cuda.shared.array((bk, padded), ft)
        v_s = cuda.shared.array((bk, padded), ft)
        q_s = cuda.shared.array((bq, padded), ft)
        do_s = cuda.shared.array((bq, padded), ft)
        pt_s = cuda.shared.array((bk, bq_padded), ft)     # P_drop^T of the tile
        dst_s = cuda.shared.array((bk, bq_padded), ft)    # scale dS^T of the tile
        m_s = cuda.shared.array(bq, ft)
        delta_s = cuda.shared.array(bq, ft)
        s_r = cuda.local.array((tm, tn), ft)
        dp_r = cuda.local.array((tm, tn), ft)
        dk_r = cuda.local.array((tm, dn), ft)
        dv_r = cuda.local.array((tm, dn), ft)
        a_reg = cuda.local.array(tm, ft)
        b_reg = cuda.local.array(tm, ft)
        n_kb = (tk + bk - 1) // bk
        n_qt = (tq + bq - 1) // bq
        bh = cuda.blockIdx.x // n_kb
        j0 = (cuda.blockIdx.x % n_kb) * bk
        nk = min(bk, tk - j0)
        b = bh // n_heads
        h = bh % n_heads
        tid = cuda.threadIdx.x
        y = tid // tx
        x = tid % tx
        offset = tk - tq
        zero = ft(0.0)
        pos_inf = ft(math.inf)
        neg_inf = ft(-math.inf)
        sc = ft(scale)
        inv_keep = ft(1.0 / (1.0 - dropout_p))
        bb = b if bias.shape[0] > 1 else 0
        for idx in range(tid, bk * dim, threads):
            c = idx // dim
            d = idx % dim
            k_s[c, d] = k[bh * tk + j0 + c, d] if c < nk else zero
            v_s[c, d] = v[bh * tk + j0 + c, d] if c < nk else zero
        for a in range(tm):
            for e in range(dn):
                dk_r[a, e] = zero
                dv_r[a, e] = zero
        # Queries before j0 - offset see none of this block's keys under a causal mask.
        qt_first = max(j0 - offset, 0) // bq if causal else 0
        for qt in range(qt_first, n_qt):
            i0 = qt * bq
            nq = min(bq, tq - i0)
            for idx in range(tid, bq * dim, threads):
                r = idx // dim
                d = idx % dim
                q_s[r, d] = q[bh * tq + i0 + r, d] if r < nq else zero
                do_s[r, d] = do[bh * tq + i0 + r, d] if r < nq else zero
            for r in range(tid, bq, threads):
                # M = +inf makes P = exp(S - M) = 0 for rows past Tq and for rows that see
                # no key (M = -inf): neither has a gradient.
                m = lse[bh * tq + i0 + r] if r < nq else neg_inf
                m_s[r] = pos_inf if m == neg_inf else m
                delta_s[r] = delta[bh * tq + i0 + r] if r < nq else zero
            cuda.syncthreads()
            # S^T = K Q^T and dP^T = V dO^T micro-tiles.
            for a in range(tm):
                for c in range(tn):
                    s_r[a, c] = zero
                    dp_r[a, c] = zero
            for d in range(dim):
                for a in range(tm):
                    a_reg[a] = k_s[y + ty * a, d]
                    b_reg[a] = v_s[y + ty * a, d]
                for c in range(tn):
                    q_d = q_s[x + tx * c, d]
                    do_d = do_s[x + tx * c, d]
                    for a in range(tm):
                        s_r[a, c] += a_reg[a] * q_d
                        dp_r[a, c] += b_reg[a] * do_d
            ragged = j0 + bk > tk or (causal and j0 + bk - 1 > i0 + offset)
            for a in range(tm):
                j = j0 + y + ty * a
                for c in range(tn):
                    r = x + tx * c
                    i = min(i0 + r, tq - 1)
                    p = zero
                    f = ft(1.0)
                    hidden = ragged and (j >= tk or (causal and j > i + offset))
                    if not hidden and has_mask:
                        hidden = not visible(mask, True, False, b, h, i, j, offset)
                    if not hidden:
                        s = s_r[a, c] * sc
                        if has_bias:
                            s += bias[bb, h, i, j]
                        p = math.exp(s - m_s[r])
                        if dropout_p > 0.0:
                            counter = np.uint64((bh * tq + i0 + r) * tk + j)
                            f = inv_keep if keep(hashed_seed, counter, threshold) else zero
                    pt_s[y + ty * a, r] = p * f
                    dst_s[y + ty * a, r] = p * (dp_r[a, c] * f - delta_s[r]) * sc
            cuda.syncthreads()
            # dV += P_drop^T dO and dK += (scale dS^T) Q over this query tile.
            for r in range(nq):
                for a in range(tm):
                    a_reg[a] = pt_s[y + ty * a, r]
                    b_reg[a] = dst_s[y + ty * a, r]
                for e in range(dn):
                    do_e = do_s[r, x + tx * e]
                    q_e = q_s[r, x + tx * e]
                    for a in range(tm):
                        dv_r[a, e] += a_reg[a] * do_e
                        dk_r[a, e] += b_reg[a] * q_e
            cuda.syncthreads()
        for a in range(tm):
            c = y + ty * a
            if c < nk:
                for e in range(dn):
                    dk[bh * tk + j0 + c, x + tx * e] = dk_r[a, e]
                    dv[bh * tk + j0 + c, x + tx * e] = dv_r[a, e]

    return dkdv


@functools.lru_cache(maxsize=None)
def _dq_kernel(dim, rows, cols, ty, tx):
    keep = cuda_attention._device_keep()
    visible = cuda_attention._device_visible()
    bind_cuda(globals())
    ft = np.float32
    bq, bk = rows, cols
    bk_padded = bk + 1
    tm, tn, dn = bq // ty, bk // tx, dim // tx
    threads = ty * tx
    # Shared tiles get one float more per row, so that the threads reading a column of a
    # tile hit different memory banks (shapes must be constants here, hence named).
    padded = dim + 1

    @cuda.jit
    def dq_kernel(q, k, v, do, lse, delta, tq, tk, n_heads, mask, has_mask, bias, has_bias,
                  scale, causal, dropout_p, hashed_seed, threshold, dq, dbias):
        # One block per query tile: dQ = scale sum_j dS_ij K_j over the key tiles; dbias = dS.
        q_s = cuda.shared.array((bq, padded), ft)
        do_s = cuda.shared.array((bq, padded), ft)
        k_s = cuda.shared.array((bk, padded), ft)
        v_s = cuda.shared.array((bk, padded), ft)
        ds_s = cuda.shared.array((bq, bk_padded), ft)     # scale dS of the tile
        s_r = cuda.local.array((tm, tn), ft)
        dp_r = cuda.local.array((tm, tn), ft)
        dq_r = cuda.local.array((tm, dn), ft)
        m_r = cuda.local.array(tm, ft)
        delta_r = cuda.local.array(tm, ft)
        a_reg = cuda.local.array(tm, ft)
        b_reg = cuda.local.array(tm, ft)
        n_qb = (tq + bq - 1) // bq
        bh = cuda.blockIdx.x // n_qb
        i0 = (cuda.blockIdx.x % n_qb) * bq
        nq = min(bq, tq - i0)
        b = bh // n_heads
        h = bh % n_heads
        tid = cuda.threadIdx.x
        y = tid // tx
        x = tid % tx
        offset = tk - tq
        zero = ft(0.0)
        pos_inf = ft(math.inf)
        neg_inf = ft(-math.inf)
        sc = ft(scale)
        inv_keep = ft(1.0 / (1.0 - dropout_p))
        bb = b if bias.shape[0] > 1 else 0
        shared_bias = dbias.shape[0] == 1
        for idx in range(tid, bq * dim, threads):
            r = idx // dim
            d = idx % dim
            q_s[r, d] = q[bh * tq + i0 + r, d] if r < nq else zero
            do_s[r, d] = do[bh * tq + i0 + r, d] if r < nq else zero
        for a in range(tm):
            r = y + ty * a
            # M = +inf: P = 0 for rows past Tq and rows that see no key (M = -inf).
            m = lse[bh * tq + i0 + r] if r < nq else neg_inf
            m_r[a] = pos_inf if m == neg_inf else m
            delta_r[a] = delta[bh * tq + i0 + r] if r < nq else zero
            for e in range(dn):
                dq_r[a, e] = zero
        k_end = min(tk, i0 + nq + offset) if causal else tk
        for j0 in range(0, k_end, bk):
            nk = min(bk, k_end - j0)
            for idx in range(tid, bk * dim, threads):
                c = idx // dim
                d = idx % dim
                k_s[c, d] = k[bh * tk + j0 + c, d] if c < nk else zero
                v_s[c, d] = v[bh * tk + j0 + c, d] if c < nk else zero
            cuda.syncthreads()
            # S = Q K^T and dP = dO V^T micro-tiles.
            for a in range(tm):
                for c in range(tn):
                    s_r[a, c] = zero
                    dp_r[a, c] = zero
            for d in range(dim):
                for a in range(tm):
                    a_reg[a] = q_s[y + ty * a, d]
                    b_reg[a] = do_s[y + ty * a, d]
                for c in range(tn):
                    k_d = k_s[x + tx * c, d]
                    v_d = v_s[x + tx * c, d]
                    for a in range(tm):
                        s_r[a, c] += a_reg[a] * k_d
                        dp_r[a, c] += b_reg[a] * v_d
            ragged = j0 + bk > k_end or (causal and j0 + bk - 1 > i0 + offset)
            for a in range(tm):
                r = y + ty * a
                i = min(i0 + r, tq - 1)
                for c in range(tn):
                    j = j0 + x + tx * c
                    ds = zero
                    hidden = ragged and (j >= k_end or (causal and j > i + offset))
                    if not hidden and has_mask:
                        hidden = not visible(mask, True, False, b, h, i, j, offset)
                    if not hidden:
                        s = s_r[a, c] * sc
                        if has_bias:
                            s += bias[bb, h, i, j]
                        p = math.exp(s - m_r[a])
                        dp = dp_r[a, c]
                        if dropout_p > 0.0:
                            counter = np.uint64((bh * tq + i0 + r) * tk + j)
                            dp = dp * inv_keep if keep(hashed_seed, counter, threshold) else zero
                        ds = p * (dp - delta_r[a])
                        if has_bias and r < nq:
                            if shared_bias:
                                # Every batch entry adds into the one bias of head h.
                                cuda.atomic.add(dbias, (0, h, i, j), ds)
                            else:
                                dbias[b, h, i, j] = ds
                    ds_s[r, x + tx * c] = ds * sc
            cuda.syncthreads()
            # dQ += (scale dS) K over this key tile.
            for c in range(nk):
                for a in range(tm):
                    a_reg[a] = ds_s[y + ty * a, c]
                for e in range(dn):
                    k_e = k_s[c, x + tx * e]
                    for a in range(tm):
                        dq_r[a, e] += a_reg[a] * k_e
            cuda.syncthreads()
        for a in range(tm):
            r = y + ty * a
            if r < nq:
                for e in range(dn):
                    dq[bh * tq + i0 + r, x + tx * e] = dq_r[a, e]

    return dq_kernel


# ---------------------------------------------------------------------------------------
# Python-side wrappers: the arguments of cuda_attention, which runs what this kernel does not
# ---------------------------------------------------------------------------------------

def attention_forward(q, k, v, mask=None, bias=None, scale=None, causal=False, dropout_p=0.0,
                      seed=None):
    """O and the row log-sum-exp on the GPU; see ``attention.attention_forward``.

    Cases outside :func:`supported` (float64, other head sizes) run ``cuda_attention``.
    """
    if not supported(q.dtype, q.shape[-1] if q.ndim else 0):
        return cuda_attention.attention_forward(q, k, v, mask, bias, scale, causal, dropout_p, seed)
    (xp, B, H, tq, tk, dim, ft, scale, mask4, has_mask, bias4, has_bias, p, hashed,
     threshold) = cuda_attention._common(q, k, v, mask, bias, scale, dropout_p, seed)
    if not (B * H * tq * dim and tk):
        return cuda_attention.attention_forward(q, k, v, mask, bias, scale, causal, dropout_p, seed)
    o = _cuda.empty(xp, (B * H * tq, dim), ft)
    lse = _cuda.empty(xp, B * H * tq, ft)
    t = tiles_for("forward", dim)
    grid = B * H * (-(-tq // t.rows))
    _forward_kernel(dim, *t, use_shuffles())[grid, THREADS, launch_stream(q)](
        contiguous(q, ft, xp).reshape(-1, dim), contiguous(k, ft, xp).reshape(-1, dim),
        contiguous(v, ft, xp).reshape(-1, dim), tq, tk, H, mask4, has_mask, bias4,
        has_bias, scale, bool(causal), p, hashed, threshold, o, lse)
    return (o.reshape(B, H, tq, dim).astype(q.dtype, copy=False),   # (BH*Tq, D) -> (B, H, Tq, D)
            lse.reshape(B, H, tq))


def attention_backward(q, k, v, o, lse, do, mask=None, bias=None, scale=None, causal=False,
                       dropout_p=0.0, seed=None, *, out=None):
    """(dq, dk, dv, dbias) on the GPU; see ``attention.attention_backward``.

    Cases outside :func:`supported` run ``cuda_attention``.
    """
    args = (mask, bias, scale, causal, dropout_p, seed)
    if not supported(q.dtype, q.shape[-1] if q.ndim else 0):
        return cuda_attention.attention_backward(q, k, v, o, lse, do, *args, out=out)
    (xp, B, H, tq, tk, dim, ft, scale, mask4, has_mask, bias4, has_bias, p, hashed,
     threshold) = cuda_attention._common(q, k, v, mask, bias, scale, dropout_p, seed)
    n_bh = B * H
    if not (n_bh * tq * dim and tk):
        return cuda_attention.attention_backward(q, k, v, o, lse, do, *args, out=out)
    stream = launch_stream(q)
    q2 = contiguous(q, ft, xp).reshape(-1, dim)
    k2 = contiguous(k, ft, xp).reshape(-1, dim)
    v2 = contiguous(v, ft, xp).reshape(-1, dim)
    o2 = contiguous(o, ft, xp).reshape(-1, dim)
    do2 = contiguous(do, ft, xp).reshape(-1, dim)
    lse1 = contiguous(lse, ft, xp).reshape(-1)
    dq = _cuda.empty(xp, (n_bh * tq, dim), ft)
    dk = _cuda.empty(xp, (n_bh * tk, dim), ft)
    dv = _cuda.empty(xp, (n_bh * tk, dim), ft)
    # Tiles a causal mask hides are never visited, so their bias gradient must start at 0.
    dbias = xp.zeros(bias4.shape, ft) if has_bias else xp.zeros((1, 1, 1, 1), ft)
    delta = _cuda.empty(xp, n_bh * tq, ft)
    cuda_attention._delta_kernel(ft)[-(-(n_bh * tq) // 128), 128, stream](do2, o2, delta)
    kernel_args = (q2, k2, v2, do2, lse1, delta, tq, tk, H, mask4, has_mask, bias4, has_bias,
                   scale, bool(causal), p, hashed, threshold)
    t = tiles_for("dkdv", dim)
    _dkdv_kernel(dim, *t)[n_bh * (-(-tk // t.rows)), THREADS, stream](*kernel_args, dk, dv)
    t = tiles_for("dq", dim)
    _dq_kernel(dim, *t)[n_bh * (-(-tq // t.rows)), THREADS, stream](*kernel_args, dq, dbias)

    def back(a):  # (BH*T, D) -> (B, H, T, D) in the caller's dtype
        return a.reshape(B, H, -1, dim).astype(q.dtype, copy=False)

    return cuda_attention.into(out, (back(dq), back(dk), back(dv),
                                     dbias.astype(q.dtype, copy=False) if has_bias else None))
