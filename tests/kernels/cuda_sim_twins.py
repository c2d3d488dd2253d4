"""Every CUDA twin under Numba's CUDA simulator, against its CPU kernel and the reference.

Run as ``NUMBA_ENABLE_CUDASIM=1 python -m tests.kernels.cuda_sim_twins`` (a process of its
own, as ``cuda_sim_check.py``; ``test_cuda_twins.py`` runs it). Covered: GELU (both forms),
LayerNorm and RMSNorm (with and without parameters), embedding backward, AdamW, and the
softmax and cross-entropy kernels on both of their paths (a row held in registers, and the
looped path of a row too wide for them). Under the simulator the kernels take the
shared-memory reduction; the warp-shuffle one needs a GPU (``test_cuda_twins.py`` compiles
it). Every call runs under ``_cuda.nan_fill()``, so an output element a kernel fails to
write is NaN and fails its comparison. Blocks of 4 threads keep the simulator (one Python
thread per GPU thread) quick, and make rows span several elements per thread.
Prints one line per check and exits non-zero on a mismatch.
"""
from __future__ import annotations

import importlib
import sys
import types
import warnings

import numpy as np

from .util import Checks, simulator_off

THREADS = 4


def main() -> int:
    if simulator_off():
        return 2
    # GELU's tails overflow a^3 to inf on purpose; NumPy scalars (which the simulator
    # computes with, in threads of its own, out of np.errstate's reach) warn about it.
    warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)

    import minitransformer as mt
    import minitransformer.functional as F
    from minitransformer import kernels, optim
    from minitransformer.kernels import _cuda, adamw, dispatch, cross_entropy, cuda_adamw, cuda_cross_entropy
    from minitransformer.kernels import cuda_embedding, cuda_gelu, cuda_layer_norm, cuda_softmax
    from minitransformer.kernels import embedding, gelu, layer_norm, softmax

    checks = Checks()

    def check(name, got, want, dtype):
        if got.dtype != want.dtype:
            checks.report(name, False, f"dtype {got.dtype}, expected {want.dtype}")
        else:
            checks.close(name, got, want, dtype)

    def check_exact(name, got, want):
        ok = got.dtype == want.dtype and np.array_equal(got, want)
        checks.report(name, ok, "equal" if ok else "differs")

    def check_ulp(name, got, want, maxulp):
        try:
            np.testing.assert_array_max_ulp(got, want, maxulp=maxulp)
            ok = got.dtype == want.dtype
        except AssertionError:
            ok = False
        checks.report(name, ok, f"{'within' if ok else 'beyond'} {maxulp} ulp")

    rng = np.random.default_rng(0)
    registers = 3                                         # a row of 3 x THREADS - 1 elements
    looped = THREADS * _cuda.MAX_PER_THREAD + 3           # too wide for registers
    for width in (registers * THREADS - 1, looped):
        _, per_thread = _cuda.row_layout(width, THREADS)
        assert (per_thread == 0) == (width == looped), (width, per_thread)

    with _cuda.nan_fill(), kernels.using("reference"):
        for dtype in (np.float32, np.float64):
            name = dtype.__name__

            # GELU, both forms, against the CPU kernel and the autograd reference.
            x = (rng.standard_normal((3, 7)) * 3).astype(dtype)
            g = rng.standard_normal(x.shape).astype(dtype)
            for form in ("none", "tanh"):
                t = mt.tensor(x, requires_grad=True)
                y_ref = F.gelu(t, approximate=form)
                y_ref.backward(g)
                y, saved = cuda_gelu.gelu_forward(x, form, threads=THREADS)
                dx = cuda_gelu.gelu_backward(saved, g, form, threads=THREADS)
                check(f"gelu {form} forward {name}", y, y_ref.data, dtype)
                check(f"gelu {form} backward {name}", dx, t.grad, dtype)
                check(f"gelu {form} forward = CPU kernel {name}", y, gelu.gelu_forward(x, form)[0], dtype)
                # The tails, where a^3 or a^2 overflow: finite, and the CPU kernel's limits.
                tails = np.array([-1e30, -100.0, -30.0, 30.0, 100.0, 1e30], dtype)
                y, saved = cuda_gelu.gelu_forward(tails, form, threads=THREADS)
                dx = cuda_gelu.gelu_backward(saved, np.ones_like(tails), form, threads=THREADS)
                cpu_y = gelu.gelu_forward(tails, form)[0]
                cpu_dx = gelu.gelu_backward(tails, np.ones_like(tails), form)
                check(f"gelu {form} tails = CPU kernel {name}", np.stack([y, dx]), np.stack([cpu_y, cpu_dx]), dtype)

            # LayerNorm and RMSNorm on both paths (the looped one in float32 only: the
            # simulator computes in NumPy scalars of either type alike), with and without
            # parameters, and more rows than backward blocks, so that a block sums dw and db
            # over two rows.
            for width, variants in ((registers * THREADS - 1, ("w, b", "none")), (looped, ("w, b",))):
                if width == looped and dtype != np.float32:
                    continue
                x = rng.standard_normal((2, 2, width)).astype(dtype) * 2 + 0.5
                g = rng.standard_normal(x.shape).astype(dtype)
                w = rng.standard_normal(width).astype(dtype)
                b = rng.standard_normal(width).astype(dtype)
                for params in variants:
                    pw, pb = (w, b) if params == "w, b" else (None, None)
                    tag = f"width {width} {params} {name}"
                    tx = mt.tensor(x, requires_grad=True)
                    tw = None if pw is None else mt.tensor(pw, requires_grad=True)
                    tb = None if pb is None else mt.tensor(pb, requires_grad=True)
                    y_ref = F.layer_norm(tx, tw, tb, eps=1e-5)
                    y_ref.backward(g)
                    y, mean, rstd = cuda_layer_norm.layer_norm_forward(x, pw, pb, 1e-5, threads=THREADS)
                    cpu = layer_norm.layer_norm_forward(x, pw, pb, 1e-5)
                    check(f"layer_norm forward {tag}", y, y_ref.data, dtype)
                    check(f"layer_norm mean, rstd = CPU kernel {tag}", np.stack([mean, rstd]),
                          np.stack(cpu[1:]), dtype)
                    old, cuda_layer_norm.BACKWARD_BLOCKS = cuda_layer_norm.BACKWARD_BLOCKS, 3
                    try:
                        dx, dw, db = cuda_layer_norm.layer_norm_backward(x, pw, mean, rstd, g, threads=THREADS)
                    finally:
                        cuda_layer_norm.BACKWARD_BLOCKS = old
                    cpu_dx, cpu_dw, cpu_db = layer_norm.layer_norm_backward(x, pw, *cpu[1:], g)
                    check(f"layer_norm dx {tag}", dx, tx.grad, dtype)
                    check(f"layer_norm dw, db = CPU kernel {tag}", np.stack([dw, db]), np.stack([cpu_dw, cpu_db]),
                          dtype)
                    if pw is not None:
                        check(f"layer_norm dw, db {tag}", np.stack([dw, db]), np.stack([tw.grad, tb.grad]), dtype)

                    tx = mt.tensor(x, requires_grad=True)
                    tw = None if pw is None else mt.tensor(pw, requires_grad=True)
                    y_ref = F.rms_norm(tx, tw, eps=1e-6)
                    y_ref.backward(g)
                    y, rstd = cuda_layer_norm.rms_norm_forward(x, pw, 1e-6, threads=THREADS)
                    check(f"rms_norm forward {tag}", y, y_ref.data, dtype)
                    check(f"rms_norm rstd = CPU kernel {tag}", rstd, layer_norm.rms_norm_forward(x, pw, 1e-6)[1],
                          dtype)
                    dx, dw = cuda_layer_norm.rms_norm_backward(x, pw, rstd, g, threads=THREADS)
                    check(f"rms_norm dx {tag}", dx, tx.grad, dtype)
                    check(f"rms_norm dw = CPU kernel {tag}", dw,
                          layer_norm.rms_norm_backward(x, pw, rstd, g)[1], dtype)
                    if pw is not None:
                        check(f"rms_norm dw {tag}", dw, tw.grad, dtype)

            # Embedding backward: repeated ids, rows no id names; the same bits as the CPU
            # kernel and numpy.add.at, which add in the same (position) order.
            ids = np.array([[3, 0, 3, 6, 3], [0, 1, 3, 6, 1]])
            g = rng.standard_normal((*ids.shape, 5)).astype(dtype)
            dw = cuda_embedding.embedding_backward(ids, g, 8, threads=THREADS)
            ref = np.zeros((8, 5), dtype)
            np.add.at(ref, ids.reshape(-1), g.reshape(-1, 5))
            check_exact(f"embedding backward = numpy.add.at {name}", dw, ref)
            check_exact(f"embedding backward = CPU kernel {name}", dw, embedding.embedding_backward(ids, g, 8))

            # AdamW: two steps against optim.AdamW's reference arithmetic and the CPU kernel.
            p0 = rng.standard_normal((5, 3)).astype(dtype)
            grads = [(rng.standard_normal(p0.shape) * 10.0 ** k).astype(dtype) for k in (-3, 0)]
            param = mt.nn.Parameter(p0.copy())
            opt = optim.AdamW([("p", param)], lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)
            for grad in grads:
                param.grad = grad
                opt.step()
            states = {}
            for which, update in (("cuda", cuda_adamw.adamw_update), ("cpu", adamw.adamw_update)):
                p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
                for step, grad in enumerate(grads, start=1):
                    kwargs = {"threads": THREADS} if which == "cuda" else {}
                    update(p, grad, m, v, 1e-2, 0.8, 0.99, 1e-6, 0.05, 1 - 0.8 ** step, 1 - 0.99 ** step,
                           **kwargs)
                states[which] = (p, m, v)
            for part, got, want, cpu in zip("pmv", states["cuda"], (param.data, opt.m["p"], opt.v["p"]),
                                            states["cpu"]):
                check_ulp(f"adamw {part} {name}", got, want, 1)
                check_ulp(f"adamw {part} = CPU kernel {name}", got, cpu, 1)

            # Softmax on both paths: a broadcast mask with one fully masked row, and no mask.
            for width in (registers * THREADS - 1, looped)[:2 if dtype == np.float32 else 1]:
                x = rng.standard_normal((2, 3, width)).astype(dtype) * 3
                dy = rng.standard_normal(x.shape).astype(dtype)
                mask = rng.random((2, 1, width)) > 0.3
                mask[1, 0] = False
                for masked in (mask, None):
                    tag = f"width {width} {'masked' if masked is not None else 'no mask'} {name}"
                    t = mt.tensor(x, requires_grad=True)
                    y_ref = F.softmax(t, mask=masked)
                    y_ref.backward(dy)
                    y = cuda_softmax.softmax_forward(x, masked, threads=THREADS)
                    check(f"softmax forward {tag}", y, y_ref.data, dtype)
                    check(f"softmax forward = CPU kernel {tag}", y, softmax.softmax_forward(x, masked), dtype)
                    dx = cuda_softmax.softmax_backward(y_ref.data, dy, threads=THREADS)
                    check(f"softmax backward {tag}", dx, t.grad, dtype)
                    check(f"softmax backward = CPU kernel {tag}", dx, softmax.softmax_backward(y_ref.data, dy), dtype)

            # Cross-entropy on both forward paths, with an ignored row and label smoothing.
            for width in (registers * THREADS - 1, looped)[:2 if dtype == np.float32 else 1]:
                for smoothing in (0.0, 0.1):
                    tag = f"width {width} smoothing {smoothing} {name}"
                    logits = (rng.standard_normal((5, width)) * 3).astype(dtype)
                    targets = np.array([3, -100, 0, width - 1, 7])
                    t = mt.tensor(logits, requires_grad=True)
                    loss = F.cross_entropy(t, targets, label_smoothing=smoothing, reduction="none")
                    loss.backward(np.full(5, 0.25, dtype))
                    losses, lse = cuda_cross_entropy.cross_entropy_forward(logits, targets, -100, smoothing,
                                                                           threads=THREADS)
                    cpu_losses, cpu_lse = cross_entropy.cross_entropy_forward(logits, targets, -100, smoothing)
                    check(f"cross-entropy losses {tag}", losses, loss.data, dtype)
                    check(f"cross-entropy lse = CPU kernel {tag}", lse, cpu_lse, dtype)
                    row_grad = np.where(targets == -100, 0.0, 0.25).astype(dtype)
                    dlogits = cuda_cross_entropy.cross_entropy_backward(logits, targets, lse, row_grad, -100,
                                                                        smoothing, threads=THREADS)
                    check(f"cross-entropy dlogits {tag}", dlogits, t.grad, dtype)

    # Through the functional ops and the optimizer, as on a GPU: the table's CUDA kernels
    # (with small blocks) stand in for the CPU ones, so that the ops' calling conventions
    # (arguments, what each returns and saves) meet the twins. Attention keeps its reference.
    used = set()

    def twins(name, device):
        if name.startswith("attention"):
            return None
        fn = getattr(importlib.import_module(f"minitransformer.kernels.{dispatch._TABLE[name][1]}"), name)

        def call(*args, **kwargs):
            used.add(name)
            return fn(*args, threads=THREADS, **kwargs)

        return types.SimpleNamespace(**{name: call})

    def train_step(mode):
        rng = np.random.default_rng(1)
        vocab, width = 7, 6
        params = {"wte": rng.standard_normal((vocab, width)), "ln_w": rng.standard_normal(width),
                  "ln_b": rng.standard_normal(width), "rms_w": rng.standard_normal(width)}
        params = {k: mt.nn.Parameter(v) for k, v in params.items()}
        ids = np.array([[1, 4, 4, 0], [6, 1, 2, 4]])
        targets = np.array([4, 4, 0, -100, 1, 2, 4, 3])
        with kernels.using(mode):
            h = F.embedding(ids, params["wte"])                                  # (2, 4, C)
            h = F.gelu(F.layer_norm(h, params["ln_w"], params["ln_b"]), approximate="tanh")
            h = F.rms_norm(F.gelu(h), params["rms_w"])
            logits = h @ params["wte"].transpose(0, 1)                           # (2, 4, V)
            probs = F.softmax(logits)
            loss = F.cross_entropy(logits.reshape(-1, vocab), targets, label_smoothing=0.1)
            total = loss + (probs * probs).sum()
            total.backward()
            # The first AdamW step moves each weight by about lr sign(g), whatever g's size,
            # so the gradients are compared as well as the weights after the step.
            grads = {f"d{k}": p.grad.copy() for k, p in params.items()}
            opt = optim.AdamW(list(params.items()), lr=1e-2, weight_decay=0.1)
            opt.step()
        return {"loss": total.data, **grads, **{k: p.data for k, p in params.items()}}

    ref = train_step("reference")
    old_lookup = dispatch._module_for
    dispatch._module_for = twins
    try:
        with _cuda.nan_fill():
            got = train_step("numba")
    finally:
        dispatch._module_for = old_lookup
    for key in ref:
        check(f"one training step through the ops: {key}", got[key], ref[key], np.float64)
    missing = sorted(name for name in dispatch._TABLE if not name.startswith("attention") and name not in used)
    checks.report("the training step ran every CUDA twin", not missing, f"not run: {missing}")
    return checks.exit_status()


if __name__ == "__main__":
    sys.exit(main())
