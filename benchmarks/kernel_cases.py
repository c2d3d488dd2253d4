"""One call of each kernel in the dispatch table, with arguments as the functional ops pass them.

``gpu_check`` runs each case through the CPU kernel and the CUDA kernel and compares the
results; ``cuda_resources`` runs the CUDA wrappers on them to learn every kernel's argument
types. A case is built for a :data:`SIZES` entry: "simulate" is small enough for Numba's
CUDA simulator (which runs each GPU thread as a Python thread), "gpu" crosses the tile and
block edges of the real kernels. Every name in ``kernels.dispatch._TABLE`` has cases here
(``tests/benchmarks/test_gpu_check.py`` checks it), so a CUDA twin added to the table is
compared the day it lands.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from minitransformer.kernels import attention, cross_entropy, layer_norm, softmax

F32 = np.float32

# rows x cols for the row-wise ops, a list of (batch, heads, Tq, Tk, D) for attention
SIZES = {
    "simulate": dict(rows=6, cols=37, attention=[(2, 1, 10, 13, 8)]),
    "gpu": dict(rows=300, cols=1000, attention=[(2, 4, 300, 300, 64), (2, 2, 200, 333, 128)]),
}


class Case(NamedTuple):
    label: str            # what the case exercises
    args: tuple           # positional arguments: NumPy arrays, scalars, strings, None
    compare: tuple | None = None   # indices of the (flattened) results to compare; None: all
    inplace: tuple = ()   # indices of arguments the kernel updates in place: results too


def _normal(rng, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(F32)


def _attention_inputs(rng, shape):
    b, h, tq, tk, d = shape
    q, k, v = _normal(rng, b, h, tq, d), _normal(rng, b, h, tk, d), _normal(rng, b, h, tk, d)
    mask = np.ones((b, 1, 1, tk), bool)
    mask[-1, 0, 0, :2] = False               # padding of the last batch entry
    bias = _normal(rng, 1, h, tq, tk)
    return q, k, v, np.broadcast_to(mask, (b, h, tq, tk)), bias


def cases(name: str, size: str = "simulate", rng=None, attention_shape=None) -> list[Case]:
    """The cases of kernel ``name`` at ``size`` (a key of SIZES); KeyError for an unknown name."""
    rng = np.random.default_rng(0) if rng is None else rng
    n, c = SIZES[size]["rows"], SIZES[size]["cols"]
    x, g = _normal(rng, n, c), _normal(rng, n, c)
    if name == "softmax_forward":
        mask = rng.random((1, c)) > 0.2
        return [Case("no mask", (x, None)), Case("key mask", (x, mask))]
    if name == "softmax_backward":
        return [Case("", (softmax.softmax_forward(x), g))]
    if name in ("cross_entropy_forward", "cross_entropy_backward"):
        logits = _normal(rng, n, c, scale=3.0)
        targets = rng.integers(0, c, n)
        targets[1] = -100                    # an ignored row
        if name == "cross_entropy_forward":
            return [Case("smoothing 0.1, an ignored row", (logits, targets, -100, 0.1))]
        _, lse = cross_entropy.cross_entropy_forward(logits, targets, -100, 0.1)
        row_grad = np.where(targets == -100, 0.0, 1.0 / n).astype(F32)
        return [Case("smoothing 0.1, an ignored row", (logits, targets, lse, row_grad, -100, 0.1))]
    if name in ("attention_forward", "attention_backward"):
        out = []
        for shape in [attention_shape] if attention_shape else SIZES[size]["attention"]:
            q, k, v, mask, bias = _attention_inputs(rng, shape)
            plain = (None, None, None, False, 0.0, None)
            full = (mask, bias, None, True, 0.1, 5)   # padding, a shared bias, causal, dropout
            label = "x".join(map(str, shape))
            for what, extra in ((f"{label} plain", plain), (f"{label} causal, mask, bias, dropout", full)):
                if name == "attention_forward":
                    out.append(Case(what, (q, k, v, *extra)))
                else:
                    o, lse = attention.attention_forward(q, k, v, *extra)
                    out.append(Case(what, (q, k, v, o, lse, _normal(rng, *o.shape), *extra)))
        return out
    if name == "gelu_forward":     # (y, saved): only y is compared, a twin may save otherwise
        return [Case(a, (x, a), compare=(0,)) for a in ("none", "tanh")]
    if name == "gelu_backward":
        return [Case(a, (x, g, a)) for a in ("none", "tanh")]
    w, b = 1.0 + _normal(rng, c, scale=0.1), _normal(rng, c, scale=0.1)
    if name == "layer_norm_forward":
        return [Case("", (x, w, b, 1e-5))]
    if name == "layer_norm_backward":
        _, mean, rstd = layer_norm.layer_norm_forward(x, w, b, 1e-5)
        return [Case("", (x, w, mean, rstd, g))]
    if name == "rms_norm_forward":
        return [Case("", (x, w, 1e-6))]
    if name == "rms_norm_backward":
        _, rstd = layer_norm.rms_norm_forward(x, w, 1e-6)
        return [Case("", (x, w, rstd, g))]
    if name == "embedding_backward":
        ids = rng.integers(0, max(n // 2, 1), n)            # repeated ids add up
        return [Case("repeated ids", (ids, g, n))]
    if name == "adamw_update":
        p, m = x.copy(), _normal(rng, n, c, scale=0.1)
        v = np.abs(_normal(rng, n, c, scale=0.01))
        t = 3
        args = (p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 0.01, 1 - 0.9 ** t, 1 - 0.999 ** t)
        return [Case("step 3", args, inplace=(0, 2, 3))]
    raise KeyError(f"kernel_cases: no case for kernel {name!r}; add one to benchmarks/kernel_cases.py")


def flatten(result) -> list:
    """The arrays (and Nones) of a kernel's result, nested tuples flattened in order."""
    if isinstance(result, (tuple, list)):
        return [a for part in result for a in flatten(part)]
    return [result]
