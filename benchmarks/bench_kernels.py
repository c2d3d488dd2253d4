"""The CPU kernels against the NumPy reference and PyTorch, in one process, interleaved.

    python -m benchmarks.bench_kernels            # the full shapes
    python -m benchmarks.bench_kernels --quick    # small shapes, a few seconds
    python -m benchmarks.bench_kernels --json out.json

Attention: forward + backward, causal, float32, B*H = 8, d = 64, T = 1024 and 2048 --
our kernel (``attention_forward`` + ``attention_backward``), the reference
(``F.scaled_dot_product_attention`` under ``kernels.using("reference")``, through autograd)
and ``torch.nn.functional.scaled_dot_product_attention`` (forward and backward through
torch's autograd). Softmax: a 4096 x 4096 float32 row softmax, in GB/s counting one read
of the input and one write of the output -- our kernel, the NumPy expression, and
``torch.softmax``.

Every contender first has to produce the same numbers as the reference (relative error
below 1e-4 in float32); then the runs are interleaved (A B C A B C ...) so that a slow
moment of the machine hits all of them, and the medians and their ratios are reported.
PyTorch gets as many threads as Numba. (The timing helpers are ``benchmarks.harness``'s;
``python -m benchmarks`` runs these ops and more through autograd, on CPU or GPU.)
"""
from __future__ import annotations

import argparse
import json

import numba
import numpy as np

import minitransformer as mt
import minitransformer.functional as F
from minitransformer import kernels
from minitransformer.kernels import attention, softmax

from benchmarks.harness import interleaved, median, rel_error


def _interleaved(contenders: dict, repeat: int) -> dict:
    """Median seconds of each callable, timed in turn ``repeat`` times after one warm-up."""
    return {name: median(ts) for name, ts in interleaved(contenders, repeat, warmup=1).items()}


_rel = rel_error


def bench_attention(t: int, repeat: int, torch=None) -> dict:
    rng = np.random.default_rng(0)
    q, k, v, do = (rng.standard_normal((1, 8, t, 64)).astype(np.float32) for _ in range(4))

    def ours():
        o, lse = attention.attention_forward(q, k, v, causal=True)
        return (o, *attention.attention_backward(q, k, v, o, lse, do, causal=True)[:3])

    def reference():
        with kernels.using("reference"):
            ts = [mt.tensor(a, requires_grad=True) for a in (q, k, v)]
            o = F.scaled_dot_product_attention(*ts, is_causal=True)
            o.backward(do)
        return (o.data, *(x.grad for x in ts))

    contenders = {"ours": ours, "numpy_reference": reference}
    if torch is not None:
        tq, tk, tv = (torch.from_numpy(a).requires_grad_() for a in (q, k, v))
        tdo = torch.from_numpy(do)

        def pytorch():
            for x in (tq, tk, tv):
                x.grad = None
            o = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True)
            o.backward(tdo)
            return (o.detach().numpy(), *(x.grad.numpy() for x in (tq, tk, tv)))

        contenders["pytorch_sdpa"] = pytorch

    want = reference()
    errors = {}
    for name, fn in contenders.items():
        got = fn()
        errors[name] = max(_rel(a, b) for a, b in zip(got, want))
        if errors[name] > 1e-4:
            raise RuntimeError(f"attention T={t}: {name} disagrees with the reference "
                               f"(relative error {errors[name]:.2e}); not timing it")
    seconds = _interleaved(contenders, repeat)
    return {"T": t, "BH": 8, "d": 64, "causal": True, "seconds": seconds, "max_rel_error": errors}


def bench_softmax(rows: int, cols: int, repeat: int, torch=None) -> dict:
    x = np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float32)

    def ours():
        return softmax.softmax_forward(x)

    def plain_numpy():
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    contenders = {"ours": ours, "numpy": plain_numpy}
    if torch is not None:
        tx = torch.from_numpy(x)
        contenders["pytorch"] = lambda: torch.softmax(tx, dim=-1).numpy()
    want = plain_numpy()
    for name, fn in contenders.items():
        err = _rel(fn(), want)
        if err > 1e-4:
            raise RuntimeError(f"softmax: {name} disagrees with NumPy ({err:.2e}); not timing it")
    seconds = _interleaved(contenders, repeat)
    moved = 2 * x.nbytes                       # read the input once, write the output once
    return {"shape": [rows, cols], "seconds": seconds,
            "GB_per_s": {name: moved / s / 1e9 for name, s in seconds.items()}}


def run(quick: bool = False, threads: int | None = None) -> dict:
    if threads:
        numba.set_num_threads(threads)
    try:
        import torch

        torch.set_num_threads(numba.get_num_threads())
    except ImportError:
        torch = None
    lengths = (256, 512) if quick else (1024, 2048)
    repeat = 3 if quick else 7
    result = {
        "threads": numba.get_num_threads(),
        "torch": None if torch is None else torch.__version__,
        "attention": [bench_attention(t, repeat, torch) for t in lengths],
        "softmax": bench_softmax(1024 if quick else 4096, 4096, repeat, torch),
    }
    return result


def table(result: dict) -> str:
    lines = [f"threads: {result['threads']}   torch: {result['torch']}", "",
             "attention fwd+bwd, causal, float32, B*H=8, d=64 (median ms; ratio = other / ours)"]
    for row in result["attention"]:
        s = row["seconds"]
        parts = [f"ours {s['ours'] * 1e3:8.1f}"]
        for name in ("numpy_reference", "pytorch_sdpa"):
            if name in s:
                parts.append(f"{name} {s[name] * 1e3:8.1f} ({s[name] / s['ours']:.2f}x)")
        lines.append(f"  T={row['T']:5d}: " + "   ".join(parts))
    sm = result["softmax"]
    lines.append("")
    lines.append(f"softmax {sm['shape'][0]}x{sm['shape'][1]} float32 (GB/s; ratio = ours / other)")
    gb = sm["GB_per_s"]
    lines.append("  " + "   ".join(
        f"{name} {gb[name]:6.2f}" + ("" if name == "ours" else f" ({gb['ours'] / gb[name]:.2f}x)")
        for name in gb))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes and few repeats")
    parser.add_argument("--threads", type=int, help="threads for Numba and PyTorch alike "
                        "(default: Numba's default, one per core)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    result = run(quick=args.quick, threads=args.threads)
    print(table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
