"""The fused ops of a transformer, forward + backward: our reference, our kernel, PyTorch.

Each op runs the way training runs it, through autograd: a forward, then a backward from a
fixed random output gradient, returning the output and every input gradient.

- **reference**: ``minitransformer.functional`` under ``kernels.using("reference")``, the
  plain array code (the textbook path);
- **kernel**: the same call under ``kernels.using("auto")``, which dispatches to the Numba
  (CPU) or CUDA kernel when one is registered for the op; an op without a kernel yet says so;
- **pytorch**: ``torch.nn.functional``'s op and torch's autograd, on the same device.

Before timing, each contender must match the reference (relative error of every output
and gradient at most 1e-4 in float32); one that does not is refused, not timed. The
figures are medians of interleaved runs (see ``harness``).

What the rates count, the same for every contender:

- softmax, layer_norm, rms_norm, gelu: bytes that must move at least: the forward reads x and writes
  y, the backward reads what it saved (y or x) and the output gradient and writes dx:
  5 x the input's bytes.
- cross_entropy: the forward reads the logits once; the backward reads them again and
  writes their gradient: 3 x the logits' bytes.
- attention (causal): FLOPs as FlashAttention-2 counts them: a forward is 4 B H T^2 D
  (two matrix products), halved by the causal mask; the backward is 2.5 forwards.

On a GPU, attention has one more contender, for context and not as the pair to beat:
**pytorch_bf16**, PyTorch's scaled_dot_product_attention in bfloat16 (its flash kernel on
tensor cores), checked against the reference at bfloat16's tolerance (``CONTEXT_TOLERANCE``).
Each timed contender's GPU memory at its peak is measured in one more call
(``harness.peak_memory``: the CuPy pool for ours, ``max_memory_allocated`` for PyTorch).
"""
from __future__ import annotations

import numpy as np

import minitransformer as mt
import minitransformer.functional as F
from minitransformer import backend, kernels

from benchmarks.harness import interleaved, median, median_ratio, peak_memory, rel_error, sync_for

TOLERANCE = 1e-4        # float32 relative error allowed against the reference
CONTEXT_TOLERANCE = {"pytorch_bf16": 3e-2}    # bfloat16 keeps 8 bits of mantissa

def _shapes(rows: int, cols: int, norm_rows: int, norm_cols: int, vocab_rows: int, vocab: int,
            gelu: int, attention) -> dict:
    return dict(softmax=(rows, cols), layer_norm=(norm_rows, norm_cols), rms_norm=(norm_rows, norm_cols),
                cross_entropy=(vocab_rows, vocab), gelu=(gelu, gelu), attention=attention)


# Shapes per (device, mode). "tiny" only exercises the code (tests); "quick" is big enough
# to leave the caches on a CPU; "full" is the one to quote. Attention on a GPU: GPT-2 small's
# heads (12 x 64) at T 1024-8192, with the batch shrinking as T grows (8192 tokens a batch) so
# that the reference's (B, H, T, T) scores still fit.
SHAPES = {
    ("cpu", "tiny"): _shapes(64, 128, 64, 64, 64, 256, 64, [(1, 2, 64, 16)]),
    ("cpu", "quick"): _shapes(1024, 4096, 4096, 1024, 1024, 4096, 2048, [(1, 8, 256, 64), (1, 8, 512, 64)]),
    ("cpu", "full"): _shapes(4096, 4096, 8192, 1024, 4096, 8192, 4096, [(1, 8, 1024, 64), (1, 8, 2048, 64)]),
    ("cuda", "tiny"): _shapes(64, 128, 64, 64, 64, 256, 64, [(1, 2, 64, 16)]),
    ("cuda", "quick"): _shapes(8192, 8192, 16384, 4096, 8192, 16384, 8192,
                               [(8, 12, 1024, 64), (2, 12, 4096, 64), (1, 12, 8192, 64)]),
    ("cuda", "full"): _shapes(16384, 16384, 32768, 4096, 16384, 32768, 16384,
                              [(8, 12, 1024, 64), (4, 12, 2048, 64), (2, 12, 4096, 64), (1, 12, 8192, 64)]),
}

# The kernel registry name that, when present, makes "auto" run a kernel for the op.
KERNEL_NAMES = {"softmax": "softmax_forward", "layer_norm": "layer_norm_forward",
                "rms_norm": "rms_norm_forward", "cross_entropy": "cross_entropy_forward", "gelu": "gelu_forward",
                "attention": "attention_forward"}


def kernel_for(op: str, array):
    """The kernel "auto" would run for ``op`` on ``array``'s device, or None."""
    with kernels.using("auto"):
        try:
            return kernels.get(KERNEL_NAMES[op], array)
        except KeyError:                    # the registry has no such kernel (yet)
            return None


# =======================================================================================
# One op: its inputs, our call and PyTorch's call
# =======================================================================================

