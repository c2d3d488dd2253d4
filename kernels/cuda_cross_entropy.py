"""Fused softmax cross-entropy on a CUDA GPU (the math is in ``cross_entropy.py``).

For row i of the (N, V) logits, with target t and label smoothing s:

    lse_i  = m + log sum_j exp(x_ij - m),     m = max_j x_ij
    loss_i = (1 - s) (lse_i - x_it) + s (lse_i - mean_j x_ij)          (0 when t is ignored)
    dx_ij  = g_i (exp(x_ij - lse_i) - (1 - s) [j = t] - s / V)

Forward: one thread block per row, in one read of the logits. Each thread goes over its
strided share of the row once, and in that pass keeps the max and the sum of
exponentials, the sum of the logits (for label smoothing) and, in the thread that meets
column t, the target logit, which it leaves in a shared slot for thread 0. A row that fits
(``_cuda.MAX_PER_THREAD`` elements per thread) is held in registers, so its exponentials
are taken once against the row's max; a wider row (a language model's vocabulary) keeps
the online statistics of ``cuda_softmax.py``, a running max and a sum rescaled when the
max grows, combined across threads as M = max m, S = sum s exp(m - M). The block's max
and sums come from ``_cuda.reduction``: warp shuffles on a GPU, shared memory under the
simulator. Thread 0 writes the loss and lse; the (N, V) probabilities never exist.

Backward: one block per row again, each thread writing its strided share of dx from one
read of the logits. Arithmetic stays in the data's float type throughout (s / V included).
"""
from __future__ import annotations

import functools
import math

from minitransformer import backend

from .cross_entropy import check_targets
from . import _cuda
from ._cuda import NEG_INF, THREADS, bind_cuda, contiguous, float_type, grid_for, launch_stream, row_layout

cuda = None  # numba.cuda once a kernel is built (see _cuda.bind_cuda)


@functools.lru_cache(maxsize=None)
def _forward_kernel(ft, threads, per_thread, shuffle):
    """The forward kernel for float type ``ft``; ``per_thread`` 0 builds the looped path."""
    reduce = _cuda.reduction(shuffle)
    red_len = _cuda.scratch_length(threads, shuffle)
    slots = max(per_thread, 1)
    bind_cuda(globals())

    @cuda.jit
    def kernel(x, targets, ignore_index, smoothing, losses, lse):
        # x: (N, V); targets, losses, lse: (N,)
        red = cuda.shared.array(red_len, dtype=ft)
        picked = cuda.shared.array(1, dtype=ft)         # x[row, t], from the thread that reads it
        vals = cuda.local.array(slots, dtype=ft)
        tid = cuda.threadIdx.x
        n_classes = x.shape[1]
        neg_inf = ft(NEG_INF)
        zero = ft(0.0)
        one = ft(1.0)
        s = smoothing                                      # already of type ft
        for row in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            t = targets[row]
            logit_sum = zero
            if per_thread:
                m = neg_inf
                for k in range(per_thread):
                    j = tid + k * threads
                    v = x[row, j] if j < n_classes else neg_inf
                    if j < n_classes:
                        logit_sum += v
                    if j == t:
                        picked[0] = v
                    vals[k] = v
                    m = max(m, v)
                top = reduce(red, tid, m, threads, True)
                total = zero
                for k in range(per_thread):
                    total += math.exp(vals[k] - top)
            else:
                m = neg_inf
                total = zero
                for j in range(tid, n_classes, threads):
                    v = x[row, j]
                    logit_sum += v
                    if j == t:
                        picked[0] = v
                    if v > m:
                        total = total * math.exp(m - v) + one     # exp(-inf) = 0 at the start
                        m = v
                    elif m > neg_inf:
                        total += math.exp(v - m)
                top = reduce(red, tid, m, threads, True)
                total = total * math.exp(m - top) if m > neg_inf else zero
            # The max's reduction passed a barrier after the slot was written, so it is
            # visible; read it before the next reduction, whose barriers no thread passes
            # (to overwrite the slot for its next row) before every thread has read it.
            x_t = picked[0]
            total = reduce(red, tid, total, threads, False)
            if s != zero:
                logit_sum = reduce(red, tid, logit_sum, threads, False)
            if tid == 0:
                lse_r = top + math.log(total)
                lse[row] = lse_r
                if t == ignore_index:
                    losses[row] = zero
                else:
                    loss = (one - s) * (lse_r - x_t)
                    if s != zero:
                        loss += s * (lse_r - logit_sum / ft(n_classes))
                    losses[row] = loss

    return kernel


