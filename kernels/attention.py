"""Scaled dot-product attention on the CPU, the FlashAttention-2 way (Dao 2023).

For one batch entry and head, with queries Q (Tq, D), keys K and values V (Tk, D):

    S = scale Q K^T + bias            (masked and causal entries set to -inf)
    P = softmax(S) row-wise,  O = (P * keep / (1 - p)) V       (keep: the dropout mask)

The reference builds the whole (Tq, Tk) matrix S. This kernel never does: it walks the keys
in tiles and keeps, for each query row, a running maximum m, a running sum l of exp(S - m)
and an accumulator of exp(S - m) V, rescaling both by exp(m_old - m_new) whenever the
maximum grows (the "online softmax", Milakov and Gimelshein 2018). Only the row
log-sum-exp M = m + log l is saved for the backward pass, which rebuilds P = exp(S - M)
one tile at a time:

    Delta_i = sum_d dO_id O_id            (= sum_j P_ij dP_ij, even with dropout in O)
    dV  = P_drop^T dO
    dP  = (dO V^T) * keep / (1 - p)
    dS  = P * (dP - Delta)                 (also the bias gradient)
    dQ  = scale dS K,     dK = scale dS^T Q

So extra memory grows with T (the tiles, M and Delta), not T^2. With a bias the
bias gradient is itself (Tq, Tk), which is the price of asking for it.

Engineering:
- The tile products go to BLAS from inside the kernel (``blas.kernel_gemm``: the same MKL the
  linear layers use where they use it, else SciPy's OpenBLAS), and everything elementwise is
  Numba code that LLVM vectorises, including the exponential (``_cpu.fast_exp``). BLAS reads
  each tile where it lies, through a leading dimension: the heads the attention layer hands
  over are views of (B, T, H, D) projections, and they are never copied into (B, H, T, D)
  order; nor are the gradients, which are written into (B, T, H, D) memory. The scale rides
  on the products (alpha) and the gradients' sums happen inside them (beta = 1).
- Tiles are block_q x block_k (``default_tiles``): 64 x 64 on OpenBLAS, which threads larger
  products itself; on MKL, which is told to stay on the kernel's thread, 256 x 256 where no
  causal mask lets tiles be skipped.
- The forward runs (batch*head, query tile) units in parallel, dealt to the threads in
  turn (``_cpu.run_parallel``), so that under a causal mask, where later query tiles
  cost more, each thread gets a similar amount of work.
- The backward walks key tiles in the outer loop (setting, then adding into, the key tile's
  rows of dK and dV) and query tiles inside, adding into dQ. A unit owns a (batch*head)
  "lane" and a residue class of key tiles; when there are fewer lanes than threads, key tiles
  are dealt to several groups, each with its own dQ buffer, summed at the end. No two threads write the same
  memory, so the result does not depend on scheduling.
- Causal masking is bottom-right aligned: query i sees key j iff j <= i + Tk - Tq. Tiles
  wholly above that diagonal are skipped; tiles crossing it are masked per row.
- Dropout decisions come from the counter-based hash in ``rng``, evaluated per entry in
  forward and backward alike, so no mask is ever stored.
"""
from __future__ import annotations

import math

import numpy as np
from numba import get_num_threads, njit

from . import blas, rng
from ._cpu import FASTMATH, compute_dtype, fast_exp, readonly, run_parallel
from .blas import NO_TRANS, TRANS, kernel_blas, kernel_gemm, kernel_threads

BLOCK_Q = 64
# OpenBLAS runs a GEMM on one thread while m*n*k <= 262144 (its default threshold); larger
# tile products would start BLAS threads inside our own parallel loop and oversubscribe.
_GEMM_SINGLE_THREAD = 262144
# MKL is told to stay on the calling thread (blas.kernel_threads), so its tiles may be wide.
WIDE_TILE = 256

_keep = njit(inline="always", cache=True)(rng.keep_scalar)


def block_k_for(head_dim: int, block_q: int = BLOCK_Q) -> int:
    """The key tile for OpenBLAS: 64 keys, fewer for wide heads, so that each tile GEMM stays
    single-threaded."""
    bk = 64
    while bk > 8 and block_q * bk * max(head_dim, 1) > _GEMM_SINGLE_THREAD:
        bk //= 2
    return bk


