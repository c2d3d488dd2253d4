"""Counting the FLOPs a step actually executes, by watching the autograd engine.

The formulas of ``flops`` say what a step should compute; this counter measures what it
did, op by op, so the tests can hold the two equal for every family.
"""
from __future__ import annotations

import contextlib


class FlopCount:
    """Matrix-product FLOPs counted by ``count_matmul_flops``, in total and per op and pass."""

    def __init__(self):
        self.by_op: dict[str, int] = {}

    def add(self, key: str, flops: int) -> None:
        self.by_op[key] = self.by_op.get(key, 0) + int(flops)

    @property
    def total(self) -> int:
        return sum(self.by_op.values())

    @property
    def forward(self) -> int:
        return sum(v for k, v in self.by_op.items() if k.endswith(".forward"))

    @property
    def backward(self) -> int:
        return sum(v for k, v in self.by_op.items() if k.endswith(".backward"))

    def __repr__(self):
        return f"FlopCount(total={self.total:,}, by_op={self.by_op})"


@contextlib.contextmanager
def count_matmul_flops():
    """Count the matrix-product FLOPs of the ops run inside the block::

        with count_matmul_flops() as count:
            model.loss(batch).backward()
        count.total, count.by_op

    An observer of the autograd engine (``mt.autograd.observe``) asks every op's forward and
    backward for the FLOPs it declares (``Function.flops``: ``MatMul``, ``functional.Linear``
    and ``functional.FlashAttention`` multiply matrices). A product (m, k) x (k, n) counts
    2 m k n; a backward counts only the gradients it computes. The tiled attention kernel
    declares the products the reference attention runs (QK^T and PV forward; dV, dP, dQ, dK
    backward) over every (query, key) pair; the kernel itself also recomputes QK^T in
    backward and skips tiles a causal mask hides entirely.
    """
    from minitransformer import autograd

    count = FlopCount()

    def observer(fn, phase, ctx, arrays, run):
        out = run()
        flops = fn.flops(ctx, phase, *arrays)
        if flops:
            count.add(f"{fn.__name__}.{phase}", flops)
        return out

    with autograd.observe(observer):
        yield count
