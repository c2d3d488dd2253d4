"""The fused ops of a transformer, in plain array code: the references.

Each op here is one ``Function`` with a hand-written backward (or, for attention, a
composition of simpler ops that reads like the paper). They are the textbook versions:
``kernels/`` holds fast twins of softmax, cross-entropy, attention, layer norm, RMS norm
and the embedding gradient, and when ``mt.kernels.use("auto")`` (the default) finds a
kernel for the arrays' device, the op calls it instead of the array code below;
``mt.kernels.use("reference")`` forces this code. The tests compare the two, forward and
backward.

Shapes: B batch, H heads, T (Tq, Tk) sequence positions, D head size, C channels, V vocabulary.
"""
from __future__ import annotations

import math

import numpy

from minitransformer import backend, kernels
from minitransformer.autograd import ops as _ops
from minitransformer.autograd.function import Context, Function, is_grad_enabled, unbroadcast
from minitransformer.autograd.ops import as_array, gelu, matmul, relu, where  # noqa: F401 (re-exported)
from minitransformer.kernels import blas as _blas
from minitransformer.kernels import rng as _rng

xp_of = backend.xp

__all__ = [
    "softmax", "log_softmax", "cross_entropy", "linear_cross_entropy", "layer_norm", "rms_norm", "gelu", "relu",
    "dropout", "embedding", "linear", "activation_linear", "scaled_dot_product_attention",
    "packed_self_attention",
]


# =======================================================================================
# Softmax and log-softmax
# =======================================================================================

def _softmax_reference(x, axis, mask):
    """softmax(x)_j = exp(x_j - m) / sum_k exp(x_k - m), m = max_k x_k (for stability).

    Entries where ``mask`` is False get probability 0; a row with no allowed entry is all 0.
    """
    xp = xp_of(x)
    if mask is not None:
        x = xp.where(mask, x, -xp.inf)
    m = x.max(axis=axis, keepdims=True)
    if mask is not None:
        m = xp.where(xp.isfinite(m), m, 0)      # a fully masked row: avoid inf - inf
    e = xp.exp(x - m)
    s = e.sum(axis=axis, keepdims=True)
    if mask is not None:
        s = xp.where(s == 0, 1, s)               # ... and 0 / 0
    return e / s


def _softmax_backward_reference(y, g, axis):
    """dx = y * (g - sum(g * y)): the Jacobian diag(y) - y y^T applied to g."""
    return y * (g - (g * y).sum(axis=axis, keepdims=True))


class Softmax(Function):
    """Row softmax over ``axis``, optionally restricted to entries where ``mask`` is True."""

    @staticmethod
    def forward(ctx, x, axis=-1, mask=None):
        axis = axis % x.ndim
        last = axis == x.ndim - 1
        fwd = kernels.get("softmax_forward", x) if last else None
        y = fwd(x, mask) if fwd else _softmax_reference(x, axis, mask)
        ctx.save(y=y, axis=axis, kernel=bool(fwd))
        return y

    @staticmethod
    def backward(ctx, g):
        bwd = kernels.get("softmax_backward", g) if ctx.kernel else None
        return bwd(ctx.y, g) if bwd else _softmax_backward_reference(ctx.y, g, ctx.axis)


def _check_mask(name, mask, shape):
    mask = as_array(mask)
    if mask is None:
        return None
    if mask.dtype != bool:
        raise TypeError(f"{name}: mask must be boolean (True where allowed), got dtype {mask.dtype}")
    try:
        numpy.broadcast_shapes(mask.shape, shape)
    except ValueError:
        raise ValueError(f"{name}: mask shape {mask.shape} does not broadcast to {shape}") from None
    return mask


def softmax(x, axis: int = -1, mask=None):
    """Probabilities along ``axis`` (each row sums to 1; masked entries and empty rows are 0)."""
    return Softmax.apply(x, axis=axis, mask=_check_mask("softmax", mask, x.shape))


class LogSoftmax(Function):
    """out = x - logsumexp(x).   dx = g - softmax(x) * sum(g)."""

    @staticmethod
    def forward(ctx, x, axis=-1):
        xp = xp_of(x)
        m = x.max(axis=axis, keepdims=True)
        shifted = x - m
        out = shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))
        ctx.save(out=out, axis=axis)
        return out

    @staticmethod
    def backward(ctx, g):
        return g - xp_of(g).exp(ctx.out) * g.sum(axis=ctx.axis, keepdims=True)


def log_softmax(x, axis: int = -1):
    return LogSoftmax.apply(x, axis=axis)


# =======================================================================================
# Cross-entropy
# =======================================================================================

def _cross_entropy_reference(logits, targets, ignore_index, label_smoothing):
    """Per-row losses and log-partition for logits (N, V) and targets (N,).

    loss_i = (1 - s) (lse_i - x_i[t_i]) + s (lse_i - mean_j x_ij), s the label smoothing;
    0 where t_i == ignore_index.
    """
    xp = xp_of(logits)
    m = logits.max(axis=1, keepdims=True)
    lse = (m + xp.log(xp.exp(logits - m).sum(axis=1, keepdims=True)))[:, 0]     # (N,)
    valid = targets != ignore_index
    safe = xp.where(valid, targets, 0)
    picked = xp.take_along_axis(logits, safe[:, None], axis=1)[:, 0]           # (N,)
    loss = (1.0 - label_smoothing) * (lse - picked)
    if label_smoothing:
        loss = loss + label_smoothing * (lse - logits.mean(axis=1))
    return xp.where(valid, loss, 0).astype(logits.dtype, copy=False), lse


