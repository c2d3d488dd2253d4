"""Fused softmax cross-entropy on the CPU: losses and gradients straight from the logits.

For row i with logits x (V classes), target t and label smoothing s:

    lse_i    = log sum_j exp(x_ij)
    loss_i   = (1 - s) (lse_i - x_it) + s (lse_i - mean_j x_ij)       (0 when t = ignore_index)
    dx_ij    = g_i (softmax(x_i)_j - (1 - s) [j = t] - s / V)

where g_i is the incoming gradient of loss_i. The probabilities are never stored: the
forward keeps only lse (one float per row) and the backward rebuilds softmax as
exp(x - lse). For a language model's (N, V) logits that is the largest softmax of the
step, and fusing saves writing and rereading an (N, V) probability matrix.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from minitransformer import backend

from ._cpu import FASTMATH, compute_dtype, exp_sub_total, fast_exp, readonly, row_max, run_parallel

@njit(nogil=True, fastmath=FASTMATH, cache=True)
def _cross_entropy_forward(first, stop, step, x, targets, ignore_index, smoothing, losses, lse):
    # x: (N, V); rows first, first + step, ... < stop
    n_classes = x.shape[1]
    one = x.dtype.type(1.0)
    s = x.dtype.type(smoothing)
    lanes = np.empty(16, x.dtype)
    for r in range(first, stop, step):
        xr = x[r]
        m = row_max(xr, lanes)
        total = exp_sub_total(xr, m)           # two reads of the row, no writes
        lse_r = m + np.log(total)
        lse[r] = lse_r
        t = targets[r]
        if t == ignore_index:
            losses[r] = 0.0
            continue
        loss = (one - s) * (lse_r - xr[t])
        if smoothing != 0.0:
            total_logits = x.dtype.type(0.0)
            for j in range(n_classes):
                total_logits += xr[j]
            loss += s * (lse_r - total_logits / n_classes)
        losses[r] = loss


@njit(nogil=True, fastmath=FASTMATH, cache=True)
def _cross_entropy_backward(first, stop, step, x, targets, lse, row_grad, ignore_index, smoothing,
                            dx):
    n_classes = x.shape[1]
    one = x.dtype.type(1.0)
    s = x.dtype.type(smoothing)
    uniform = s / n_classes
    for r in range(first, stop, step):
        dr = dx[r]
        g = row_grad[r]
        t = targets[r]
        if t == ignore_index or g == 0.0:
            dr[:] = 0.0
            continue
        xr = x[r]
        lse_r = lse[r]
        for j in range(n_classes):           # one pass: softmax rebuilt as exp(x - lse)
            dr[j] = g * (fast_exp(xr[j] - lse_r) - uniform)
        dr[t] -= g * (one - s)


def check_targets(logits, targets, ignore_index, name, xp=np):
    """Refuse logits that are not (N, V), targets that are not (N,), or a target outside
    [0, V) that is not ``ignore_index``; ``xp``: the arrays' module (the CUDA wrappers share this)."""
    if logits.ndim != 2:
        raise ValueError(f"{name}: logits must be 2-D (N, V), got shape {logits.shape}; "
                         "reshape to (-1, V) first")
    if targets.shape != logits.shape[:1]:
        raise ValueError(f"{name}: targets shape {targets.shape} must be ({logits.shape[0]},), "
                         "one class index per row of logits")
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= logits.shape[1]))

    def explain():
        t = int(backend.to_device(targets[xp.argmax(bad)], "cpu"))
        return (f"{name}: target {t} is outside [0, {logits.shape[1]}) and is not "
                f"ignore_index ({ignore_index}); fix the labels or the vocabulary size")

    # On a GPU the verdict waits for the step's transfer instead of stalling the device now.
    backend.check_later(bad.any(), explain)


def cross_entropy_forward(logits, targets, ignore_index=-100, label_smoothing=0.0):
    """Per-row losses and log-sum-exps of (N, V) ``logits`` against (N,) int ``targets``."""
    logits = np.asarray(logits)
    targets = readonly(targets, np.int64)
    check_targets(logits, targets, ignore_index, "cross_entropy")
    dtype = compute_dtype(logits.dtype)
    x = readonly(logits, dtype)
    losses = np.empty(x.shape[0], dtype)
    lse = np.empty(x.shape[0], dtype)
    if x.shape[0]:
        run_parallel(_cross_entropy_forward, x.shape[0], x, targets, int(ignore_index),
                     float(label_smoothing), losses, lse, contiguous=True)
    return losses.astype(logits.dtype, copy=False), lse   # lse in the compute dtype


def cross_entropy_backward(logits, targets, lse, row_grad, ignore_index=-100, label_smoothing=0.0,
                           out=None):
    """d(sum_i row_grad_i * loss_i) / d logits, rebuilding softmax from ``lse``.

    ``out``: an array to write the gradient into, so that the blocked language-model head
    reuses one buffer for every block. It may be ``logits`` itself: each entry is read
    before its gradient is written over it, so the gradient then replaces the logits in
    place (no second array of their size). Any other overlap with ``logits`` is refused.
    """
    logits = np.asarray(logits)
    targets = readonly(targets, np.int64)
    check_targets(logits, targets, ignore_index, "cross_entropy_backward")
    dtype = compute_dtype(logits.dtype)
    into_out = out is not None and out.dtype == dtype and out.flags.c_contiguous and out.shape == logits.shape
    if out is not None and out is not logits and np.shares_memory(out, logits):
        raise ValueError("cross_entropy_backward: out overlaps the logits without being them; "
                         "pass the logits themselves (in place) or a separate array")
    x = readonly(logits, dtype)
    lse = readonly(lse, dtype)
    row_grad = readonly(np.broadcast_to(row_grad, x.shape[:1]), dtype)
    dx = out if into_out else np.empty_like(x)
    if x.shape[0]:
        run_parallel(_cross_entropy_backward, x.shape[0], x, targets, lse, row_grad,
                     int(ignore_index), float(label_smoothing), dx, contiguous=True)
    if out is not None and not into_out:
        out[...] = dx
        return out
    return dx.astype(logits.dtype, copy=False)
