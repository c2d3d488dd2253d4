"""The AdamW update on a CUDA GPU, fused into one pass over a parameter and its state.

For a parameter p with gradient g, moments m and v, step t (the math of ``adamw.py``):

    m <- b1 m + (1 - b1) g
    v <- b2 v + (1 - b2) g^2
    p <- p (1 - lr wd) - (lr / (1 - b1^t)) m / (sqrt(v / (1 - b2^t)) + eps)

The reference is about ten CuPy operations per parameter, each a kernel launch and a pass
over memory; this kernel reads p, g, m, v once and writes p, m, v once, in one launch per
parameter (the optimizer calls it parameter by parameter, as it does the CPU kernel). Each
thread takes elements i, i + stride, ... of the flat arrays (a grid-stride loop).

As on the CPU, the kernel repeats the reference's arithmetic operation for operation, with
the constants rounded to the parameter's dtype first, so each operation is one IEEE-rounded
float operation in both: the division and square root are the correctly rounded ones (no
fast-math). The CUDA compiler may fuse a multiply and an add into one FMA (one rounding
instead of two), a difference of at most one unit in the last place per operation, which
is what the tests allow.
"""
from __future__ import annotations

import functools
import math

from minitransformer import backend

from ._cuda import THREADS, bind_cuda, grid_for_elements, launch_stream

cuda = None  # numba.cuda once a kernel is built (see _cuda.bind_cuda)


@functools.lru_cache(maxsize=None)
def _kernel(ft):
    bind_cuda(globals())

    @cuda.jit
    def kernel(p, g, m, v, b1, c1, b2, c2, decay, bias2, eps, step_size):
        # p, g, m, v: flat (n,); the scalars are of type ft
        for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
            gi = g[i]
            mi = m[i] * b1 + c1 * gi
            vi = v[i] * b2 + c2 * (gi * gi)
            m[i] = mi
            v[i] = vi
            # ft(...) is a no-op on the GPU; under the simulator it rounds Python's float64
            # square root to float32, as the reference's float32 sqrt rounds.
            denom = ft(math.sqrt(vi / bias2)) + eps
            p[i] = p[i] * decay - step_size * (mi / denom)

    return kernel


def _check(xp, name, a, like):
    if backend.xp(a) is not xp or a.dtype != like.dtype or a.shape != like.shape:
        got = f"{type(a).__name__} {getattr(a, 'dtype', '')} {getattr(a, 'shape', '')}"
        raise ValueError(f"adamw_update: {name} must be a {xp.__name__} array of dtype {like.dtype} "
                         f"and shape {like.shape} like the parameter, got {got}")
    if not a.flags.c_contiguous:
        raise ValueError(f"adamw_update: {name} must be C-contiguous (it is updated in place "
                         f"through a flat view); pass {xp.__name__}.ascontiguousarray of it")


def adamw_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, bias1, bias2, *,
                 threads=THREADS) -> None:
    """One AdamW step of parameter ``p`` in place, updating the moments ``m`` and ``v`` too.

    ``bias1 = 1 - beta1**t`` and ``bias2 = 1 - beta2**t`` are the bias corrections of step t.
    p, m, v: writeable, C-contiguous arrays of one float dtype on one device; g: the same
    dtype and shape.
    """
    xp = backend.xp(p)
    if p.dtype not in (xp.float32, xp.float64):
        raise ValueError(f"adamw_update: the parameter must be a float32 or float64 array, got "
                         f"{type(p).__name__} {p.dtype}; use the reference update for other types")
    for name, a in (("p", p), ("g", g), ("m", m), ("v", v)):
        _check(xp, name, a, p)
    if p.size == 0:
        return
    t = p.dtype.type
    # Each constant is formed in Python floats and then rounded once to p's dtype, as NumPy
    # and CuPy do with the reference's scalar operands.
    _kernel(t)[grid_for_elements(p.size, threads), threads, launch_stream(p)](
        p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), t(beta1), t(1.0 - beta1),
        t(beta2), t(1.0 - beta2), t(1.0 - lr * weight_decay), t(bias2), t(eps), t(lr / bias1))