def default_tiles(head_dim: int, causal: bool) -> tuple[int, int]:
    """(block_q, block_k): the tiles the kernels use unless told otherwise.

    On OpenBLAS, 64 queries by ``block_k_for`` keys. On MKL, which runs a tile's product on
    the kernel's thread whatever its size, wider tiles where nothing is skipped: 256 x 256
    without a causal mask (a head of 256 tokens is one tile, and each product is 256 x 256 x D,
    where MKL runs near its peak; measured on one thread at B 4, H 12, T 256, D 64, forward
    and backward: 41 ms against 49 ms with 64 x 64 tiles, PyTorch's 39 ms), and 64 x 64 under
    one, where small tiles let both passes skip most of the hidden half (31 ms against 41 ms
    with 256 x 256).
    """
    if blas.library() != "mkl":
        return BLOCK_Q, block_k_for(head_dim)
    return (BLOCK_Q, BLOCK_Q) if causal else (WIDE_TILE, WIDE_TILE)


SKIPPED, FULL, MASKED = 0, 1, 2


def tile_schedule(tq: int, tk: int, causal: bool = False, *, block_q: int = BLOCK_Q,
                  block_k: int = 64) -> np.ndarray:
    """Which (query tile, key tile) pairs the kernel computes: an (n_qb, n_kb) int array.

    SKIPPED: the causal mask hides the whole tile, so neither pass touches it (the forward
    stops each query tile at k_end, the backward starts each key tile at qb_first).
    FULL: computed, every entry visible. MASKED: computed, but the tile crosses the causal
    diagonal (query i sees key j iff j <= i + Tk - Tq), so some entries are set to -inf.
    This states the passes' loop bounds without running them (the book draws it).
    """
    n_qb, n_kb = -(-tq // block_q), -(-tk // block_k)
    offset = tk - tq
    out = np.full((n_qb, n_kb), FULL, np.int64)
    if not causal:
        return out
    for qb in range(n_qb):
        i0 = qb * block_q
        nq = min(block_q, tq - i0)
        k_end = min(tk, i0 + nq + offset)             # the forward's bound for this query tile
        for kb in range(n_kb):
            j0 = kb * block_k
            nk = min(block_k, tk - j0)
            if j0 >= k_end:
                out[qb, kb] = SKIPPED
            elif j0 + nk - 1 > i0 + offset:           # the last key is past the first row's diagonal
                out[qb, kb] = MASKED
    return out


# ---------------------------------------------------------------------------------------
# Tiles are kept transposed: st[c, r] = S[i0 + r, j0 + c], one row per key and one column
# per query. Everything a query row needs (its running max, sum, shift, Delta) is then a
# vector over the contiguous axis, and the row-wise max and sums of the softmax become
# element-wise updates of such vectors, which vectorise, instead of one short horizontal
# reduction per row, which does not.
# ---------------------------------------------------------------------------------------

@njit(fastmath=FASTMATH, cache=True, inline="always")
def _add_block_transposed(dst, src, i0, j0, bi, bj):
    for i in range(i0, i0 + bi):
        for j in range(j0, j0 + bj):
            dst[i, j] += src[j, i]


@njit(nogil=True, fastmath=FASTMATH, cache=True)
def _add_transposed(dst, src):
    """dst (m, n) += src^T for src (n, m), in 16 x 16 blocks: a block of each is a few cache
    lines, where a row of one against a column of the other, in a 256-wide tile, touches a
    new line at every step (3.5x slower). Full blocks have constant bounds, which LLVM
    unrolls and vectorises."""
    m, n = dst.shape
    for i0 in range(0, m, 16):
        bi = min(16, m - i0)
        for j0 in range(0, n, 16):
            bj = min(16, n - j0)
            if bi == 16 and bj == 16:
                _add_block_transposed(dst, src, i0, j0, 16, 16)
            else:
                _add_block_transposed(dst, src, i0, j0, bi, bj)


@njit(fastmath=FASTMATH, cache=True)
def _finish_scores(st, i0, j0, b, h, mask, has_mask, bias, has_bias, causal, offset):
    """In place on S^T (nk, nq): add the bias; -inf where key j may not be seen by query i."""
    nk, nq = st.shape
    neg_inf = st.dtype.type(-np.inf)
    if has_bias:
        bb = b if bias.shape[0] > 1 else 0
        _add_transposed(st, bias[bb, h, i0:i0 + nq, j0:j0 + nk])
    if has_mask:
        mb = b if mask.shape[0] > 1 else 0
        mh = h if mask.shape[1] > 1 else 0
        wide = mask.shape[3] > 1
        if mask.shape[2] == 1:
            # One mask row for every query (padding): hide whole keys.
            mrow = mask[mb, mh, 0]
            for c in range(nk):
                if not mrow[j0 + c if wide else 0]:
                    st[c, :] = neg_inf
        else:
            for r in range(nq):
                mrow = mask[mb, mh, i0 + r]
                for c in range(nk):
                    if not mrow[j0 + c if wide else 0]:
                        st[c, r] = neg_inf
    if causal:
        # Key j is in the future of query i when j > i + offset, i.e. r < j - offset - i0.
        for c in range(nk):
            for r in range(min(max(j0 + c - offset - i0, 0), nq)):
                st[c, r] = neg_inf


@njit(fastmath=FASTMATH, cache=True)
def _dropout_factors(ft, row0, tk, j0, hashed_seed, threshold, inv_keep):
    """ft[c, r] = keep(row0 + r, j0 + c) / (1 - p), rows counted as bh * Tq + i."""
    zero = ft.dtype.type(0.0)
    nk, nq = ft.shape
    for c in range(nk):
        for r in range(nq):
            counter = np.uint64((row0 + r) * tk + j0 + c)
            ft[c, r] = inv_keep if _keep(hashed_seed, counter, threshold) else zero


# ---------------------------------------------------------------------------------------
# Where a head's rows lie. The kernels read Q, K, V and dO, and write dQ, dK and dV, in
# whatever layout the caller's arrays have, as long as each row of D numbers is contiguous:
# the attention layer's heads are views of (B, T, H, D) projections, whose rows (b, h, i)
# have stride H D, and BLAS reads them there through its leading dimension. A "rows" array
# [address, stride_b, stride_h, stride_t] (strides in elements) describes one such array.
# ---------------------------------------------------------------------------------------

@njit(nogil=True, cache=True, inline="always")
def _row(rows, b, h, i, itemsize):
    """The address of row i of head (b, h)."""
    return rows[0] + (b * rows[1] + h * rows[2] + i * rows[3]) * itemsize


# ---------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------

@njit(nogil=True, fastmath=FASTMATH, cache=True)
def _forward(first, stop, step, blas_fns, q, k, v, tq, tk, n_heads, mask, has_mask, bias,
             has_bias, scale, causal, dropout_p, hashed_seed, threshold, block_q, block_k, o,
             lse):
    """Forward units first, first + step, ... < stop; unit u is query tile u % n_qb of
    batch*head u // n_qb, and writes only its own rows of o and lse."""
    # q: rows (b, h, i) of D; k, v: rows (b, h, j) of D (rows arrays, see _row);
    # o: (B*Tq*H, D), rows (b, i, h): the heads side by side, as the output projection reads them;
    # lse: (BH*Tq,)
    dim = o.shape[1]
    size = o.itemsize
    n_qb = (tq + block_q - 1) // block_q
    dt = o.dtype.type
    sc = dt(scale)
    neg_inf = dt(-np.inf)
    pos_inf = dt(np.inf)
    inv_keep = dt(1.0 / (1.0 - dropout_p))
    offset = tk - tq
    previous_threads = kernel_threads(blas_fns, 1)      # this thread's products on this thread
    m = np.empty(block_q, o.dtype)           # running max of each query row
    l = np.empty(block_q, o.dtype)           # running sum of exp(S - m)
    alpha = np.empty(block_q, o.dtype)       # exp(m_old - m_new), rescales l and acc
    shift = np.empty(block_q, o.dtype)
    tile_sum = np.empty(block_q, o.dtype)
    acc_buf = np.empty(block_q * dim, o.dtype)
    st_buf = np.empty(block_k * block_q, o.dtype)
    pt_buf = np.empty(block_k * block_q, o.dtype)
    ft_buf = np.empty(block_k * block_q, o.dtype)
    for u in range(first, stop, step):
        bh = u // n_qb
        qb = u % n_qb
        b = bh // n_heads
        h = bh % n_heads
        i0 = qb * block_q
        nq = min(block_q, tq - i0)
        row0 = bh * tq + i0
        q_tile = _row(q, b, h, i0, size)                               # (nq, D)
        m[:] = neg_inf
        l[:] = 0.0
        acc = acc_buf[:nq * dim].reshape((nq, dim))                    # running sum of exp(S - m) V
        acc[:] = 0.0
        # Keys at or beyond k_end are invisible to every row of this tile.
        k_end = min(tk, i0 + nq + offset) if causal else tk
        for j0 in range(0, max(k_end, 0), block_k):
            nk = min(block_k, k_end - j0)
            k_tile = _row(k, b, h, j0, size)                           # (nk, D)
            v_tile = _row(v, b, h, j0, size)
            st = st_buf[:nk * nq].reshape((nk, nq))
            pt = pt_buf[:nk * nq].reshape((nk, nq))
            # S^T = scale K Q^T: (nk, D) x (D, nq)
            kernel_gemm(blas_fns, NO_TRANS, TRANS, nk, nq, dim, sc, k_tile, k[3], q_tile, q[3],
                        dt(0.0), st.ctypes.data, nq)
            # Only tiles with a bias, a mask, or keys past the causal diagonal need more.
            if has_bias or has_mask or (causal and j0 + nk - 1 > i0 + offset):
                _finish_scores(st, i0, j0, b, h, mask, has_mask, bias, has_bias, causal,
                               offset)
            # New running max per query row (a column of S^T).
            alpha[:nq] = m[:nq]
            for c in range(nk):
                for r in range(nq):
                    m[r] = st[c, r] if st[c, r] > m[r] else m[r]
            for r in range(nq):
                seen = m[r] > neg_inf
                alpha[r] = fast_exp(alpha[r] - m[r] if seen else dt(0.0))
                # A row with nothing visible yet keeps P = exp(S - inf) = 0.
                shift[r] = m[r] if seen else pos_inf
            tile_sum[:] = 0.0
            for c in range(nk):
                for r in range(nq):
                    e = fast_exp(st[c, r] - shift[r])
                    pt[c, r] = e
                    tile_sum[r] += e
            for r in range(nq):
                l[r] = l[r] * alpha[r] + tile_sum[r]
            if dropout_p > 0.0:
                # l sums the probabilities before dropout; only O sees the dropped ones.
                ft = ft_buf[:nk * nq].reshape((nk, nq))
                _dropout_factors(ft, row0, tk, j0, hashed_seed, threshold, inv_keep)
                for c in range(nk):
                    for r in range(nq):
                        pt[c, r] *= ft[c, r]
            if j0 > 0:
                for r in range(nq):
                    a = alpha[r]
                    for d in range(dim):
                        acc[r, d] *= a
            # acc += P V: (nq, nk) x (nk, D), with P = (P^T)^T
            kernel_gemm(blas_fns, TRANS, NO_TRANS, nq, dim, nk, dt(1.0), pt.ctypes.data, nq,
                        v_tile, v[3], dt(1.0), acc.ctypes.data, dim)
        for r in range(nq):
            orow = (b * tq + i0 + r) * n_heads + h
            if l[r] > 0.0:
                inv_l = dt(1.0) / l[r]
                for d in range(dim):
                    o[orow, d] = acc[r, d] * inv_l
                lse[row0 + r] = m[r] + np.log(l[r])
            else:
                # A fully masked row: zero output, and lse = -inf marks it for backward.
                o[orow] = 0.0
                lse[row0 + r] = neg_inf
    kernel_threads(blas_fns, previous_threads)


# ---------------------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------------------

@njit(nogil=True, fastmath=FASTMATH, cache=True)
def _row_dots(a, b, out):
    """out[r] = sum_d a[r, d] * b[r, d]."""
    for r in range(a.shape[0]):
        acc = a.dtype.type(0.0)
        for d in range(a.shape[1]):
            acc += a[r, d] * b[r, d]
        out[r] = acc


@njit(nogil=True, fastmath=FASTMATH, cache=True)
def _backward(first, stop, step, blas_fns, q, k, v, do, lse, delta, tq, tk, n_heads, dim, mask,
              has_mask, bias, has_bias, scale, causal, dropout_p, hashed_seed, threshold,
              block_q, block_k, lanes_are_heads, n_groups, dq_parts, dk, dv, dbias):
    """Backward units first, first + step, ... < stop; unit u is lane u // G with key tiles
    u % G, u % G + G, ... A unit owns all its writes: dK and dV of its key tiles, dQ in its
    group's buffer, and (when lanes are heads) dbias of its head."""
    # q, do: rows (b, h, i) of D; k, v, dk, dv: rows (b, h, j) of D (rows arrays, see _row);
    # dq_parts: G rows arrays, one dQ per key-tile group; lse, delta: (BH*Tq,); dbias: like bias.
    # The dq_parts start at zero: the products add into them (beta = 1).
    size = lse.itemsize
    n_bh = lse.shape[0] // tq
    n_qb = (tq + block_q - 1) // block_q
    n_kb = (tk + block_k - 1) // block_k
    dt = lse.dtype.type
    sc = dt(scale)
    neg_inf = dt(-np.inf)
    pos_inf = dt(np.inf)
    inv_keep = dt(1.0 / (1.0 - dropout_p))
    offset = tk - tq
    previous_threads = kernel_threads(blas_fns, 1)
    st_buf = np.empty(block_k * block_q, lse.dtype)
    pt_buf = np.empty(block_k * block_q, lse.dtype)
    pdt_buf = np.empty(block_k * block_q, lse.dtype)
    ft_buf = np.empty(block_k * block_q, lse.dtype)
    dst_buf = np.empty(block_k * block_q, lse.dtype)
    shift = np.empty(block_q, lse.dtype)
    # With a bias shared over the batch, every batch entry of head h adds into the same
    # dbias[0, h]: a lane is then a head, and it walks the batch itself.
    per_lane = n_bh // n_heads if lanes_are_heads else 1
    for u in range(first, stop, step):
        lane = u // n_groups
        g = u % n_groups
        dq = dq_parts[g]
        for bi in range(per_lane):
            bh = bi * n_heads + lane if lanes_are_heads else lane
            b = bh // n_heads
            h = bh % n_heads
            for kb in range(g, n_kb, n_groups):
                j0 = kb * block_k
                nk = min(block_k, tk - j0)
                k_tile = _row(k, b, h, j0, size)                        # (nk, D)
                v_tile = _row(v, b, h, j0, size)
                dk_tile = _row(dk, b, h, j0, size)
                dv_tile = _row(dv, b, h, j0, size)
                # Queries i < j0 - offset see none of these keys under a causal mask.
                qb_first = max(j0 - offset, 0) // block_q if causal else 0
                for qb in range(qb_first, n_qb):
                    i0 = qb * block_q
                    nq = min(block_q, tq - i0)
                    row0 = bh * tq + i0
                    q_tile = _row(q, b, h, i0, size)                    # (nq, D)
                    do_tile = _row(do, b, h, i0, size)
                    dq_tile = _row(dq, b, h, i0, size)
                    st = st_buf[:nk * nq].reshape((nk, nq))
                    pt = pt_buf[:nk * nq].reshape((nk, nq))
                    dst = dst_buf[:nk * nq].reshape((nk, nq))
                    # S^T = scale K Q^T
                    kernel_gemm(blas_fns, NO_TRANS, TRANS, nk, nq, dim, sc, k_tile, k[3],
                                q_tile, q[3], dt(0.0), st.ctypes.data, nq)
                    if has_bias or has_mask or (causal and j0 + nk - 1 > i0 + offset):
                        _finish_scores(st, i0, j0, b, h, mask, has_mask, bias, has_bias,
                                       causal, offset)
                    for r in range(nq):
                        # A fully masked row (M = -inf) has P = 0.
                        m_i = lse[row0 + r]
                        shift[r] = m_i if m_i > neg_inf else pos_inf
                    for c in range(nk):
                        for r in range(nq):
                            pt[c, r] = fast_exp(st[c, r] - shift[r])  # P = exp(S - M)
                    pdt = pt
                    ft = ft_buf[:nk * nq].reshape((nk, nq))
                    if dropout_p > 0.0:
                        pdt = pdt_buf[:nk * nq].reshape((nk, nq))
                        _dropout_factors(ft, row0, tk, j0, hashed_seed, threshold, inv_keep)
                        for c in range(nk):
                            for r in range(nq):
                                pdt[c, r] = pt[c, r] * ft[c, r]
                    # The first query tile's products set this key tile's dK and dV rows
                    # (beta = 0), the later ones add to them.
                    first_tile = dt(0.0) if qb == qb_first else dt(1.0)
                    # dV += P_drop^T dO: (nk, nq) x (nq, D)
                    kernel_gemm(blas_fns, NO_TRANS, NO_TRANS, nk, dim, nq, dt(1.0),
                                pdt.ctypes.data, nq, do_tile, do[3], first_tile, dv_tile, dv[3])
                    # dP_drop^T = V dO^T: (nk, D) x (D, nq)
                    kernel_gemm(blas_fns, NO_TRANS, TRANS, nk, nq, dim, dt(1.0), v_tile, v[3],
                                do_tile, do[3], dt(0.0), dst.ctypes.data, nq)
                    for c in range(nk):
                        for r in range(nq):
                            dp = dst[c, r] * ft[c, r] if dropout_p > 0.0 else dst[c, r]
                            dst[c, r] = pt[c, r] * (dp - delta[row0 + r])   # dS^T
                    if has_bias:
                        bb = b if dbias.shape[0] > 1 else 0
                        _add_transposed(dbias[bb, h, i0:i0 + nq, j0:j0 + nk], dst)
                    # dQ += scale dS K: (nq, nk) x (nk, D), with dS = (dS^T)^T
                    kernel_gemm(blas_fns, TRANS, NO_TRANS, nq, dim, nk, sc, dst.ctypes.data,
                                nq, k_tile, k[3], dt(1.0), dq_tile, dq[3])
                    # dK += scale dS^T Q: (nk, nq) x (nq, D)
                    kernel_gemm(blas_fns, NO_TRANS, NO_TRANS, nk, dim, nq, sc, dst.ctypes.data,
                                nq, q_tile, q[3], first_tile, dk_tile, dk[3])
    kernel_threads(blas_fns, previous_threads)


# ---------------------------------------------------------------------------------------
# Python-side wrappers: check and normalise the arguments, then call the kernels.
# ---------------------------------------------------------------------------------------

def _prepare_mask(mask, shape, xp=np, finish=readonly):
    """A C-contiguous bool (b, h, q, k) mask, each axis 1 or full, without materialising
    axes that were broadcast (zero strides); and whether there is one.

    ``xp`` and ``finish`` let the CUDA wrappers share this (CuPy and ``contiguous``).
    """
    if mask is None:
        return finish(xp.ones((1, 1, 1, 1), dtype=np.bool_)), False
    mask = xp.asarray(mask)
    if mask.dtype != np.bool_:
        raise TypeError(f"attention: mask dtype {mask.dtype} must be bool (True = may attend); "
                        "convert it with mask.astype(bool)")
    if mask.ndim > 4:
        raise ValueError(f"attention: mask has {mask.ndim} dims, expected at most 4 "
                         f"broadcastable to (B, H, Tq, Tk) = {shape}")
    mask = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
    for axis, (m, n) in enumerate(zip(mask.shape, shape)):
        if m not in (1, n):
            raise ValueError(f"attention: mask shape {mask.shape} does not broadcast to "
                             f"(B, H, Tq, Tk) = {shape} (axis {axis}); give 1 or {n} there")
    index = tuple(slice(0, 1) if st == 0 and n > 1 else slice(None)
                  for st, n in zip(mask.strides, mask.shape))
    return finish(mask[index]), True


def _prepare_bias(bias, shape, dtype):
    b, h, tq, tk = shape
    if bias is None:
        return readonly(np.zeros((1, 1, 1, 1), dtype)), False
    bias = np.asarray(bias)
    if bias.ndim != 4 or bias.shape[0] not in (1, b) or bias.shape[1:] != (h, tq, tk):
        raise ValueError(f"attention: bias shape {bias.shape} must be (1 or {b}, {h}, {tq}, {tk}); "
                         "give one bias per head, shared over the batch or one per entry")
    return readonly(bias, dtype), True


def _check_qkv(q, k, v):
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"attention: q, k, v must be 4-D (B, H, T, D), got {q.shape}, "
                         f"{k.shape}, {v.shape}")
    if k.shape != v.shape or k.shape[:2] != q.shape[:2] or k.shape[3] != q.shape[3]:
        raise ValueError(f"attention: shapes q {q.shape}, k {k.shape}, v {v.shape} do not fit; "
                         "expected q (B, H, Tq, D) and k, v (B, H, Tk, D)")


