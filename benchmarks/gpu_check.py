"""One command for a GPU machine: does every CUDA kernel compile, compute right and run fast?

    python -m benchmarks.gpu_check                # on a machine with a GPU (no network needed)
    python -m benchmarks.gpu_check --simulate     # without one: what can run, under Numba's simulator
    python -m benchmarks.gpu_check --out DIR      # where the logs and JSON go (default gpu_check_out)

The parts, in order, each with its own time budget (seconds; about 300 in all) so that one
that hangs cannot eat the others', and each in its own ``try``, so that one that fails is
reported and the rest still run:

1. versions: Python, NumPy, Numba, numba-cuda, CuPy, PyTorch, the driver, the GPU, ptxas,
   compute-sanitizer;
2. resources: every kernel compiled for sm_90, with its registers, spills and shared memory
   (``benchmarks.cuda_resources``, in a process of its own);
3. compare: every CUDA kernel of ``kernels.dispatch._TABLE`` against its CPU kernel on the
   arguments of ``kernel_cases``, with every output pre-filled with NaN (``_cuda.nan_fill``),
   so that an element a kernel never writes shows as a mismatch;
4. tests: the ``gpu``-marked tests (``pytest -m gpu``);
5. sanitizer: ``compute-sanitizer`` racecheck and memcheck on one small launch of each kernel
   (this module run with ``--launch-once``);
6. benchmark: ``python -m benchmarks --device cuda``: the fused ops (attention at T 1024-8192
   against PyTorch float32 with TF32 off, and PyTorch's bf16 SDPA for context), then the
   training steps at the real shapes, with GPU memory beside the speed.

``--simulate`` runs versions and compare (at small shapes, under the simulator) and prints
every other part as skipped, with the reason; the test suite runs it, so this script cannot
rot unnoticed. The exit status is 1 when a part failed.
"""
from __future__ import annotations

import argparse
import importlib
import os
import platform
import shutil
import subprocess
import sys
import time

# (part, seconds it may take); the benchmark also gets whatever the others left of TOTAL.
# compare compiles the CPU kernels too, on a bare machine (Numba caches them for the parts after).
BUDGETS = {"versions": 15, "resources": 45, "compare": 90, "tests": 60, "sanitizer": 50, "benchmark": 60}
TOTAL = 300
# The training steps at the real shapes, with a batch that gives a GPU some work.
TRAIN_BATCH = 16
PARTS = tuple(BUDGETS)
SIMULATED = ("versions", "compare")      # the parts --simulate runs


