"""Watching the engine: an observer called around every op's forward and backward.

Tools that measure a step (a FLOP counter, a per-op timer) need to see each op as it runs.
Rather than replacing the ops' methods, they register an observer for the duration of a
block; the engine calls it around each ``Function.forward`` (in ``Function.apply``) and each
``Function.backward`` (in ``Tensor.backward``):

    def observer(fn, phase, ctx, arrays, run):
        out = run()                       # run the op (or the next observer); return its result
        ...                               # fn: the Function class; phase: "forward" | "backward"
        return out                        # arrays: the forward's inputs, or (grad,) in backward

    with mt.autograd.observe(observer):
        model.loss(batch).backward()

``ctx`` is the call's context: after ``run()`` it holds what forward saved (backward runs
before the engine releases it), and ``ctx.needs_input_grad``. Observers nest: the first
registered is the outermost. With none registered the engine runs the op directly, so
observing costs nothing when it is not used.

An op declares the matrix-product FLOPs of a call with ``Function.flops(ctx, phase,
*arrays)`` (0 unless it overrides it); ``matmul_flops`` is the one formula they share.
"""
from __future__ import annotations

import contextlib
import functools
import math

_observers: list = []


@contextlib.contextmanager
def observe(observer):
    """Call ``observer(fn, phase, ctx, arrays, run)`` around every op's forward and backward
    inside the block (see the module docstring); it is removed on leaving, even by an error."""
    if not callable(observer):
        raise TypeError(f"observe: the observer must be callable as observer(fn, phase, ctx, arrays, run), "
                        f"got {type(observer).__name__}")
    _observers.append(observer)
    try:
        yield observer
    finally:
        _observers.remove(observer)


def observing() -> bool:
    """Whether any observer is registered (the engine's one test per op)."""
    return bool(_observers)


def run_observed(fn, phase: str, ctx, arrays: tuple, run):
    """``run()`` through every registered observer, the first registered outermost."""
    for observer in reversed(_observers):
        run = functools.partial(observer, fn, phase, ctx, arrays, run)
    return run()


def matmul_flops(a_shape, b_shape) -> int:
    """2 m k n for each matrix of the broadcast batch of an (..., m, k) @ (..., k, n) product:
    one multiply and one add per term of every output element."""
    batch = _broadcast(tuple(a_shape[:-2]), tuple(b_shape[:-2]))
    return 2 * math.prod(batch) * a_shape[-2] * a_shape[-1] * b_shape[-1]


def _broadcast(a: tuple, b: tuple) -> tuple:
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    return tuple(max(x, y) for x, y in zip(a, b))


__all__ = ["observe", "observing", "matmul_flops"]
