"""Benchmarks against PyTorch: machine peaks, fused ops, training steps, one-step profile.

    python -m benchmarks --quick                      # CPU, a few minutes
    python -m benchmarks --device cuda --quick        # CuPy + CUDA kernels vs PyTorch CUDA
    python -m benchmarks --device cuda --only train --shapes real --batch 16   # fill a GPU
    python -m benchmarks --only train --json out.json --png out.png
    python -m benchmarks --only profile --profile gpt-mini
    python -m benchmarks compare before.json after.json   # the second run's speed over the first's

Parts (``--only`` takes one or a comma-separated list; the default is peaks,ops,train):

- peaks: float32 matmul FLOP/s (the best sustained rate at several sizes, before and after
  the timed work, with its spread) and memory copy GB/s of this machine, measured now;
- ops: softmax, layer_norm, rms_norm, cross_entropy, gelu, attention (forward + backward), as our
  reference, our kernel and PyTorch;
- train: GPT, BERT and T5 training steps (AdamW) at the tiny preset and the mini shape
  (``--shapes real``: GPT-2 small, BERT-base, T5-small), ours against PyTorch contenders
  holding the same weights -- the transformers twin, and the model written for speed
  (benchmarks/torch_contenders.py), eager and under torch.compile -- after checking that
  each computes the same loss and gradients; tokens/s, the ratios and MFU, and with
  ``--memory`` each one's peak memory, measured alone in a fresh process;
- profile: where one training step spends its time, ours against PyTorch's profiler
  (also added to the default parts by ``--profile SPEC``).

See benchmarks/README.md for the method. The figures are printed as markdown tables;
``--json`` writes everything measured (every sample), ``--png`` a chart (needs matplotlib).
The exit status is 1 when a pair was REFUSED or an MFU came out above 100% (each named in
a warning): figures that cannot be trusted never look like a success.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from benchmarks import harness, ops, results, step_profile, train_steps
from minitransformer import backend

PARTS = ("peaks", "ops", "train", "profile")

# (peaks, ops, train) repeats and the warm-up rounds of ops and train, per (device, mode)
REPEATS = {
    ("cpu", "tiny"): dict(peaks=1, ops=1, train=1, warmup=1, profile=1),
    ("cpu", "quick"): dict(peaks=5, ops=3, train=3, warmup=1, profile=3),
    ("cpu", "full"): dict(peaks=9, ops=7, train=7, warmup=2, profile=5),
    ("cuda", "tiny"): dict(peaks=1, ops=1, train=1, warmup=1, profile=1),
    ("cuda", "quick"): dict(peaks=10, ops=10, train=10, warmup=3, profile=5),
    ("cuda", "full"): dict(peaks=20, ops=20, train=20, warmup=5, profile=10),
}


def _list(text: str, allowed, what: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"{what} must be a comma-separated list of {', '.join(allowed)}; "
                                         f"got {text!r}")
    return items


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0],
                                     epilog="Method: benchmarks/README.md")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="smaller op shapes and fewer repeats (CPU: minutes; CUDA: under 5 minutes)")
    size.add_argument("--tiny", action="store_true",
                      help="the smallest shapes and one repeat: checks that the harness runs (for tests); "
                           "the figures mean nothing")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="cpu: NumPy + Numba kernels vs PyTorch CPU; cuda: CuPy + CUDA kernels vs PyTorch CUDA")
    parser.add_argument("--only", type=lambda s: _list(s, PARTS, "--only"), default=None,
                        help=f"parts to run, comma-separated, of {', '.join(PARTS)} (default: peaks,ops,train)")
    parser.add_argument("--families", type=lambda s: _list(s, train_steps.FAMILIES, "--families"),
                        default=list(train_steps.FAMILIES), help="model families to train (default: all)")
    parser.add_argument("--shapes", type=lambda s: _list(s, ("tiny", "mini", "real"), "--shapes"), default=None,
                        help="training shapes, comma-separated, of tiny, mini, real (GPT-2 small, BERT-base, "
                             "T5-small at batch 4 x 256; default: tiny,mini)")
    parser.add_argument("--batch", type=int, default=None,
                        help="sequences per training step, replacing each shape's own (a GPU wants more than "
                             "the real shape's 4)")
    parser.add_argument("--contenders", type=lambda s: _list(s, list(train_steps.CONTENDERS), "--contenders"),
                        default=None,
                        help="PyTorch contenders of the training steps, comma-separated, of "
                             + ", ".join(f"{k} ({v})" for k, v in train_steps.CONTENDERS.items())
                             + " (default on the CPU: all, compiled only where a C++ compiler is present and "
                               "not with --tiny; on a GPU: pytorch)")
    parser.add_argument("--memory", action="store_true",
                        help="also measure each training contender's peak memory, each alone in a fresh "
                             "process (CPU; adds a few steps per contender)")
    parser.add_argument("--profile", metavar="SPEC", default=None,
                        help="also profile one training step of FAMILY-SHAPE[:CONTENDER], e.g. gpt-mini "
                             "(the default spec of --only profile; against the transformers twin) or "
                             "bert-real:pytorch-fast (against PyTorch fast, eager)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for Numba, NumPy's BLAS and PyTorch alike (default: one per core)")
    parser.add_argument("--repeat", type=int, default=None, help="timed rounds per figure (default: by mode)")
    parser.add_argument("--json", metavar="FILE", help="write every result and sample as JSON")
    parser.add_argument("--png", metavar="FILE", help="write a chart (needs matplotlib)")
    args = parser.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if args.batch is not None and args.batch < 1:
        parser.error(f"--batch must be at least 1, got {args.batch}")
    args.mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    parts = list(args.only) if args.only else ["peaks", "ops", "train"]
    if args.profile and "profile" not in parts:
        parts.append("profile")
    if "train" in parts and "peaks" not in parts:
        parts.insert(0, "peaks")           # MFU needs the peak of this run
    args.parts = parts
    if args.profile is None:
        args.profile = "gpt-micro" if args.mode == "tiny" else "gpt-mini"
    try:
        step_profile.parse_spec(args.profile)
    except ValueError as e:
        parser.error(str(e))
    if args.shapes is None:
        args.shapes = ["micro"] if args.mode == "tiny" else ["tiny", "mini"]
    if args.contenders is None:
        args.contenders = train_steps.default_contenders(args.device, args.mode)
    return args


def peaks_table(p: dict) -> str:
    """The matmul peaks at each size (before the run, and after it once measured) and the copy."""
    sources = list(p["matmul"]["before"]["sizes"][p["matmul"]["before"]["n"]])
    lines = ["| peak (best of the repeats) | " + " | ".join(sources) + " |", "|---|" + "---:|" * len(sources)]
    for when in ("before", "after"):
        m = p["matmul"].get(when)
        for n, by_source in (m["sizes"].items() if m else ()):
            lines.append(f"| float32 matmul {n}x{n}, {when} the run (GFLOP/s) | "
                         + " | ".join(f"{by_source[k] / 1e9:.1f}" for k in sources) + " |")
    cp = p["copy"]
    lines.append(f"| memory copy {cp['bytes'] / 2 / 2**20:g} MiB (GB/s, read + write) | "
                 + " | ".join(f"{cp['bytes_per_s'][k] / 1e9:.1f}" if k in cp["bytes_per_s"] else "-"
                              for k in sources) + " |")
    best = p["matmul_peak"]
    lines += ["", f"MFU denominator: {best['flop_per_s'] / 1e9:.1f} GFLOP/s, the {best['source']} matmul at "
                  f"{best['n']}^3 (the best sustained rate measured)."]
    spread = p.get("matmul_spread")
    if spread:
        lines.append(f"Peak spread: best-per-size figures range {spread['min'] / 1e9:.1f}-{spread['max'] / 1e9:.1f} "
                     f"GFLOP/s ({(spread['max'] - spread['min']) / spread['max']:.0%} of the peak); the best was "
                     f"{spread['before'] / 1e9:.1f} before the run and {spread['after'] / 1e9:.1f} after.")
    return "\n".join(lines)


def header(env: dict, mode: str) -> str:
    load = env["load_average"]
    gpu = f", GPU {env['gpu']} (CuPy {env['cupy']})" if env.get("gpu") else ""
    return "\n".join([
        f"minitransformer benchmarks: device {env['device']}, mode {mode}{gpu}",
        f"threads: Numba {env['threads']['numba']}, NumPy BLAS {env['threads']['blas'] or 'unknown'}, "
        f"PyTorch {env['threads']['torch']} on {env['cpu_count']} CPUs; "
        f"numpy {env['numpy']}, numba {env['numba']}, torch {env['torch']}, transformers {env['transformers']}",
        f"precision: {env['precision']}",
        f"NumPy's BLAS: {env['numpy_blas'] or 'unknown'}; host allocator: {env.get('allocator', 'unknown')}; "
        f"idle BLAS threads: {env.get('blas_idle_threads', 'unknown')}; "
        f"idle OpenMP threads: {env.get('openmp_idle_threads', 'unknown')}",
    ] + ([f"our linear layers' products: {env['products']}"] if env.get("products") else []) + [
        "load average: " + (" ".join(f"{x:.2f}" for x in load) if load else "unknown"),
    ] + ([f"warning: the load average ({load[0]:.1f}) exceeds the {env['cpu_count']} CPUs; multi-threaded "
          "code waits for its threads to be scheduled, so every figure is slow and noisy; interleaving "
          "puts both sides under the same conditions, but not those of an idle machine "
          "(--threads 1 suffers least)"]
         if load and env["cpu_count"] and load[0] > env["cpu_count"] else []))


def chart(result: dict, path: str) -> str | None:
    """Write a PNG of the speed ratios; returns a note when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no chart: matplotlib is not installed (pip install matplotlib)"
    train = [r for r in result.get("train", []) if "fastest" in r]
    op_rows = [r for r in result.get("ops", []) if "kernel_speedup_vs_pytorch" in r]
    panels = [p for p in (train, train, op_rows) if p]
    if not panels:
        return "no chart: nothing was timed"
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    if train:
        labels = [f"{r['family']}\n{r['shape']}" for r in train]
        axes[0].bar(labels, [r["fastest"]["ratio"] for r in train], color="tab:blue")
        axes[0].axhline(1.0, color="black", linewidth=0.8)
        axes[0].set_title("training step: ours / fastest PyTorch contender")
        if all("mfu" in r for r in train):
            sides = list(dict.fromkeys(k for r in train for k in r["mfu"]))      # ours, then the contenders
            width = 0.8 / len(sides)
            for j, side in enumerate(sides):
                axes[1].bar([i + (j - (len(sides) - 1) / 2) * width for i in range(len(train))],
                            [r["mfu"].get(side, 0.0) * 100 for r in train], width, label=side)
            axes[1].set_xticks(list(range(len(train))), labels)
            axes[1].set_ylabel("% of measured matmul peak")
            axes[1].set_title("MFU")
            axes[1].legend()
    if op_rows:
        labels = [f"{r['op']}\n{'x'.join(map(str, r['shape']))}" for r in op_rows]
        axes[2].bar(labels, [r["kernel_speedup_vs_pytorch"] for r in op_rows], color="tab:green")
        axes[2].axhline(1.0, color="black", linewidth=0.8)
        axes[2].set_title("op fwd+bwd: our kernel / PyTorch speed")
        axes[2].tick_params(axis="x", labelsize=7, rotation=30)
    fig.suptitle(f"minitransformer vs PyTorch on {result['environment']['device']} ({result['mode']})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def main(argv=None) -> int:
    argv_list = sys.argv[1:] if argv is None else list(argv)
    if argv_list[:1] == ["compare"]:
        return results.compare_main(argv_list[1:])
    args = parse_args(argv_list)
    torch = harness.import_torch()
    try:
        harness.check_device(args.device, torch)
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    threads = harness.set_threads(args.threads, torch)
    backend.keep_freed_memory()         # as the training commands do; every contender shares the process
    env = harness.environment(args.device, threads, torch)
    reps = dict(REPEATS[(args.device, args.mode)])
    if args.repeat:
        reps.update(peaks=args.repeat, ops=args.repeat, train=args.repeat, profile=args.repeat)
    result = results.describe({"mode": args.mode, "environment": env, "parts": args.parts}, argv_list,
                              args.device)
    print(header(env, args.mode), flush=True)
    started = time.perf_counter()

    if "peaks" in args.parts:
        result["peaks"] = harness.peaks(args.device, args.mode, reps["peaks"], torch)
        print("\n## Machine peaks\n\n" + peaks_table(result["peaks"]), flush=True)
    if "ops" in args.parts:
        result["ops"] = ops.run(args.device, args.mode, reps["ops"], reps["warmup"], torch)
        print("\n## Ops (forward + backward)\n\n" + ops.table(result["ops"]), flush=True)
    if "train" in args.parts:
        if torch is None:
            print("\nno training comparison: PyTorch is not installed", flush=True)
        else:
            result["train"] = train_steps.run(args.device, args.shapes, reps["train"], reps["warmup"], torch,
                                              args.families, batch_size=args.batch, contenders=args.contenders,
                                              memory=args.memory, threads=threads["numba"])
    if "peaks" in args.parts:
        # Measured again after the timed work: the MFU denominator is the best of the two.
        after = harness.matmul_peak(args.device, args.mode, reps["peaks"], torch)
        harness.combine_peaks(result["peaks"], after)
        print("\n## Machine peaks, before and after the run\n\n" + peaks_table(result["peaks"]), flush=True)
    if "train" in result:
        peak = result["peaks"]["matmul_peak"]
        harness.add_mfu(result["train"], peak["flop_per_s"])
        print("\n## Training steps (AdamW)\n\n" + train_steps.table(result["train"], peak), flush=True)
    if "profile" in args.parts and torch is not None:
        result["profile"] = step_profile.profile_step(args.profile, args.device, reps["profile"], torch)
        print("\n## Profile\n\n" + step_profile.table(result["profile"]), flush=True)

    result["failures"] = harness.failures(result)
    result["seconds"] = time.perf_counter() - started
    load = result["load_average_after"] = harness.load_average()
    print(f"\nfinished in {result['seconds']:.0f} s; load average now "
          + (" ".join(f"{x:.2f}" for x in load) if load else "unknown"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=float)
        print(f"wrote {args.json}")
    if args.png:
        note = chart(result, args.png)
        print(note or f"wrote {args.png}")
    # A run whose figures cannot be trusted must not look like a success to a script or CI.
    for problem in result["failures"]:
        print(f"warning: {problem}", file=sys.stderr)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