def _inputs(op: str, shape, rng):
    """Host arrays: (differentiable inputs, other arguments, output gradient or None)."""
    f32 = np.float32
    if op == "softmax" or op == "gelu":
        x = rng.standard_normal(shape).astype(f32)
        return [x], {}, rng.standard_normal(shape).astype(f32)
    if op in ("layer_norm", "rms_norm"):
        n, c = shape
        x = rng.standard_normal(shape).astype(f32)
        w = (1.0 + 0.1 * rng.standard_normal(c)).astype(f32)
        b = (0.1 * rng.standard_normal(c)).astype(f32)
        return ([x, w, b] if op == "layer_norm" else [x, w]), {}, rng.standard_normal(shape).astype(f32)
    if op == "cross_entropy":
        n, v = shape
        logits = (2.0 * rng.standard_normal(shape)).astype(f32)
        return [logits], {"targets": rng.integers(0, v, n)}, None
    if op == "attention":
        q, k, v, do = (rng.standard_normal(shape).astype(f32) for _ in range(4))
        return [q, k, v], {}, do
    raise KeyError(op)


def _ours_call(op: str, ts, extra):
    if op == "softmax":
        return F.softmax(ts[0], axis=-1)
    if op == "gelu":
        return F.gelu(ts[0], approximate="tanh")
    if op == "layer_norm":
        return F.layer_norm(ts[0], ts[1], ts[2], eps=1e-5)
    if op == "rms_norm":
        return F.rms_norm(ts[0], ts[1], eps=1e-6)
    if op == "cross_entropy":
        return F.cross_entropy(ts[0], extra["targets"])
    return F.scaled_dot_product_attention(*ts, is_causal=True)


def _torch_call(torch, op: str, ts, extra):
    tf = torch.nn.functional
    if op == "softmax":
        return torch.softmax(ts[0], dim=-1)
    if op == "gelu":
        return tf.gelu(ts[0], approximate="tanh")
    if op == "layer_norm":
        return tf.layer_norm(ts[0], (ts[0].shape[-1],), ts[1], ts[2], eps=1e-5)
    if op == "rms_norm":
        return tf.rms_norm(ts[0], (ts[0].shape[-1],), ts[1], eps=1e-6)
    if op == "cross_entropy":
        return tf.cross_entropy(ts[0], extra["targets"])
    return tf.scaled_dot_product_attention(*ts, is_causal=True)


def contenders(op: str, shape, device: str, torch=None, seed: int = 0) -> tuple[dict, dict]:
    """({name: callable returning (output, *input grads)}, facts about the kernel).

    The callables hold their inputs on ``device`` already, so a timed call is the op alone.
    """
    host, extra, grad = _inputs(op, shape, np.random.default_rng(seed))
    arrays = [backend.to_device(a, device) for a in host]
    ours_extra = {k: backend.to_device(v, device) for k, v in extra.items()}
    g = None if grad is None else backend.to_device(grad, device)

    def ours(mode):
        def run():
            with kernels.using(mode):
                ts = [mt.tensor(a, requires_grad=True, device=device) for a in arrays]
                out = _ours_call(op, ts, ours_extra)
                out.backward(g)
            return (out.data, *(t.grad for t in ts))
        return run

    runs = {"reference": ours("reference")}
    kernel = kernel_for(op, arrays[0])
    if kernel is not None:
        runs["kernel"] = ours("auto")
    if torch is not None:
        tdev = "cpu" if device == "cpu" else "cuda"
        tarrays = [torch.from_numpy(a).to(tdev) for a in host]
        textra = {k: torch.from_numpy(v).to(tdev) for k, v in extra.items()}
        tg = None if grad is None else torch.from_numpy(grad).to(tdev)

        def pytorch():
            ts = [a.detach().requires_grad_() for a in tarrays]
            out = _torch_call(torch, op, ts, textra)
            out.backward(tg)
            return (out.detach(), *(t.grad for t in ts))
        runs["pytorch"] = pytorch
        if op == "attention" and device == "cuda":
            def pytorch_bf16():
                ts = [a.detach().to(torch.bfloat16).requires_grad_() for a in tarrays]
                out = _torch_call(torch, op, ts, textra)
                out.backward(tg.to(torch.bfloat16))
                return tuple(t.float() for t in (out.detach(), *(t.grad for t in ts)))
            runs["pytorch_bf16"] = pytorch_bf16
    info = {"kernel": None if kernel is None else f"{kernel.__module__}.{kernel.__name__}"}
    return runs, info


def work(op: str, shape) -> tuple[float, str]:
    """(amount, unit) the rate of ``op`` counts: bytes for the memory-bound ops, FLOPs for attention."""
    size = int(np.prod(shape))
    if op in ("softmax", "layer_norm", "rms_norm", "gelu"):
        return 5.0 * 4 * size, "bytes"
    if op == "cross_entropy":
        return 3.0 * 4 * size, "bytes"
    b, h, t, d = shape
    forward = 4.0 * b * h * t * t * d / 2            # causal: half the score matrix
    return 3.5 * forward, "flop"