def _dropout_args(dropout_p, seed):
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"attention: dropout_p must be in [0, 1), got {dropout_p}")
    if dropout_p == 0.0:
        return 0.0, np.uint64(0), np.uint64(0)
    if seed is None:
        raise ValueError("attention: dropout_p > 0 needs a seed (the same one in forward "
                         "and backward); pass seed=backend.next_seed()")
    return float(dropout_p), rng.seed_hash(int(seed)), rng.keep_threshold(dropout_p)


def _rows(x, dtype):
    """A (B, H, T, D) array as the kernels read it: (the array, its rows array, see ``_row``).

    Read in place where it is ``dtype`` with contiguous rows (any strides over B, H and T, so
    heads that are views of a (B, T, H, D) projection are not copied); copied otherwise."""
    item = np.dtype(dtype).itemsize
    if not (x.dtype == dtype and (x.strides[3] == item or x.shape[3] == 1)
            and all(st >= 0 and st % item == 0 for st in x.strides[:3])
            and (x.strides[2] >= x.shape[3] * item or x.shape[2] == 1)):
        x = np.ascontiguousarray(x, dtype=dtype)
    sb, sh, st = (s // item for s in x.strides[:3])
    return x, np.array([x.ctypes.data, sb, sh, max(st, x.shape[3])], np.int64)


def attention_forward(q, k, v, mask=None, bias=None, scale=None, causal=False, dropout_p=0.0,
                      seed=None, *, block_q=None, block_k=None):
    """O = dropout(softmax(scale Q K^T + bias, masked)) V and the row log-sum-exp.

    q (B, H, Tq, D), k and v (B, H, Tk, D) -> o (B, H, Tq, D), lse (B, H, Tq).
    ``block_q``/``block_k`` set the tile (default: ``default_tiles``; tests use small tiles
    to exercise the edges).

    o is a transposed view of a C-contiguous (B, Tq, H, D) array: the heads of each query
    side by side, the layout the output projection reads (B, Tq, H D) in. So the attention
    layer's merge of the heads, o.transpose(1, 2).reshape(B, Tq, H D), is a view, not a copy,
    and the projection's saved input is this same memory (a copy less per layer, and one
    array less kept for backward).
    """
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    _check_qkv(q, k, v)
    B, H, tq, dim = q.shape
    tk = k.shape[2]
    caller_dtype, dtype = q.dtype, compute_dtype(q.dtype)
    scale = 1.0 / math.sqrt(dim) if scale is None else float(scale)
    mask4, has_mask = _prepare_mask(mask, (B, H, tq, tk))
    bias4, has_bias = _prepare_bias(bias, (B, H, tq, tk), dtype)
    p, hashed_seed, threshold = _dropout_args(float(dropout_p), seed)
    o = np.zeros((B * tq * H, dim), dtype)                    # rows (b, i, h)
    lse = np.full(B * H * tq, -np.inf, dtype)
    if o.size and tk:
        tiles = default_tiles(dim, causal)
        block_q, block_k = block_q or tiles[0], block_k or tiles[1]
        (q, q_rows), (k, k_rows), (v, v_rows) = (_rows(x, dtype) for x in (q, k, v))
        n_units = B * H * -(-tq // block_q)
        run_parallel(_forward, n_units, kernel_blas(dtype), q_rows, k_rows, v_rows, tq, tk, H,
                     mask4, has_mask, bias4, has_bias, scale, bool(causal), p, hashed_seed,
                     threshold, int(block_q), int(block_k), o, lse)
    o = o.reshape(B, tq, H, dim).transpose(0, 2, 1, 3)        # (B, Tq, H, D) -> (B, H, Tq, D) view
    return (o.astype(caller_dtype, copy=False),
            lse.reshape(B, H, tq))   # lse stays in the compute dtype (float32 for halves)


def _rows_in_place(x, dtype):
    """The rows array of an output the kernel writes: it must be ``dtype`` with contiguous rows."""
    kept, rows = _rows(x, dtype)
    if kept is not x:
        raise ValueError(f"attention_backward: an output of dtype {x.dtype} and strides {x.strides} "
                         f"cannot be written in place; give {np.dtype(dtype)} arrays whose last axis "
                         "is contiguous")
    return rows


def attention_backward(q, k, v, o, lse, do, mask=None, bias=None, scale=None, causal=False,
                       dropout_p=0.0, seed=None, *, block_q=None, block_k=None, out=None):
    """Gradients (dq, dk, dv, dbias) of ``attention_forward``; dbias is None without a bias.

    dq, dk and dv come, like o, as (B, H, T, D) views of (B, T, H, D) memory: the gradient
    the attention layer's split of the heads hands back is then a view too. ``out``: three
    (B, H, T, D) arrays to write dq, dk and dv into instead (views of one packed (B, T, 3,
    H, D) gradient, for instance), in the compute dtype with contiguous rows."""
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    _check_qkv(q, k, v)
    B, H, tq, dim = q.shape
    tk = k.shape[2]
    caller_dtype, dtype = q.dtype, compute_dtype(q.dtype)
    scale = 1.0 / math.sqrt(dim) if scale is None else float(scale)
    mask4, has_mask = _prepare_mask(mask, (B, H, tq, tk))
    bias4, has_bias = _prepare_bias(bias, (B, H, tq, tk), dtype)
    p, hashed_seed, threshold = _dropout_args(float(dropout_p), seed)
    n_bh = B * H
    if out is None:              # (B, T, H, D) memory, seen as (B, H, T, D)
        dq, dk, dv = (np.empty((B, t, H, dim), dtype).transpose(0, 2, 1, 3) for t in (tq, tk, tk))
    else:
        dq, dk, dv = out
        if (dq.shape, dk.shape, dv.shape) != (q.shape, k.shape, v.shape):
            raise ValueError(f"attention_backward: out shapes {dq.shape}, {dk.shape}, {dv.shape} "
                             f"must be those of q, k, v: {q.shape}, {k.shape}, {v.shape}")
    dq_rows, dk_rows, dv_rows = (_rows_in_place(x, dtype) for x in (dq, dk, dv))
    dq[...] = 0.0                # the products add into dq; dK and dV rows are set by the kernel
    dbias = np.zeros(bias4.shape, dtype) if has_bias else None
    if dq.size and dk.size:
        tiles = default_tiles(dim, causal)
        block_q, block_k = block_q or tiles[0], block_k or tiles[1]
        (q, q_rows), (k, k_rows), (v, v_rows), (do, do_rows) = (
            _rows(x, dtype) for x in (q, k, v, np.asarray(do)))
        lse1 = readonly(lse, dtype).reshape(n_bh * tq)
        # Delta = rowsum(dO * O), over rows in (b, i, h) order: O is a view of (B, Tq, H, D)
        # memory (attention_forward) and dO, the gradient of the heads' merge, is too, so
        # neither is copied here; then reordered to rows (b, h, i).
        o_bihd = readonly(np.asarray(o).transpose(0, 2, 1, 3), dtype).reshape(-1, dim)
        do_bihd = readonly(do.transpose(0, 2, 1, 3), dtype).reshape(-1, dim)
        delta_bih = np.empty(n_bh * tq, dtype)
        _row_dots(do_bihd, o_bihd, delta_bih)
        delta = np.ascontiguousarray(delta_bih.reshape(B, tq, H).transpose(0, 2, 1)).reshape(-1)
        lanes_are_heads = has_bias and bias4.shape[0] == 1 and B > 1
        n_lanes = H if lanes_are_heads else n_bh
        # Enough key-tile groups that the units (lanes x groups) share evenly among the
        # threads: one group for 8 lanes on 2 threads, two for a single lane. Group 0 adds
        # into dq, each other group into a dQ of its own, summed into dq at the end.
        n_threads = get_num_threads()
        n_groups = max(1, min(-(-tk // block_k), n_threads // math.gcd(n_lanes, n_threads)))
        extra = np.zeros((n_groups - 1, B, tq, H, dim), dtype)
        dq_parts = np.stack([dq_rows] + [_rows_in_place(x.transpose(0, 2, 1, 3), dtype) for x in extra])
        run_parallel(_backward, n_lanes * n_groups, kernel_blas(dtype), q_rows, k_rows, v_rows,
                     do_rows, lse1, delta, tq, tk, H, dim, mask4, has_mask, bias4, has_bias,
                     scale, bool(causal), p, hashed_seed, threshold, int(block_q), int(block_k),
                     lanes_are_heads, n_groups, dq_parts, dk_rows, dv_rows,
                     dbias if has_bias else np.zeros((1, 1, 1, 1), dtype))
        if n_groups > 1:
            dq += extra.sum(axis=0).transpose(0, 2, 1, 3)
    else:                    # no queries or no keys: nothing flows back to the keys either
        dk[...] = 0.0
        dv[...] = 0.0
    if out is not None:
        return dq, dk, dv, dbias
    return (dq.astype(caller_dtype, copy=False), dk.astype(caller_dtype, copy=False),
            dv.astype(caller_dtype, copy=False),
            None if dbias is None else dbias.astype(caller_dtype, copy=False))
