"""The AdamW update on the CPU, fused into one pass over a parameter and its state.

For a parameter p with gradient g, moments m and v, step t (Loshchilov and Hutter 2019):

    m <- b1 m + (1 - b1) g
    v <- b2 v + (1 - b2) g^2
    p <- p (1 - lr wd) - (lr / (1 - b1^t)) m / (sqrt(v / (1 - b2^t)) + eps)

The reference (``minitransformer.optim.AdamW.step``) does this as about ten in-place NumPy
operations and temporaries, each a pass over memory; the kernel reads p, g, m, v once and
writes p, m, v once.

The kernel repeats the reference's arithmetic operation for operation: the same order, the
same constants rounded to the parameter's dtype first (NumPy rounds a Python float to
float32 before it multiplies a float32 array), and no fast-math flags, so LLVM may neither
reassociate nor fuse a multiply and an add. Each operation is then one IEEE-rounded float
operation in both, and the results agree bit for bit. The tests allow one unit in the last
place, the difference a fused multiply-add (one rounding instead of two) would make if a
compiler used one; a wrong formula, order or constant costs many units.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._cpu import run_parallel

# Elements per unit of work; a parameter of at most one chunk is updated on the calling
# thread alone (most parameters of a small model: a thread hand-off would cost more).
CHUNK = 1 << 16


# A thread's share is a contiguous run of chunks, first .. stop - 1 (``run_parallel`` with
# contiguous=True), and the loop runs over slices from index 0 (see gelu.py for why).
# error_model="numpy": no zero-divisor check on the division, which would stop the loop
# from vectorising; no fastmath, on purpose (see above).
@njit(nogil=True, error_model="numpy", cache=True)
def _adamw(first, stop, step, chunk, p, g, m, v, b1, c1, b2, c2, decay, bias2, eps,
           step_size):
    lo, hi = first * chunk, min(stop * chunk, p.size)
    ps, gs, ms, vs = p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi]
    for i in range(ps.size):
        gi = gs[i]
        mi = ms[i] * b1 + c1 * gi
        vi = vs[i] * b2 + c2 * (gi * gi)
        ms[i] = mi
        vs[i] = vi
        denom = np.sqrt(vi / bias2) + eps
        ps[i] = ps[i] * decay - step_size * (mi / denom)


def _check(name, a, like):
    if not isinstance(a, np.ndarray) or a.dtype != like.dtype or a.shape != like.shape:
        got = f"{type(a).__name__} {getattr(a, 'dtype', '')} {getattr(a, 'shape', '')}"
        raise ValueError(f"adamw_update: {name} must be a NumPy array of dtype {like.dtype} and "
                         f"shape {like.shape} like the parameter, got {got}")
    if not a.flags.c_contiguous:
        raise ValueError(f"adamw_update: {name} must be C-contiguous (it is updated in place "
                         "through a flat view); pass np.ascontiguousarray of it")


def adamw_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, bias1, bias2,
                 chunk: int = CHUNK) -> None:
    """One AdamW step of parameter ``p`` in place, updating the moments ``m`` and ``v`` too.

    ``bias1 = 1 - beta1**t`` and ``bias2 = 1 - beta2**t`` are the bias corrections of step t.
    p, m, v: writeable, C-contiguous arrays of one float dtype; g: the same dtype and shape.
    """
    if not isinstance(p, np.ndarray) or p.dtype not in (np.float32, np.float64):
        raise ValueError(f"adamw_update: the parameter must be a float32 or float64 NumPy array, "
                         f"got {type(p).__name__} {getattr(p, 'dtype', '')}; use the reference "
                         "update for other types")
    for name, a in (("p", p), ("g", g), ("m", m), ("v", v)):
        _check(name, a, p)
    for name, a in (("p", p), ("m", m), ("v", v)):
        if not a.flags.writeable:
            raise ValueError(f"adamw_update: {name} is read-only; it is updated in place")
    t = p.dtype.type
    # Each constant is formed in Python floats and then rounded once to p's dtype, as NumPy
    # does with the reference's scalar operands.
    run_parallel(_adamw, -(-p.size // chunk), chunk, p.reshape(-1), g.reshape(-1),
                 m.reshape(-1), v.reshape(-1), t(beta1), t(1.0 - beta1), t(beta2),
                 t(1.0 - beta2), t(1.0 - lr * weight_decay), t(bias2), t(eps), t(lr / bias1),
                 contiguous=True)