def _cross_entropy_backward_reference(logits, targets, lse, row_grad, ignore_index, label_smoothing):
    """dx_ij = r_i (softmax(x_i)_j - (1 - s) [j = t_i] - s / V), r_i the row's incoming grad."""
    xp = xp_of(logits)
    n, v = logits.shape
    d = xp.exp(logits - lse[:, None])
    valid = targets != ignore_index
    rows = xp.arange(n)
    d[rows, xp.where(valid, targets, 0)] -= (1.0 - label_smoothing)
    if label_smoothing:
        d -= label_smoothing / v
    return d * row_grad[:, None]


class CrossEntropy(Function):
    """Softmax cross-entropy of logits (N, V) against integer targets (N,), reduced.

    mean: sum of row losses / number of non-ignored rows (0 when there are none);
    sum: their sum; none: the (N,) row losses.
    """

    @staticmethod
    def forward(ctx, logits, targets, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
        xp = xp_of(logits)
        fwd = kernels.get("cross_entropy_forward", logits)
        if fwd:
            losses, lse = fwd(logits, targets, ignore_index, label_smoothing)
        else:
            losses, lse = _cross_entropy_reference(logits, targets, ignore_index, label_smoothing)
        valid = targets != ignore_index
        # The divisor of "mean" stays on the device: reading it (int(...)) would wait for it.
        count = xp.maximum(valid.sum(), 1).astype(logits.dtype)         # () at least 1
        ctx.save(logits=logits, targets=targets, lse=lse, valid=valid, count=count,
                 ignore_index=ignore_index, label_smoothing=label_smoothing,
                 reduction=reduction, kernel=bool(fwd))
        if reduction == "none":
            return losses
        total = losses.sum()
        if reduction == "mean":
            total = total / count
        return xp.asarray(total, dtype=logits.dtype)

    @staticmethod
    def backward(ctx, g):
        valid = ctx.valid.astype(ctx.logits.dtype)
        if ctx.reduction == "none":
            row_grad = g * valid
        else:
            scale = g / ctx.count if ctx.reduction == "mean" else g
            row_grad = valid * scale
        bwd = kernels.get("cross_entropy_backward", ctx.logits) if ctx.kernel else None
        impl = bwd or _cross_entropy_backward_reference
        d = impl(ctx.logits, ctx.targets, ctx.lse, row_grad, ctx.ignore_index, ctx.label_smoothing)
        return d, None


def _checked_ids(ids, bad, replacement: int, message):
    """``ids`` after checking that no entry is ``bad`` (a boolean array of its shape).

    On the host a bad id raises ``ValueError(message(first five bad ids))`` at once. On a
    device the check waits for the next transfer (``backend.check_later``: reading it now
    would stall the device) and the bad ids become ``replacement``, so nothing indexes out
    of bounds before the error surfaces.
    """
    xp = xp_of(ids)

    def explain():
        return message(backend.to_device(ids[bad], "cpu")[:5].tolist())

    if not ids.size:
        return ids
    backend.check_later(bad.any(), explain)
    return ids if xp is numpy else xp.where(bad, replacement, ids)


def _checked_targets(t, lead, v, ignore_index, label_smoothing, reduction):
    """Targets of logits (*lead, v) as flat int64 (N,), or an error naming what is wrong."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if tuple(t.shape) != tuple(lead):
        raise ValueError(
            f"cross_entropy: targets shape {tuple(t.shape)} must match logits "
            f"{tuple(lead) + ('V',)} without the last axis"
        )
    if t.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be integer class ids, got dtype {t.dtype}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    t = t.reshape(-1).astype("int64", copy=False)
    return _checked_ids(t, (t != ignore_index) & ((t < 0) | (t >= v)), ignore_index, lambda bad: (
        f"cross_entropy: target ids {bad} are outside [0, {v}) and are not ignore_index ({ignore_index})"))


def cross_entropy(logits, targets, ignore_index: int = -100, label_smoothing: float = 0.0,
                  reduction: str = "mean"):
    """Cross-entropy of ``logits`` (..., V) against integer ``targets`` (...).

    Targets equal to ``ignore_index`` contribute nothing; "mean" divides by the number of
    the others. With ``label_smoothing`` s the target distribution is (1 - s) one-hot + s / V.
    """
    v = logits.shape[-1]
    t = _checked_targets(as_array(targets), tuple(logits.shape[:-1]), v, ignore_index, label_smoothing,
                         reduction)
    flat = logits.reshape(-1, v)
    out = CrossEntropy.apply(flat, t, ignore_index=ignore_index,
                             label_smoothing=label_smoothing, reduction=reduction)
    return out.reshape(logits.shape[:-1]) if reduction == "none" else out


# =======================================================================================
# The language-model head: linear + cross-entropy, a block of rows at a time
# =======================================================================================

# At most this many logits per block of rows (256 MiB of float32); the rows are shared
# evenly among the blocks. A GPT-2 head at batch 4 x 256 (1024 x 50257 logits) is one
# block, its gradient written over its logits; a larger batch splits into blocks. Smaller
# blocks cost speed on a 2-core CPU: at that size, two blocks of 512 rows took 1.1x the
# time of one, blocks of 166 rows 1.45x (their dW updates are products of inner size 166).
HEAD_BLOCK = 1 << 26


def head_blocks(n: int, v: int, block: int = HEAD_BLOCK) -> list:
    """Bounds [0, ..., n] of the blocks of rows the head runs for n rows of v logits: as few
    blocks as keep each at most ``block`` logits (at least one row each), sharing the rows
    evenly. The memory formulas (``scaling.memory``) size the head's workspace from it."""
    if n == 0:
        return [0]
    n_blocks = min(max(1, -(-n * v // max(block, 1))), n)
    return [n * k // n_blocks for k in range(n_blocks + 1)]


def _product(a, b, trans_a=False, trans_b=False):
    """op(a) op(b) for 2-D arrays, op a transpose where asked, as a new array: on MKL where
    it is installed (kernels/blas.py), on NumPy's matmul in the reference mode."""
    return _blas.gemm(a, b, trans_a, trans_b, reference=kernels.mode() == "reference")


def _gemm(a, b, out, trans_a=False, trans_b=False, accumulate=False):
    """out = op(a) op(b), or out += op(a) op(b) (a sum over blocks, with no temporary), op a
    transpose where asked. Returns ``out``."""
    return _blas.gemm(a, b, trans_a, trans_b, out=out, beta=1.0 if accumulate else 0.0,
                      reference=kernels.mode() == "reference")


def _head_pass(h, weight, targets, row_grad, need, ignore_index, label_smoothing, block):
    """Row losses of z = h W^T, and, with ``row_grad``, dh = dz W and dW = dz^T h for
    dz_i = row_grad_i * dloss_i/dz_i; one block of rows of z (rows, V) at a time.

    h (N, C) and weight (V, C) C-contiguous; ``need``: (dh wanted, dW wanted).
    """
    n, v = h.shape[0], weight.shape[0]
    bounds = head_blocks(n, v, block)
    rows = max((hi - lo for lo, hi in zip(bounds, bounds[1:])), default=0)
    fwd = kernels.get("cross_entropy_forward", h)
    bwd = kernels.get("cross_entropy_backward", h) if fwd else None
    losses = numpy.empty(n, h.dtype)
    dh = numpy.empty_like(h) if row_grad is not None and need[0] else None
    dw = (numpy.empty_like(weight) if n else numpy.zeros_like(weight)) if row_grad is not None and need[1] else None
    z_block = numpy.empty((rows, v), h.dtype)   # reused by every block; dz overwrites z
    for r0, r1 in zip(bounds[:-1], bounds[1:]):
        hb, tb = h[r0:r1], targets[r0:r1]
        z = _gemm(hb, weight, z_block[:r1 - r0], trans_b=True)          # (rows, C) -> (rows, V)
        if fwd:
            losses[r0:r1], lse = fwd(z, tb, ignore_index, label_smoothing)
        else:
            losses[r0:r1], lse = _cross_entropy_reference(z, tb, ignore_index, label_smoothing)
        if row_grad is None:
            continue
        if bwd:
            dz = bwd(z, tb, lse, row_grad[r0:r1], ignore_index, label_smoothing, out=z)   # in place
        else:
            dz = _cross_entropy_backward_reference(z, tb, lse, row_grad[r0:r1], ignore_index,
                                                   label_smoothing)
        if dh is not None:
            _gemm(dz, weight, dh[r0:r1])                                 # (rows, V) -> (rows, C)
        if dw is not None:
            _gemm(dz, hb, dw, trans_a=True, accumulate=r0 > 0)           # (V, C) += dz^T h
    return losses, dh, dw


class LinearCrossEntropy(Function):
    """Cross-entropy of the logits z = h W^T (N, V) against targets (N,), reduced as
    ``CrossEntropy``, without ever holding all N rows of z or of its gradient.

    With dz_i = r_i (softmax(z_i) - (1 - s) onehot(t_i) - s / V) for the rows' incoming
    gradients r_i:  dh = dz W;  dW = dz^T h, both summed block by block of rows.

    For a "mean" or "sum" reduction r_i is known in forward up to the one scalar backward
    receives, so forward computes dh and dW (for that scalar = 1) while each block of
    logits is at hand, and backward only scales them: the head costs no more matrix
    products than the unfused one. With "none" the r_i arrive in backward, which then
    recomputes each block of logits (one more product of the head's size).
    """

    @staticmethod
    def forward(ctx, h, weight, targets, ignore_index=-100, label_smoothing=0.0, reduction="mean",
                block=HEAD_BLOCK):
        valid = targets != ignore_index
        count = int(valid.sum())
        ctx.save(h=h, weight=weight, targets=targets, valid=valid, count=count, ignore_index=ignore_index,
                 label_smoothing=label_smoothing, reduction=reduction, block=block, grads=None)
        # Under no_grad (evaluation) no graph is recorded, so no gradient is made either.
        need = tuple(ctx.needs_input_grad[:2]) if is_grad_enabled() else (False, False)
        row_grad = None
        if reduction != "none" and any(need):
            scale = 1.0 / max(count, 1) if reduction == "mean" else 1.0
            row_grad = valid.astype(h.dtype) * h.dtype.type(scale)
        losses, dh, dw = _head_pass(h, weight, targets, row_grad, need, ignore_index, label_smoothing, block)
        if row_grad is not None:
            ctx.grads = (dh, dw)
        if reduction == "none":
            return losses
        total = losses.sum()
        if reduction == "mean":
            total = total / max(count, 1)
        return numpy.asarray(total, dtype=h.dtype)

    @staticmethod
    def backward(ctx, g):
        grads, ctx.grads = ctx.grads, None      # handed over, not copied (a second pass recomputes)
        if grads is not None:
            dh, dw = grads
            if float(g) != 1.0:
                for d in (dh, dw):
                    if d is not None:
                        d *= g
            return dh, dw, None
        valid = ctx.valid.astype(ctx.h.dtype)
        if ctx.reduction == "none":
            row_grad = (g * valid).astype(ctx.h.dtype, copy=False)
        else:
            scale = g / max(ctx.count, 1) if ctx.reduction == "mean" else g
            row_grad = (valid * scale).astype(ctx.h.dtype, copy=False)
        _, dh, dw = _head_pass(ctx.h, ctx.weight, ctx.targets, row_grad, tuple(ctx.needs_input_grad[:2]),
                               ctx.ignore_index, ctx.label_smoothing, ctx.block)
        return dh, dw, None

    @staticmethod
    def flops(ctx, phase, *arrays):
        """2 N C V for the logits; the gradients' 4 N C V in forward when it computes them."""
        product = 2 * ctx.h.shape[0] * ctx.weight.size
        need = sum(ctx.needs_input_grad[:2])
        if phase == "forward":
            return product * (1 + need) if ctx.reduction != "none" else product
        return 0 if ctx.reduction != "none" else product * (1 + need)


def linear_cross_entropy(h, weight, targets, ignore_index: int = -100, label_smoothing: float = 0.0,
                         reduction: str = "mean", block: int = HEAD_BLOCK):
    """``cross_entropy(linear(h, weight), targets, ...)`` for h (..., C), weight (V, C) and
    targets (...), computed at most ``block`` logits at a time, each block's gradient
    written over its logits: the (..., V) logits and their gradient are never held whole
    (a language model's largest arrays: 196 MiB each at GPT-2 small, batch 4 x 256).

    The blocked path runs on NumPy float32/float64 arrays; anything else (CuPy, mixed
    dtypes) runs the two ops it stands for. Small blocks save more memory and cost speed
    (a product over few rows runs below BLAS's full rate); the default keeps the full rate.
    """
    hd, wd = as_array(h), as_array(weight)
    fused = (xp_of(hd) is numpy and xp_of(wd) is numpy and hd.dtype == wd.dtype
             and hd.dtype in (numpy.float32, numpy.float64) and wd.ndim == 2 and hd.shape[-1:] == wd.shape[1:]
             and hd.flags.c_contiguous and wd.flags.c_contiguous)
    if not fused:
        return cross_entropy(linear(h, weight), targets, ignore_index, label_smoothing, reduction)
    lead = tuple(hd.shape[:-1])
    t = _checked_targets(as_array(targets), lead, wd.shape[0], ignore_index, label_smoothing, reduction)
    flat = h.reshape(-1, hd.shape[-1])                                   # (..., C) -> (N, C)
    out = LinearCrossEntropy.apply(flat, weight, t, ignore_index=ignore_index,
                                   label_smoothing=label_smoothing, reduction=reduction, block=int(block))
    return out.reshape(lead) if reduction == "none" else out


# =======================================================================================
# Normalisation
# =======================================================================================

class LayerNorm(Function):
    """y = (x - mean) / sqrt(var + eps) * w + b over the last axis (biased variance).

    With xhat the normalised input and r = 1/sqrt(var + eps):
    dx = r (gx - mean(gx) - xhat mean(gx xhat)),  gx = g w;  dw = sum(g xhat);  db = sum(g).
    The fused kernel (kernels/layer_norm.py) keeps x and the row statistics instead of xhat.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps=1e-5):
        fwd = kernels.get("layer_norm_forward", x) if _kernel_dtypes(x, weight, bias) else None
        if fwd:
            y, mean, rstd = fwd(x, weight, bias, eps)
            ctx.save(x=x, mean=mean, rstd=rstd, weight=weight, kernel=True)
            return y
        xp = xp_of(x)
        mu = x.mean(axis=-1, keepdims=True)
        xc = x - mu
        rstd = 1.0 / xp.sqrt((xc * xc).mean(axis=-1, keepdims=True) + eps)
        xhat = xc * rstd
        ctx.save(xhat=xhat, rstd=rstd, weight=weight, kernel=False)
        y = xhat if weight is None else xhat * weight
        return y if bias is None else y + bias

    @staticmethod
    def backward(ctx, g):
        bwd = kernels.get("layer_norm_backward", g) if ctx.kernel else None
        if bwd:
            dx, gw, gb = bwd(ctx.x, ctx.weight, ctx.mean, ctx.rstd, g)
            need_w, need_b = ctx.needs_input_grad[1:]
            return dx, gw if need_w else None, gb if need_b else None
        if ctx.kernel:                    # the kernel's forward kept x and the row statistics
            rstd = ctx.rstd[..., None]
            xhat = (ctx.x - ctx.mean[..., None]) * rstd
        else:
            xhat, rstd = ctx.xhat, ctx.rstd
        w = ctx.weight
        c = xhat.shape[-1]
        rows = g.reshape(-1, c)
        gw = (rows * xhat.reshape(-1, c)).sum(axis=0) if ctx.needs_input_grad[1] else None
        gb = rows.sum(axis=0) if ctx.needs_input_grad[2] else None
        gx = g if w is None else g * w
        dx = rstd * (gx - gx.mean(axis=-1, keepdims=True)
                     - xhat * (gx * xhat).mean(axis=-1, keepdims=True))
        return dx, gw, gb


def _kernel_dtypes(x, *params) -> bool:
    """The normalisation kernels take float32 or float64, with parameters of the same dtype."""
    return x.dtype in (numpy.float32, numpy.float64) and all(
        p is None or p.dtype == x.dtype for p in params)


def _check_norm(name, x, weight):
    if weight is not None and tuple(weight.shape) != (x.shape[-1],):
        raise ValueError(f"{name}: weight shape {tuple(weight.shape)} must be ({x.shape[-1]},), "
                         f"the last axis of the input {tuple(x.shape)}")


def layer_norm(x, weight=None, bias=None, eps: float = 1e-5):
    """Layer normalisation over the last axis (Ba, Kiros and Hinton 2016)."""
    _check_norm("layer_norm", x, weight)
    return LayerNorm.apply(x, weight, bias, eps=eps)


class RMSNorm(Function):
    """y = w * x / sqrt(mean(x^2) + eps) over the last axis (T5's LayerNorm; no mean, no bias).

    With r = 1/sqrt(mean(x^2) + eps) and xhat = x r:
    dx = r (gx - xhat mean(gx xhat)),  gx = g w;  dw = sum(g xhat).
    Half-precision inputs compute the mean square in float32, as T5 does.
    The fused kernel (kernels/layer_norm.py) keeps x and r instead of xhat.
    """

    @staticmethod
    def forward(ctx, x, weight, eps=1e-6):
        fwd = kernels.get("rms_norm_forward", x) if _kernel_dtypes(x, weight) else None
        if fwd:
            y, rstd = fwd(x, weight, eps)
            ctx.save(x=x, rstd=rstd, weight=weight, kernel=True)
            return y
        xp = xp_of(x)
        xf = x.astype("float32") if x.dtype.itemsize < 4 else x
        rstd = (1.0 / xp.sqrt((xf * xf).mean(axis=-1, keepdims=True) + eps)).astype(x.dtype, copy=False)
        xhat = x * rstd
        ctx.save(xhat=xhat, rstd=rstd, weight=weight, kernel=False)
        return xhat if weight is None else xhat * weight

    @staticmethod
    def backward(ctx, g):
        bwd = kernels.get("rms_norm_backward", g) if ctx.kernel else None
        if bwd:
            dx, gw = bwd(ctx.x, ctx.weight, ctx.rstd, g)
            return dx, gw if ctx.needs_input_grad[1] else None
        if ctx.kernel:                    # the kernel's forward kept x and r
            rstd = ctx.rstd[..., None]
            xhat = ctx.x * rstd
        else:
            xhat, rstd = ctx.xhat, ctx.rstd
        w = ctx.weight
        c = xhat.shape[-1]
        gw = (g.reshape(-1, c) * xhat.reshape(-1, c)).sum(axis=0) if ctx.needs_input_grad[1] else None
        gx = g if w is None else g * w
        dx = rstd * (gx - xhat * (gx * xhat).mean(axis=-1, keepdims=True))
        return dx, gw


def rms_norm(x, weight=None, eps: float = 1e-6):
    """Root-mean-square normalisation over the last axis (Zhang and Sennrich 2019)."""
    _check_norm("rms_norm", x, weight)
    return RMSNorm.apply(x, weight, eps=eps)


# =======================================================================================
# Dropout, embedding, linear
# =======================================================================================

def dropout(x, p: float = 0.1, training: bool = True, seed=None):
    """Zero each element with probability ``p`` and scale the rest by 1/(1-p) (inverted dropout).

    The keep/drop decisions come from a counter-based hash of (seed, element index), so a
    seed reproduces the same mask on any device. ``seed=None`` draws one from the library's
    generator (``mt.manual_seed`` makes runs repeatable). Identity when not training or p = 0.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    data = as_array(x)
    xp = xp_of(data)
    if p == 1.0:
        return x * xp.zeros(data.shape, dtype=data.dtype)
    seed = backend.next_seed() if seed is None else seed
    keep = _rng.dropout_keep_mask(xp, seed, 1, 1, data.size, p).reshape(data.shape)
    return x * (keep * (1.0 / (1.0 - p))).astype(data.dtype)


class Embedding(Function):
    """out = weight[ids]: a row of the table per id.   dweight = scatter-add of g into ids' rows."""

    @staticmethod
    def forward(ctx, weight, ids):
        ctx.save(ids=ids, shape=weight.shape)
        return weight[ids]                                   # (..., C)

    @staticmethod
    def backward(ctx, g):
        scatter = kernels.get("embedding_backward", g)
        if scatter:
            return scatter(ctx.ids, g, ctx.shape[0]), None
        xp = xp_of(g)
        dw = xp.zeros(ctx.shape, dtype=g.dtype)
        backend.scatter_add(dw, ctx.ids.reshape(-1), g.reshape(-1, ctx.shape[1]))
        return dw, None


def embedding(ids, weight):
    """Look up rows of ``weight`` (V, C) for integer ``ids`` of any shape -> (*ids.shape, C)."""
    ids = as_array(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"embedding: ids must be integers, got dtype {ids.dtype}")
    v = weight.shape[0]
    ids = _checked_ids(ids, (ids < 0) | (ids >= v), 0, lambda bad: (
        f"embedding: ids must be in [0, {v}) for a table of {v} rows; got {bad}"))
    return Embedding.apply(weight, ids)


class Linear(Function):
    """y = x W^T + b with W (out, in) as in ``torch.nn.Linear``.

    dx = g W;  dW = g^T x (summed over all leading axes);  db = sum(g).
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        if x.shape[-1] != weight.shape[1]:
            raise ValueError(f"linear: input shape {x.shape} has {x.shape[-1]} features but the "
                             f"weight {weight.shape} expects {weight.shape[1]}")
        ctx.save(x=x, weight=weight)
        # One 2-D matrix product over all leading axes: NumPy's batched matmul of a 3-D
        # array by a transposed 2-D one can miss BLAS entirely (100x slower).
        x2 = x.reshape(-1, x.shape[-1])                          # (..., in) -> (N, in)
        y = _product(x2, weight, trans_b=True).reshape(*x.shape[:-1], weight.shape[0])  # (N, out) -> (..., out)
        if bias is None:
            return y
        if bias.shape == y.shape[-1:] and bias.dtype == y.dtype:
            y += bias            # the product is ours: add in place, no second (N, out) array
            return y
        return y + bias

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.x, ctx.weight
        g2 = g.reshape(-1, g.shape[-1])                          # (N, out)
        dx = _product(g2, w).reshape(x.shape) if ctx.needs_input_grad[0] else None
        dw = _product(g2, x.reshape(-1, x.shape[-1]), trans_a=True) if ctx.needs_input_grad[1] else None
        db = g2.sum(axis=0) if ctx.needs_input_grad[2] else None
        return dx, dw, db

    @staticmethod
    def flops(ctx, phase, *arrays):
        """2 N in out forward (N rows); backward one product as large for dx and one for dW."""
        product = 2 * (ctx.x.size // ctx.x.shape[-1]) * ctx.weight.size
        return product if phase == "forward" else product * sum(ctx.needs_input_grad[:2])


def linear(x, weight, bias=None):
    return Linear.apply(x, weight, bias)


# The activations by the names nn.FeedForward uses, as the ops that compute them.
_ACTIVATION_OPS = {"relu": _ops.Relu, "gelu": _ops.Gelu, "gelu_tanh": _ops.GeluTanh}


class ActivationLinear(Function):
    """y = h W^T + b with h = act(a): a feed-forward layer's activation and output
    projection, keeping a for backward but not h.

    Selective activation recomputation (Korthikanti et al. 2022): the two d_ff-wide arrays
    a and h are the largest a transformer block keeps for backward. Keeping a alone and
    computing h = act(a) again in backward costs one elementwise pass and saves a quarter
    of what a GPT-2 block keeps (12 MiB a layer at batch 4 x 256, 144 MiB for GPT-2 small).
    Backward, with h recomputed:  dW = g^T h;  db = sum(g);  dh = g W;  da = act'(a) dh.
    The activation and the product are the library's own ops (``Gelu``, ``GeluTanh``,
    ``Relu`` and ``Linear``), called on arrays, so this op adds no arithmetic of its own.
    """

    @staticmethod
    def forward(ctx, a, weight, bias, activation):
        h = _ACTIVATION_OPS[activation].forward(Context(), a)          # (..., d_ff), not kept
        ctx.save(a=a, weight=weight, activation=activation)
        return Linear.forward(Context(), h, weight, bias)               # (..., d_ff) -> (..., out)

    @staticmethod
    def backward(ctx, g):
        act = _ACTIVATION_OPS[ctx.activation]
        act_ctx, lin_ctx = Context(), Context()
        lin_ctx.save(x=act.forward(act_ctx, ctx.a), weight=ctx.weight)   # h again
        lin_ctx.needs_input_grad = ctx.needs_input_grad[:3]
        dh, dw, db = Linear.backward(lin_ctx, g)
        lin_ctx.release()                                               # h is no longer needed
        da = act.backward(act_ctx, dh) if dh is not None else None
        return da, dw, db, None

    @staticmethod
    def flops(ctx, phase, *arrays):
        """Linear's: 2 N d_ff out forward; one such product for dh and one for dW backward."""
        product = 2 * (ctx.a.size // ctx.a.shape[-1]) * ctx.weight.size
        return product if phase == "forward" else product * sum(ctx.needs_input_grad[:2])


def activation_linear(a, weight, bias=None, activation: str = "gelu"):
    """``linear(act(a), weight, bias)`` for act one of "relu", "gelu" (exact, BERT) and
    "gelu_tanh" (GPT-2), the same values and gradients with act(a) not kept for backward
    (recomputed there: see ``ActivationLinear``)."""
    if activation not in _ACTIVATION_OPS:
        raise ValueError(f"activation_linear: activation must be one of {tuple(_ACTIVATION_OPS)}, "
                         f"got {activation!r}")
    return ActivationLinear.apply(a, weight, bias, activation)


# =======================================================================================
# Attention
# =======================================================================================

def causal_mask(xp, tq: int, tk: int):
    """(Tq, Tk) boolean: query i may see key j iff j <= i + Tk - Tq (bottom-right aligned).

    With Tq == Tk this is the usual lower triangle. With fewer queries than keys (decoding
    with a cache of earlier keys) the last query sees every key. PyTorch's ``is_causal``
    aligns top-left instead (query i sees keys 0..i), which is wrong for a cache.
    """
    return xp.tri(tq, tk, k=tk - tq, dtype=bool)


def _attention_reference(q, k, v, allowed, bias, scale, dropout_p, seed):
    """softmax(scale q k^T + bias, over allowed keys) v, with optional dropout on the probabilities."""
    scores = matmul(q, k.transpose(-1, -2)) * scale                # (..., Tq, D) -> (..., Tq, Tk)
    if bias is not None:
        scores = scores + bias
    p = softmax(scores, axis=-1, mask=allowed)
    if dropout_p > 0.0:
        xp = xp_of(q.data)
        *lead, tq, tk = p.shape
        keep = _rng.dropout_keep_mask(xp, seed, math.prod(lead), tq, tk, dropout_p).reshape(p.shape)
        p = p * (keep * (1.0 / (1.0 - dropout_p))).astype(p.dtype)
    return matmul(p, v)                                             # (..., Tq, Tk) -> (..., Tq, D)


class FlashAttention(Function):
    """O = dropout(P) V with P = softmax(S), S = scale Q K^T + bias, through the tiled kernel.

    q (B, H, Tq, D), k and v (B, H, Tk, D). Masked (and causally hidden) entries of S are
    -inf, so their P is 0. Only the row logsumexp M of S is kept for backward, which rebuilds
    P = exp(S - M) one tile at a time (kernels/attention.py); no (Tq, Tk) matrix is stored.
    With keep the dropout mask and Pd = P * keep / (1 - p):
    dV = Pd^T g;  dP = (g V^T) * keep / (1 - p);  dS = P * (dP - Delta), Delta = rowsum(g * O);
    dQ = scale dS K;  dK = scale dS^T Q;  dbias = dS summed to the bias's shape.
    """

    @staticmethod
    def forward(ctx, q, k, v, bias, mask, scale, causal, dropout_p, seed):
        packed_shape = None
        if k is None:        # q holds all three: (B, T, 3, H, D), see packed_self_attention
            packed_shape = q.shape
            q, k, v = (q[:, :, s].transpose(0, 2, 1, 3) for s in range(3))   # 3 x (B, H, T, D) views
        b, h, tq, _ = q.shape
        tk = k.shape[2]
        xp = xp_of(q)
        mask4 = None if mask is None else xp.broadcast_to(mask, (b, h, tq, tk))
        bias4 = None
        if bias is not None:
            bb = b if (bias.ndim == 4 and bias.shape[0] == b) else 1
            bias4 = xp.broadcast_to(bias, (bb, h, tq, tk))
        o, lse = kernels.get("attention_forward", q)(q, k, v, mask4, bias4, scale, causal, dropout_p, seed)
        ctx.save(q=q, k=k, v=v, o=o, lse=lse, mask4=mask4, bias4=bias4,
                 bias_shape=None if bias is None else bias.shape, packed_shape=packed_shape,
                 scale=scale, causal=causal, dropout_p=dropout_p, seed=seed)
        return o

    @staticmethod
    def backward(ctx, g):
        bwd = kernels.get("attention_backward", g)
        args = (ctx.q, ctx.k, ctx.v, ctx.o, ctx.lse, g, ctx.mask4, ctx.bias4, ctx.scale,
                ctx.causal, ctx.dropout_p, ctx.seed)
        if ctx.packed_shape is None:
            dq, dk, dv, dbias = bwd(*args)
            grads = (dq, dk, dv)
        else:
            # The kernel writes dQ, dK and dV straight into one packed gradient.
            dtype = g.dtype if g.dtype in (numpy.float32, numpy.float64) else numpy.float32
            dqkv = xp_of(g).empty(ctx.packed_shape, dtype)               # (B, T, 3, H, D)
            *_, dbias = bwd(*args, out=tuple(dqkv[:, :, s].transpose(0, 2, 1, 3) for s in range(3)))
            grads = (dqkv.astype(g.dtype, copy=False), None, None)
        if dbias is not None:
            dbias = unbroadcast(dbias, ctx.bias_shape)
        return (*grads, dbias)

    @staticmethod
    def flops(ctx, phase, *arrays):
        """The products of the attention it computes, over every (query, key) pair: QK^T and
        PV forward (2 Tq Tk D each per head), dV, dP, dQ and dK backward (twice that). The
        kernel itself also recomputes QK^T in backward and skips tiles a causal mask hides
        entirely; the count is the model's work, not the kernel's."""
        from minitransformer.autograd.hooks import matmul_flops

        q, k, v = ctx.q, ctx.k, ctx.v
        qk = matmul_flops(q.shape, k.shape[:-2] + (k.shape[-1], k.shape[-2]))   # (Tq, D) @ (D, Tk)
        pv = matmul_flops(q.shape[:-1] + (k.shape[-2],), v.shape)               # (Tq, Tk) @ (Tk, D)
        return (qk + pv) * (1 if phase == "forward" else 2)


def _attention_options(name, mask, scores_shape, head_dim, scale, dropout_p, seed):
    """(mask, scale, seed) checked and filled in: the mask must broadcast to the scores'
    shape, the scale defaults to 1/sqrt(D), and dropout draws a seed when none is given."""
    mask = _check_mask(name, mask, scores_shape)
    scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    if dropout_p > 0.0 and seed is None:
        seed = backend.next_seed()
    return mask, scale, seed


def scaled_dot_product_attention(q, k, v, mask=None, is_causal: bool = False, bias=None,
                                 scale=None, dropout_p: float = 0.0, seed=None):
    """Attention(Q, K, V) = softmax(scale Q K^T + bias) V  (Vaswani et al. 2017).

    q (..., Tq, D), k (..., Tk, D), v (..., Tk, Dv) -> (..., Tq, Dv).
    ``mask``: boolean, True where a query may attend to a key, broadcastable to (..., Tq, Tk)
    (as in PyTorch). ``is_causal``: query i sees keys j <= i + Tk - Tq, aligned bottom-right
    so that decoding with a KV cache works; note PyTorch's ``is_causal`` aligns top-left.
    ``bias``: added to the scores (T5's relative position bias), differentiable.
    ``scale``: defaults to 1/sqrt(D); T5 passes 1.0. A query with no allowed key returns
    zeros, and its gradients are zero, never NaN. ``dropout_p`` drops attention
    probabilities with a counter-based mask drawn from ``seed``.
    """
    qd, kd, vd = as_array(q), as_array(k), as_array(v)
    if qd.shape[-1] != kd.shape[-1] or kd.shape[-2] != vd.shape[-2]:
        raise ValueError(f"scaled_dot_product_attention: q {qd.shape}, k {kd.shape} and v {vd.shape} "
                         "must agree: q and k on the head size D, k and v on Tk")
    tq, tk = qd.shape[-2], kd.shape[-2]
    xp = xp_of(qd)
    mask, scale, seed = _attention_options("scaled_dot_product_attention", mask,
                                           (*qd.shape[:-2], tq, tk), qd.shape[-1], scale,
                                           dropout_p, seed)

    if qd.ndim == 4 and kernels.get("attention_forward", qd) is not None:
        return FlashAttention.apply(q, k, v, bias, mask=mask, scale=scale, causal=is_causal,
                                    dropout_p=dropout_p, seed=seed)
    allowed = mask
    if is_causal:
        c = causal_mask(xp, tq, tk)
        allowed = c if allowed is None else allowed & c
    return _attention_reference(q, k, v, allowed, bias, scale, dropout_p, seed)


def packed_self_attention(qkv, mask=None, is_causal: bool = False, bias=None, scale=None,
                          dropout_p: float = 0.0, seed=None):
    """Self-attention whose queries, keys and values are the three parts of one projection:
    qkv (B, T, 3, H, D), as GPT-2's fused c_attn gives them reshaped -> (B, H, T, D).

    The same as ``scaled_dot_product_attention`` of qkv[:, :, 0], [1] and [2] as (B, H, T, D)
    heads (the other arguments too). Through the attention kernel it is one op: the kernel
    reads the three where they lie and writes their gradients into one (B, T, 3, H, D) array,
    which is the projection's output gradient as it is; taken apart as three slices, each
    slice's backward would fill a zero (B, T, 3, H, D) array and the engine would add the
    three up.
    """
    data = as_array(qkv)
    if data.ndim != 5 or data.shape[2] != 3:
        raise ValueError(f"packed_self_attention: qkv must be (B, T, 3, H, D), got shape {data.shape}; "
                         "reshape a fused (B, T, 3 H D) projection with .reshape(B, T, 3, H, D)")
    if kernels.get("attention_forward", data) is None:
        heads = qkv.permute(2, 0, 3, 1, 4)                  # (B, T, 3, H, D) -> (3, B, H, T, D)
        return scaled_dot_product_attention(heads[0], heads[1], heads[2], mask=mask,
                                            is_causal=is_causal, bias=bias, scale=scale,
                                            dropout_p=dropout_p, seed=seed)
    b, t, _, h, d = data.shape
    mask, scale, seed = _attention_options("packed_self_attention", mask, (b, h, t, t), d, scale,
                                           dropout_p, seed)
    return FlashAttention.apply(qkv, None, None, bias, mask=mask, scale=scale, causal=is_causal,
                                dropout_p=dropout_p, seed=seed)