def bench_op(op: str, shape, device: str, repeat: int, warmup: int = 1, torch=None) -> dict:
    """Check every contender against the reference, then time the ones that agree."""
    runs, info = contenders(op, shape, device, torch)
    sync = sync_for(device, torch)
    want = runs["reference"]()
    results, timed = {}, {}
    for name, fn in runs.items():
        got = fn()
        error = max(rel_error(a, b) for a, b in zip(got, want))
        tolerance = CONTEXT_TOLERANCE.get(name, TOLERANCE)
        if not error <= tolerance:
            results[name] = {"refused": f"differs from the reference by {error:.2e} (relative; "
                                        f"at most {tolerance:g} allowed); not timed", "rel_error": error}
        else:
            results[name] = {"rel_error": error}
            timed[name] = fn
    if "kernel" not in runs:
        results["kernel"] = {"absent": f"no {KERNEL_NAMES[op]} kernel for {device} registered; "
                                       "'auto' runs the reference"}
    amount, unit = work(op, shape)
    row = {"op": op, "shape": list(shape), "what": "forward+backward", "work": amount, "unit": unit,
           "kernel": info["kernel"], "contenders": results}
    if timed:
        times = interleaved(timed, repeat, warmup=warmup, sync=sync)
        for name, ts in times.items():
            results[name].update(seconds=median(ts), rate=amount / median(ts), samples=ts)
        if "kernel" in times and "pytorch" in times:
            row["kernel_speedup_vs_pytorch"] = median_ratio(times, "pytorch", "kernel")
        if "kernel" in times:
            row["kernel_speedup_vs_reference"] = median_ratio(times, "reference", "kernel")
        for name, used in peak_memory(timed, device, torch).items():
            results[name]["peak_bytes"] = used
    return row


def run(device: str, mode: str, repeat: int, warmup: int = 1, torch=None, only=None) -> list[dict]:
    """Every op at the shapes of (device, mode); ``only`` limits it to some op names."""
    rows = []
    for op, shapes in SHAPES[(device, mode)].items():
        if only and op not in only:
            continue
        for shape in (shapes if op == "attention" else [shapes]):
            rows.append(bench_op(op, shape, device, repeat, warmup, torch))
    return rows


def table(rows: list[dict]) -> str:
    """A markdown table: median milliseconds (min-max), the rate, and the kernel's speed-ups."""
    lines = ["| op (fwd+bwd) | shape | reference ms (min-max) | kernel ms (min-max) | PyTorch ms (min-max) "
             "| kernel rate | PyTorch rate "
             "| kernel vs PyTorch | kernel vs reference |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]

    def ms(c):
        if "seconds" in c:       # the median, then the spread of the samples
            return f"{c['seconds'] * 1e3:.2f} ({min(c['samples']) * 1e3:.2f}-{max(c['samples']) * 1e3:.2f})"
        return "refused" if "refused" in c else "-"

    for r in rows:
        c = r["contenders"]
        unit = "GB/s" if r["unit"] == "bytes" else "GFLOP/s"
        rate = {k: (f"{v['rate'] / 1e9:.1f} {unit}" if "rate" in v else "-") for k, v in c.items()}
        vs_torch = r.get("kernel_speedup_vs_pytorch")
        vs_ref = r.get("kernel_speedup_vs_reference")
        kernel_ms = ms(c["kernel"]) if "absent" not in c["kernel"] else "no kernel"
        lines.append(
            f"| {r['op']} | {'x'.join(map(str, r['shape']))} | {ms(c['reference'])} | {kernel_ms} | "
            f"{ms(c['pytorch']) if 'pytorch' in c else '-'} | {rate.get('kernel', '-')} | "
            f"{rate.get('pytorch', '-')} | {'-' if vs_torch is None else f'{vs_torch:.2f}x'} | "
            f"{'-' if vs_ref is None else f'{vs_ref:.2f}x'} |")
    lines.append("")
    lines.append("kernel vs X: median over interleaved rounds of time(X) / time(kernel); above 1 the kernel is faster.")
    for r in rows:
        c, shape = r["contenders"], "x".join(map(str, r["shape"]))
        bf16 = c.get("pytorch_bf16", {})
        if "seconds" in bf16:
            ours = c.get("kernel", {}).get("seconds")
            lines.append(f"context: {r['op']} {shape} in PyTorch bf16 (SDPA): {bf16['seconds'] * 1e3:.2f} ms, "
                         f"{bf16['rate'] / 1e12:.1f} TFLOP/s"
                         + (f", {ours / bf16['seconds']:.1f}x faster than our float32 kernel" if ours else ""))
        memory = {k: v["peak_bytes"] for k, v in c.items() if "peak_bytes" in v}
        if memory:
            lines.append(f"GPU memory at the peak of one call, {r['op']} {shape}: "
                         + ", ".join(f"{k} {v / 2**20:,.0f} MiB" for k, v in memory.items()))
    refused = [(r["op"], k, v["refused"]) for r in rows for k, v in r["contenders"].items() if "refused" in v]
    for op, name, why in refused:
        lines.append(f"REFUSED {op} / {name}: {why}")
    return "\n".join(lines)
