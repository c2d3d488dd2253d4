"""Run the CUDA kernels under Numba's CUDA simulator and compare them with the references.

Run as ``NUMBA_ENABLE_CUDASIM=1 python -m tests.kernels.cuda_sim_check`` (the simulator
must be switched on before numba is first imported, hence a process of its own; see
``test_cuda_simulator.py``). The simulator runs every GPU thread as a Python thread and
accepts NumPy arrays, so the shapes are tiny, and the tiles smaller still, so that the
kernels cross tile edges. Prints one line per check and exits non-zero on a mismatch.
"""
from __future__ import annotations

import sys
import warnings

import numpy as np

from .util import Checks, simulator_off


def main() -> int:
    if simulator_off():
        return 2
    # The dropout hash multiplies uint64s modulo 2**64 on purpose; NumPy scalars (which the
    # simulator computes with) warn about the wrap-around.
    warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)

    import minitransformer as mt
    import minitransformer.functional as F
    from minitransformer import kernels
    from minitransformer.kernels import cuda_attention, cuda_cross_entropy, cuda_softmax

    checks = Checks()
    check = checks.close

    rng = np.random.default_rng(0)
    with kernels.using("reference"):
        # Softmax: a broadcast mask with one fully masked row.
        for dtype in (np.float32, np.float64):
            x = rng.standard_normal((2, 3, 9)).astype(dtype)
            dy = rng.standard_normal(x.shape).astype(dtype)
            mask = rng.random((2, 1, 9)) > 0.3
            mask[1, 0] = False
            t = mt.tensor(x, requires_grad=True)
            y = F.softmax(t, mask=mask)
            y.backward(dy)
            got = cuda_softmax.softmax_forward(x, mask, threads=4)
            check(f"softmax forward {dtype.__name__}", got, y.data, dtype)
            check(f"softmax backward {dtype.__name__}",
                  cuda_softmax.softmax_backward(got, dy, threads=4), t.grad, dtype)

        # Cross-entropy with an ignored row and label smoothing.
        for dtype in (np.float32, np.float64):
            logits = (rng.standard_normal((5, 11)) * 3).astype(dtype)
            targets = np.array([3, -100, 0, 10, 7])
            t = mt.tensor(logits, requires_grad=True)
            loss = F.cross_entropy(t, targets, label_smoothing=0.1, reduction="none")
            loss.backward(np.full(5, 0.25, dtype))
            losses, lse = cuda_cross_entropy.cross_entropy_forward(logits, targets, -100, 0.1,
                                                                   threads=4)
            check(f"cross-entropy losses {dtype.__name__}", losses, loss.data, dtype)
            row_grad = np.where(targets == -100, 0.0, 0.25).astype(dtype)
            dlogits = cuda_cross_entropy.cross_entropy_backward(logits, targets, lse, row_grad,
                                                                -100, 0.1, threads=4)
            check(f"cross-entropy dlogits {dtype.__name__}", dlogits, t.grad, dtype)

        # Attention: (B, H, Tq, Tk, D), causal, mask kind, bias kind, dropout, dtype.
        cases = [
            ((2, 1, 3, 6, 3), True, "padding", "shared", 0.3, np.float64),
            ((2, 2, 5, 5, 2), False, "full", "per_batch", 0.0, np.float32),
            ((1, 1, 6, 3, 4), True, "none", "none", 0.0, np.float64),
        ]
        for shape, causal, mask_kind, bias_kind, p, dtype in cases:
            b, h, tq, tk, d = shape
            q = rng.standard_normal((b, h, tq, d)).astype(dtype)
            k = rng.standard_normal((b, h, tk, d)).astype(dtype)
            v = rng.standard_normal((b, h, tk, d)).astype(dtype)
            do = rng.standard_normal((b, h, tq, d)).astype(dtype)
            mask = None
            if mask_kind == "padding":
                mask = np.ones((b, 1, 1, tk), bool)
                mask[0] = False                   # an entry that sees nothing
                mask[1, 0, 0, 0] = False
            elif mask_kind == "full":
                mask = rng.random((b, 1, tq, tk)) > 0.3
                mask[0, 0, 1] = False
            bias = None
            if bias_kind != "none":
                bias = rng.standard_normal((1 if bias_kind == "shared" else b, h, tq, tk))
                bias = bias.astype(dtype)
            ts = [mt.tensor(a, requires_grad=True) for a in (q, k, v)]
            tb = None if bias is None else mt.tensor(bias, requires_grad=True)
            o = F.scaled_dot_product_attention(*ts, mask=mask, is_causal=causal, bias=tb,
                                               scale=0.8, dropout_p=p, seed=11)
            o.backward(do)
            args = (mask, bias, 0.8, causal, p, 11)
            name = f"attention {shape} causal={causal} {mask_kind} {bias_kind} p={p}"
            got_o, lse = cuda_attention.attention_forward(q, k, v, *args, block_q=4, block_k=2)
            check(name + " O", got_o, o.data, dtype)
            grads = cuda_attention.attention_backward(q, k, v, got_o, lse, do, *args,
                                                      block_q=4, block_k=2)
            for g, t, part in zip(grads, ts, "qkv"):
                check(name + f" d{part}", g, t.grad, dtype)
            if tb is not None:
                check(name + " dbias", grads[3], tb.grad, dtype)

    return checks.exit_status()


if __name__ == "__main__":
    sys.exit(main())