@functools.lru_cache(maxsize=None)
def _backward_kernel(ft, threads):
    bind_cuda(globals())

    @cuda.jit
    def kernel(x, targets, lse, row_grad, ignore_index, smoothing, dx):
        # x, dx: (N, V); targets, lse, row_grad: (N,)
        tid = cuda.threadIdx.x
        n_classes = x.shape[1]
        zero = ft(0.0)
        s = smoothing                                      # already of type ft
        hit = ft(1.0) - s
        uniform = s / ft(n_classes)
        for row in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            t = targets[row]
            g = row_grad[row]
            lse_r = lse[row]
            skip = t == ignore_index or g == zero
            for j in range(tid, n_classes, threads):
                if skip:
                    dx[row, j] = zero
                else:
                    p = math.exp(x[row, j] - lse_r)
                    dx[row, j] = g * (p - (hit if j == t else zero) - uniform)

    return kernel


def cross_entropy_forward(logits, targets, ignore_index=-100, label_smoothing=0.0, *,
                          threads=None):
    """Per-row losses and log-sum-exps of (N, V) ``logits`` against (N,) int ``targets``.

    ``threads``: the block size (see ``cuda_softmax.softmax_forward``); unset, chosen to
    hold a row in registers where one fits.
    """
    xp = backend.xp(logits)
    targets = contiguous(targets, xp.int64, xp)
    check_targets(logits, targets, ignore_index, "cross_entropy", xp)
    ft = float_type(logits.dtype)
    x = contiguous(logits, ft, xp)
    losses = _cuda.empty(xp, x.shape[0], ft)
    lse = _cuda.empty(xp, x.shape[0], ft)
    if x.shape[0]:
        shuffle = not _cuda.simulating()
        threads, per_thread = row_layout(x.shape[1], threads, shuffle, "cross_entropy_forward")
        kernel = _forward_kernel(ft, threads, per_thread, shuffle)
        kernel[grid_for(x.shape[0]), threads, launch_stream(logits)](
            x, targets, int(ignore_index), ft(label_smoothing), losses, lse)
    return losses.astype(logits.dtype, copy=False), lse   # lse in the compute dtype


def cross_entropy_backward(logits, targets, lse, row_grad, ignore_index=-100,
                           label_smoothing=0.0, *, threads=THREADS):
    """d(sum_i row_grad_i * loss_i) / d logits, rebuilding softmax from ``lse``."""
    xp = backend.xp(logits)
    targets = contiguous(targets, xp.int64, xp)
    check_targets(logits, targets, ignore_index, "cross_entropy_backward", xp)
    ft = float_type(logits.dtype)
    x = contiguous(logits, ft, xp)
    lse = contiguous(lse, ft, xp)
    row_grad = contiguous(xp.broadcast_to(xp.asarray(row_grad, dtype=ft), x.shape[:1]), xp=xp)
    dx = _cuda.empty(xp, x.shape, x.dtype)
    if x.shape[0]:
        kernel = _backward_kernel(ft, threads)
        kernel[grid_for(x.shape[0]), threads, launch_stream(logits)](
            x, targets, lse, row_grad, int(ignore_index), ft(label_smoothing), dx)
    return dx.astype(logits.dtype, copy=False)
