"""Run the FlashAttention-2 style CUDA kernel under Numba's CUDA simulator at production shapes.

Run as ``NUMBA_ENABLE_CUDASIM=1 python -m tests.kernels.flash_sim_check`` (see
``test_flash_attention_kernel.py``). Each case runs ``cuda_flash_attention`` with its real
tiles and 128-thread blocks at head sizes 64 and 128, on a few dozen queries and keys (the
simulator runs every thread as a Python thread), with outputs pre-filled with NaN so that
an element the kernel never writes fails the comparison. It compares O, the log-sum-exp and
every gradient with ``cuda_attention`` (the one-thread-per-query kernel it replaces, the
reference) and with the CPU kernel ``attention``. Prints one line per check and exits
non-zero on a mismatch.
"""
from __future__ import annotations

import sys
import warnings

import numpy as np

from .util import Checks, simulator_off

# (B, H, Tq, Tk, D), causal, mask kind, bias kind, dropout p
CASES = [
    ((2, 1, 40, 40, 64), True, "padding", "shared", 0.2),
    ((2, 1, 20, 36, 128), True, "full", "per_batch", 0.0),
    ((1, 1, 24, 12, 64), True, "none", "none", 0.0),    # Tq > Tk: the first rows see no key
    ((1, 1, 16, 72, 64), False, "none", "none", 0.0),   # full key tiles that test no entry
]


def make_case(rng, shape, mask_kind, bias_kind):
    """q, k, v, dO, mask and bias (float32) for one case."""
    b, h, tq, tk, d = shape
    q, k, v = (rng.standard_normal((b, h, t, d)).astype(np.float32) for t in (tq, tk, tk))
    do = rng.standard_normal((b, h, tq, d)).astype(np.float32)
    mask = None
    if mask_kind == "padding":
        mask = np.ones((b, 1, 1, tk), bool)
        mask[1, 0, 0, :5] = False
        mask[0, 0, 0, 3] = False
    elif mask_kind == "full":
        mask = rng.random((b, 1, tq, tk)) > 0.3
        mask[0, 0, 2] = False                # a row that sees nothing
    bias = None
    if bias_kind != "none":
        bias = rng.standard_normal((1 if bias_kind == "shared" else b, h, tq, tk)).astype(np.float32)
    return q, k, v, do, mask, bias


def main() -> int:
    if simulator_off():
        return 2
    # The dropout hash multiplies uint64s modulo 2**64 on purpose; NumPy scalars warn.
    warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)

    from minitransformer.kernels import _cuda, attention, cuda_attention, cuda_flash_attention

    checks = Checks()
    checks.report("shuffles", not cuda_flash_attention.use_shuffles(),
                  "the simulator has no warp shuffles; the kernel must not use them")

    def check(name, got, want):
        checks.close(name, got, want, np.float32)

    rng = np.random.default_rng(0)
    for shape, causal, mask_kind, bias_kind, p in CASES:
        q, k, v, do, mask, bias = make_case(rng, shape, mask_kind, bias_kind)
        args = (mask, bias, None, causal, p, 7)
        name = f"flash {shape} causal={causal} {mask_kind} {bias_kind} p={p}"
        with _cuda.nan_fill():
            o, lse = cuda_flash_attention.attention_forward(q, k, v, *args)
            grads = cuda_flash_attention.attention_backward(q, k, v, o, lse, do, *args)
        ref_o, ref_lse = cuda_attention.attention_forward(q, k, v, *args)
        ref_grads = cuda_attention.attention_backward(q, k, v, ref_o, ref_lse, do, *args)
        cpu_o, cpu_lse = attention.attention_forward(q, k, v, *args)
        cpu_grads = attention.attention_backward(q, k, v, cpu_o, cpu_lse, do, *args)
        finite = np.isfinite(cpu_lse)
        lse_ok = np.array_equal(np.isfinite(lse), finite)
        for want, other in ((ref_o, "cuda_attention"), (cpu_o, "cpu")):
            check(f"{name} O vs {other}", o, want)
        checks.report(f"{name} lse", lse_ok, "-inf exactly where the CPU kernel's is")
        check(f"{name} lse vs cpu", np.where(finite, lse, 0), np.where(finite, cpu_lse, 0))
        for part, g, r, c in zip(("dq", "dk", "dv", "dbias"), grads, ref_grads, cpu_grads):
            if r is None:
                continue
            check(f"{name} {part} vs cuda_attention", g, r)
            check(f"{name} {part} vs cpu", g, c)
    return checks.exit_status()


if __name__ == "__main__":
    sys.exit(main())
