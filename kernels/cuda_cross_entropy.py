"""Fused softmax cross-entropy on a CUDA GPU (the math is in ``cross_entropy.py``).

Forward: one thread block per row of the (N, V) logits; block reductions give the row max,
the sum of exp(x - max) and, with label smoothing, the sum of the logits; thread 0 writes
the loss and lse. Backward: one block per row again, each thread writing its strided share
of g (exp(x - lse) - (1 - s) [j = t] - s / V). The (N, V) probabilities never exist.
"""
from __future__ import annotations

import functools
import math

from minitransformer import backend

from .cross_entropy import check_targets
from . import _cuda
from ._cuda import THREADS, bind_cuda, block_reduce, contiguous, float_type, grid_for, launch_stream

cuda = None  # numba.cuda once a kernel is built (see _cuda.bind_cuda)


@functools.lru_cache(maxsize=None)
def _forward_kernel(ft, threads):
    reduce = block_reduce()
    bind_cuda(globals())

    @cuda.jit
    def kernel(x, targets, ignore_index, smoothing, losses, lse):
        red = cuda.shared.array(threads, dtype=ft)
        tid = cuda.threadIdx.x
        n_classes = x.shape[1]
        s = ft(smoothing)
        for row in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            m = ft(-math.inf)
            for j in range(tid, n_classes, threads):
                m = max(m, x[row, j])
            m = reduce(red, tid, m, threads, True)
            total = ft(0.0)
            logit_sum = ft(0.0)
            for j in range(tid, n_classes, threads):
                total += math.exp(x[row, j] - m)
                logit_sum += x[row, j]
            total = reduce(red, tid, total, threads, False)
            if smoothing != 0.0:
                logit_sum = reduce(red, tid, logit_sum, threads, False)
            if tid == 0:
                lse_r = m + math.log(total)
                lse[row] = lse_r
                t = targets[row]
                if t == ignore_index:
                    losses[row] = 0.0
                else:
                    loss = (ft(1.0) - s) * (lse_r - x[row, t])
                    if smoothing != 0.0:
                        loss += s * (lse_r - logit_sum / n_classes)
                    losses[row] = loss

    return kernel


@functools.lru_cache(maxsize=None)
def _backward_kernel(ft, threads):
    bind_cuda(globals())

    @cuda.jit
    def kernel(x, targets, lse, row_grad, ignore_index, smoothing, dx):
        tid = cuda.threadIdx.x
        n_classes = x.shape[1]
        s = ft(smoothing)
        uniform = s / n_classes
        for row in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            t = targets[row]
            g = row_grad[row]
            skip = t == ignore_index or g == 0.0
            for j in range(tid, n_classes, threads):
                if skip:
                    dx[row, j] = 0.0
                else:
                    p = math.exp(x[row, j] - lse[row])
                    hit = (ft(1.0) - s) if j == t else ft(0.0)
                    dx[row, j] = g * (p - hit - uniform)

    return kernel


def cross_entropy_forward(logits, targets, ignore_index=-100, label_smoothing=0.0, *,
                          threads=THREADS):
    """Per-row losses and log-sum-exps of (N, V) ``logits`` against (N,) int ``targets``."""
    xp = backend.xp(logits)
    targets = contiguous(targets, xp.int64, xp)
    check_targets(logits, targets, ignore_index, "cross_entropy", xp)
    ft = float_type(logits.dtype)
    x = contiguous(logits, ft, xp)
    losses = _cuda.empty(xp, x.shape[0], ft)
    lse = _cuda.empty(xp, x.shape[0], ft)
    if x.shape[0]:
        kernel = _forward_kernel(ft, threads)
        kernel[grid_for(x.shape[0]), threads, launch_stream(logits)](
            x, targets, int(ignore_index), float(label_smoothing), losses, lse)
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
            x, targets, lse, row_grad, int(ignore_index), float(label_smoothing), dx)
    return dx.astype(logits.dtype, copy=False)