def _run(cmd, budget, log=None, env=None):
    """Run ``cmd`` for at most ``budget`` seconds; (return code or None on a timeout, output)."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=budget, env=env)
        out, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        code = None
    if log:
        with open(log, "w") as f:
            f.write(out)
    return code, out


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _tool(name: str) -> str | None:
    """A CUDA tool on PATH or in a CUDA toolkit folder."""
    import glob

    found = shutil.which(name)
    if found:
        return found
    for path in sorted(glob.glob(f"/usr/local/cuda*/bin/{name}"), reverse=True):
        return path
    return None


# ---------------------------------------------------------------------------------------
# The parts: each returns (status, detail), status "ok", "FAILED" or "skipped"
# ---------------------------------------------------------------------------------------

def part_versions(args, budget):
    from importlib import metadata

    lines = [f"python {platform.python_version()} on {platform.machine()}"]
    for dist in ("numpy", "numba", "numba-cuda", "cupy-cuda13x", "cupy-cuda12x", "torch", "transformers"):
        try:
            lines.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    try:
        import cupy

        rt = cupy.cuda.runtime
        lines.append(f"CUDA driver {rt.driverGetVersion()}, runtime {rt.runtimeGetVersion()}, "
                     f"{rt.getDeviceCount()} device(s)")
    except Exception as e:   # no CuPy or no GPU: said, not fatal
        lines.append(f"CuPy sees no GPU: {type(e).__name__}: {e}")
    for tool, flag in (("nvidia-smi", "-L"), ("ptxas", "--version"), ("compute-sanitizer", "--version")):
        path = _tool(tool)
        if path is None:
            lines.append(f"{tool}: not found")
            continue
        code, out = _run([path, flag], budget / 3)
        lines.append(f"{tool}: " + " / ".join(s.strip() for s in out.strip().splitlines()[-2:]))
    return "ok", "\n".join(lines)


def part_resources(args, budget):
    if args.simulate:
        return "skipped", ("the simulator compiles nothing; run python -m benchmarks.cuda_resources "
                           "in a process without it (needs NVVM and ptxas, no GPU)")
    code, out = _run([sys.executable, "-m", "benchmarks.cuda_resources"], budget,
                     os.path.join(args.out, "resources.txt"))
    if code is None:
        return "FAILED", f"ran past its {budget} s budget\n" + _tail(out)
    return ("ok" if code == 0 else "FAILED"), _tail(out, 40)


def _compare_arrays(got, want, tol):
    """None when ``got`` matches ``want``, else what differs."""
    import numpy as np

    if got is None or want is None:
        return None if got is None and want is None else f"one result is None: {got is None}, {want is None}"
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return f"shape {got.shape}, expected {want.shape}"
    nan = np.isnan(got) & ~np.isnan(want)
    if nan.any():
        return f"{int(nan.sum())} of {got.size} elements NaN: never written (outputs are pre-filled with NaN)"
    if not np.array_equal(np.isinf(got), np.isinf(want)) or not np.array_equal(got[np.isinf(got)],
                                                                                 want[np.isinf(want)]):
        return "infinities differ from the CPU kernel's"
    finite = np.isfinite(want)
    g, w = got[finite], want[finite]
    err = float(np.linalg.norm(g - w) / max(np.linalg.norm(w), 0.1 * np.sqrt(max(w.size, 1))))
    return None if err <= tol else f"relative error {err:.2e} > {tol:g}"


def compare_all(size: str, budget: float, only=None, log=print) -> tuple[int, int, list[str]]:
    """Every CUDA kernel of the table against its CPU kernel: (cases compared, failures, names)."""
    import numpy as np

    from minitransformer import backend
    from minitransformer.kernels import _cuda, dispatch

    from benchmarks import kernel_cases

    on_gpu = size != "simulate"
    if on_gpu:
        import cupy as cp

    def to_device(a):
        return cp.asarray(a) if on_gpu and isinstance(a, np.ndarray) else a

    def to_host(a):
        return backend.to_numpy(a) if a is not None and hasattr(a, "shape") else a

    started = time.perf_counter()
    compared, failed, names = 0, 0, []
    for name, (cpu_mod, cuda_mod) in dispatch._TABLE.items():
        if cuda_mod is None or (only and name not in only):
            continue
        names.append(name)
        cpu_fn = getattr(importlib.import_module(f"minitransformer.kernels.{cpu_mod}"), name)
        cuda_fn = getattr(importlib.import_module(f"minitransformer.kernels.{cuda_mod}"), name)
        for case in kernel_cases.cases(name, size):
            if time.perf_counter() - started > budget:
                log(f"FAIL {name}: the {budget:.0f} s budget ran out before this case")
                return compared, failed + 1, names
            label = f"{name} [{case.label}]" if case.label else name
            try:
                cpu_args = [a.copy() if isinstance(a, np.ndarray) else a for a in case.args]
                want = kernel_cases.flatten(cpu_fn(*cpu_args)) + [cpu_args[i] for i in case.inplace]
                dev_args = [to_device(a.copy()) if isinstance(a, np.ndarray) else a for a in case.args]
                with _cuda.nan_fill():
                    got = kernel_cases.flatten(cuda_fn(*dev_args)) + [dev_args[i] for i in case.inplace]
                got = [to_host(a) for a in got]
                pick = case.compare if case.compare is not None else range(len(want))
                tol = 1e-5
                problems = [f"result {i}: {p}" for i in pick
                            if (p := _compare_arrays(got[i] if i < len(got) else None, want[i], tol))]
            except Exception as e:      # a kernel that raises is a failure to report, not a crash
                problems = [f"raised {type(e).__name__}: {e}"]
            compared += 1
            if problems:
                failed += 1
                log(f"FAIL {label}: " + "; ".join(problems))
            else:
                log(f"ok   {label}")
    return compared, failed, names


def part_compare(args, budget):
    from minitransformer.kernels import dispatch

    lines = []
    compared, failed, names = compare_all("simulate" if args.simulate else "gpu", budget, args.only,
                                          log=lambda s: (lines.append(s), print("  " + s, flush=True)))
    absent = [n for n, (_, c) in dispatch._TABLE.items() if c is None and not (args.only and n not in args.only)]
    lines.append(f"compared {compared} cases of {len(names)} CUDA kernels ({', '.join(names)}), {failed} failed")
    if absent:
        lines.append(f"no CUDA twin in the table: {', '.join(absent)}")
    return ("FAILED" if failed or not compared else "ok"), "\n".join(lines[-2:])


def part_tests(args, budget):
    if args.simulate:
        return "skipped", "the gpu-marked tests need a GPU (without one they skip)"
    code, out = _run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"],
                     budget, os.path.join(args.out, "gpu_tests.txt"))
    if code is None:
        return "FAILED", f"ran past its {budget} s budget\n" + _tail(out)
    if code == 0 and " passed" not in out:      # all skipped: pytest found no GPU
        return "FAILED", "no gpu test ran (all skipped: does CuPy see the GPU?)\n" + _tail(out, 15)
    return ("ok" if code == 0 else "FAILED"), _tail(out, 15)


def part_sanitizer(args, budget):
    if args.simulate:
        return "skipped", "compute-sanitizer needs a GPU"
    tool = _tool("compute-sanitizer")
    if tool is None:
        return "FAILED", "compute-sanitizer not found on PATH or in /usr/local/cuda*/bin"
    status, lines = "ok", []
    for check in ("racecheck", "memcheck"):
        cmd = [tool, "--tool", check, "--target-processes", "all", "--error-exitcode", "3",
               sys.executable, "-m", "benchmarks.gpu_check", "--launch-once"]
        code, out = _run(cmd, budget / 2, os.path.join(args.out, f"sanitizer_{check}.txt"))
        summary = [s for s in out.splitlines() if "SUMMARY" in s or s.startswith("launched")]
        if code != 0:
            status = "FAILED"
            why = f"ran past {budget / 2:.0f} s" if code is None else f"exit status {code}"
            lines.append(f"{check}: {why}\n" + _tail(out, 15))
        else:
            lines.append(f"{check}: " + " / ".join(summary[-3:]))
    return status, "\n".join(lines)


def part_benchmark(args, budget):
    if args.simulate:
        return "skipped", "the GPU benchmark needs a GPU"
    status, lines, started = "ok", [], time.perf_counter()
    # One process per family, so that a slow one leaves the figures of those before it.
    runs = [("ops", ["--only", "ops"])] + [
        (f"train_{family}", ["--only", "train", "--shapes", "real", "--batch", str(TRAIN_BATCH),
                             "--families", family]) for family in ("gpt", "bert", "t5")]
    for what, extra in runs:
        left = budget - (time.perf_counter() - started)
        if left < 10:
            status = "FAILED"
            lines.append(f"{what}: no time left of the {budget} s budget")
            continue
        out_json = os.path.join(args.out, f"benchmark_{what}.json")
        code, out = _run([sys.executable, "-m", "benchmarks", "--device", "cuda", "--quick", *extra,
                          "--json", out_json], left, os.path.join(args.out, f"benchmark_{what}.txt"))
        print(out, flush=True)
        if code != 0:
            status = "FAILED"
            lines.append(f"{what}: " + ("ran past the budget" if code is None else f"exit status {code}"))
        else:
            lines.append(f"{what}: ok, {out_json}")
    return status, "\n".join(lines)


def launch_once() -> int:
    """One small launch of each CUDA kernel (for compute-sanitizer), then a synchronisation."""
    import cupy as cp
    import numpy as np

    from minitransformer.kernels import dispatch

    from benchmarks import kernel_cases

    for name, (_, cuda_mod) in dispatch._TABLE.items():
        if cuda_mod is None:
            continue
        fn = getattr(importlib.import_module(f"minitransformer.kernels.{cuda_mod}"), name)
        # Small, but at the real head size, so the tiles are the production ones.
        shape = (1, 2, 70, 70, 64) if name.startswith("attention") else None
        case = kernel_cases.cases(name, "simulate", attention_shape=shape)[-1]
        fn(*[cp.asarray(a) if isinstance(a, np.ndarray) else a for a in case.args])
        cp.cuda.runtime.deviceSynchronize()
        print(f"launched {name}", flush=True)
    return 0


PART_FUNCTIONS = {"versions": part_versions, "resources": part_resources, "compare": part_compare,
                  "tests": part_tests, "sanitizer": part_sanitizer, "benchmark": part_benchmark}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--simulate", action="store_true",
                        help="no GPU: versions and the kernel comparisons under Numba's CUDA simulator")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated parts to run, of {', '.join(PARTS)} (default: all)")
    parser.add_argument("--only", default=None,
                        help="comma-separated kernel names of the dispatch table to compare (default: all)")
    parser.add_argument("--out", default="gpu_check_out", help="folder for logs and JSON (default gpu_check_out)")
    parser.add_argument("--launch-once", action="store_true", help=argparse.SUPPRESS)   # for compute-sanitizer
    args = parser.parse_args(argv)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in args.parts if p not in PARTS]
    if unknown or not args.parts:
        parser.error(f"--parts must name some of {', '.join(PARTS)}; got {unknown or 'none'}")
    args.only = [s.strip() for s in args.only.split(",")] if args.only else None
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.launch_once:
        return launch_once()
    if args.simulate and os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        if "numba" in sys.modules:
            # Too late to switch the simulator on in this process: run again in a fresh one.
            env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
            return subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", *argv], env=env).returncode
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    if args.simulate:
        import warnings

        # The dropout hash multiplies uint64s modulo 2**64 on purpose; NumPy scalars (which
        # the simulator computes with) warn about the wrap-around.
        warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)
    os.makedirs(args.out, exist_ok=True)
    print(f"gpu_check{' --simulate' if args.simulate else ''}: parts {', '.join(args.parts)}", flush=True)
    results, started = [], time.perf_counter()
    for part in PARTS:
        if part not in args.parts:
            continue
        budget = BUDGETS[part]
        if part == "benchmark":
            budget = max(budget, int(TOTAL - (time.perf_counter() - started) - 5))
        if args.simulate and part not in SIMULATED:
            status, detail = PART_FUNCTIONS[part](args, budget)
        else:
            print(f"\n== {part} (budget {budget} s)", flush=True)
            t0 = time.perf_counter()
            try:
                status, detail = PART_FUNCTIONS[part](args, budget)
            except Exception as e:    # one broken part must not stop the others
                import traceback

                status, detail = "FAILED", f"raised {type(e).__name__}: {e}\n" + _tail(traceback.format_exc(), 8)
            detail += f"\n({time.perf_counter() - t0:.1f} s)"
        if status == "skipped":
            print(f"\n== {part}: skipped: {detail}", flush=True)
        else:
            print(f"{part}: {status}\n{detail}", flush=True)
        results.append((part, status))
    print(f"\n== summary ({time.perf_counter() - started:.0f} s)")
    for part, status in results:
        print(f"{part:10s} {status}")
    return 1 if any(s == "FAILED" for _, s in results) else 0


if __name__ == "__main__":
    sys.exit(main())
