"""Timing that can be trusted on a busy machine: interleaved runs, medians, and the peaks.

Every comparison here follows the same four rules.

1. **Same numbers first.** A contender is timed only after it has produced the same result
   as the reference (``rel_error``); a fast wrong answer is not a result.
2. **Warm-up.** Each contender runs once (or more) untimed, so JIT compilation, CUDA
   kernel loading, allocator growth and cold caches are not charged to the first sample.
3. **Interleaving.** The contenders run in turn, A B C A B C ..., so that a slow moment of
   a shared machine (another process, a frequency drop) hits all of them alike.
4. **Medians.** Each contender's figure is the median of its samples, and a speed ratio is
   the median of the per-round ratios, both robust to the odd outlier round.

On a GPU the work is asynchronous: ``sync`` (CuPy's and PyTorch's device synchronize) runs
after each call, inside the timed region, so a sample is the time until the GPU finished.

The peaks of the machine are measured in the same run: float32 matrix multiplication
(FLOP/s) at several sizes and a large memory copy (bytes read + written per second),
through NumPy and PyTorch on the CPU, through CuPy and PyTorch on a GPU. A peak is the
*best* sustained rate (a maximum over repeats and sizes, measured before and again after
the timed work), not a median. Model FLOP utilisation (MFU) divides a training step's
model FLOP/s by that peak; an MFU above 100% or a refused pair makes the run fail.
"""
from __future__ import annotations

import os
import platform
import statistics
import time

import numpy as np

import minitransformer as mt
from minitransformer import backend
from minitransformer.kernels import blas


# =======================================================================================
# Timing
# =======================================================================================

def no_sync() -> None:
    """The CPU computes synchronously: nothing to wait for."""


def sync_for(device: str, torch=None):
    """A function that waits until every queued GPU operation (CuPy and PyTorch) finished."""
    if device == "cpu":
        return no_sync
    cp = backend.cupy_module()

    def sync():
        if cp is not None:
            # the whole device, not one stream: Numba's CUDA kernels may run on another
            cp.cuda.runtime.deviceSynchronize()
        if torch is not None and torch.cuda.is_available():
            torch.cuda.synchronize()
    return sync


def peak_memory(contenders: dict, device: str, torch=None) -> dict:
    """{name: bytes one call of each contender adds to GPU memory at its peak}; {} on the CPU.

    Ours allocate through CuPy's memory pool: its free blocks are released first, so during
    the call the pool grows to the call's high-water mark (the blocks it held, rounded up
    to the pool's 512-byte units). PyTorch's (names starting "pytorch"):
    ``torch.cuda.max_memory_allocated`` above what was allocated before the call.
    """
    if device != "cuda":
        return {}
    cp = backend.cupy_module()
    pool = cp.get_default_memory_pool()
    sync = sync_for(device, torch)
    out = {}
    for name, fn in contenders.items():
        sync()
        if name.startswith("pytorch"):
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            fn()
            sync()
            out[name] = torch.cuda.max_memory_allocated() - before
        else:
            pool.free_all_blocks()
            before = pool.total_bytes()
            fn()
            sync()
            out[name] = pool.total_bytes() - before
    return out


def interleaved(contenders: dict, repeat: int, warmup: int = 1, sync=no_sync) -> dict:
    """Seconds of each callable in ``contenders``, timed in turn ``repeat`` times.

    Returns {name: [seconds of round 0, round 1, ...]}; every callable first runs
    ``warmup`` times untimed. ``sync`` runs after each call, inside the timed region.
    """
    for _ in range(warmup):
        for fn in contenders.values():
            fn()
            sync()
    times = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, fn in contenders.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def median(samples) -> float:
    return float(statistics.median(samples))


def median_ratio(times: dict, numerator: str, denominator: str) -> float:
    """Median over rounds of times[numerator][i] / times[denominator][i].

    With times as inputs, ``median_ratio(t, "pytorch", "ours")`` is how many times faster
    ours ran than PyTorch, measured round by round (so both saw the same machine).
    """
    return median([a / b for a, b in zip(times[numerator], times[denominator])])


# =======================================================================================
# Comparing results
# =======================================================================================

def to_numpy(a) -> np.ndarray:
    """A NumPy float64 copy of a NumPy, CuPy or PyTorch array (or a Tensor of ours)."""
    if isinstance(a, mt.Tensor):
        a = a.data
    elif hasattr(a, "detach"):                       # a PyTorch tensor
        a = a.detach().cpu().numpy()
    return np.asarray(backend.to_numpy(a), dtype=np.float64)


def rel_error(a, b) -> float:
    """||a - b|| / ||b|| over all elements (0 when both are zero)."""
    a, b = to_numpy(a), to_numpy(b)
    if a.shape != b.shape:
        raise ValueError(f"rel_error: shapes {a.shape} and {b.shape} differ")
    scale = float(np.linalg.norm(b))
    diff = float(np.linalg.norm(a - b))
    if scale == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return diff / scale


# =======================================================================================
# The environment: threads, precision, what ran where
# =======================================================================================

def import_torch():
    """PyTorch, or None when it is not installed (the ours-only rows still run)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def _numpy_blas() -> dict | None:
    """threadpoolctl's record of the BLAS NumPy loaded (its library, version, CPU kernel), or None."""
    from threadpoolctl import threadpool_info

    pools = [p for p in threadpool_info() if p["user_api"] == "blas"]
    mine = [p for p in pools if "numpy" in p["filepath"] or "scipy_openblas" in p["filepath"]]
    return (mine or pools or [None])[0]


def blas_config() -> str | None:
    """NumPy's BLAS as it describes itself: library, version, the CPU kernel it picked."""
    pool = _numpy_blas()
    if pool is None:
        return None
    return " ".join(str(pool[k]) for k in ("internal_api", "version", "architecture", "threading_layer")
                    if pool.get(k))


def set_threads(threads: int | None, torch=None) -> dict:
    """Give Numba, every loaded BLAS (through threadpoolctl, as the training ranks do) and
    PyTorch the same number of threads.

    Default (None): Numba's default, one per core, for all three. Returns the counts in
    effect ({"numba", "blas", "torch"}; "blas" is NumPy's, None where none was found).
    """
    import numba

    from minitransformer.dist.threads import set_blas_threads

    blas.mkl_installed()         # load MKL where installed (used or not), so its threads are set too
    if threads:
        numba.set_num_threads(threads)
    n = numba.get_num_threads()
    set_blas_threads(n)
    if torch is not None:
        torch.set_num_threads(n)
    pool = _numpy_blas()
    return {"numba": n, "blas": None if pool is None else int(pool["num_threads"]),
            "torch": None if torch is None else torch.get_num_threads()}


def precision_policy(device: str, torch=None) -> str:
    """Make both sides compute in plain float32 and say so.

    TensorFloat-32 (a 10-bit mantissa inside float32 matmuls on Ampere and later GPUs) is
    turned off in PyTorch, and CuPy uses it only when the environment sets CUPY_TF32=1;
    comparing a TF32 side with a float32 side would measure the precision, not the code.
    """
    if torch is not None:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
    if device == "cpu":
        return "float32 on both sides (CPU: no reduced-precision matmul in either)"
    if os.environ.get("CUPY_TF32", "0") != "0":
        return ("TF32 on in CuPy (CUPY_TF32 is set) but off in PyTorch: NOT a fair comparison; "
                "unset CUPY_TF32")
    return "float32 on both sides; TF32 off in PyTorch and in CuPy (CUPY_TF32 unset)"


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (runnable processes; above the core count the
    machine is shared and every figure is slower than it would be alone)."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def openmp_idle_threads() -> str:
    """How long GNU OpenMP's idle threads (MKL's, PyTorch's) spin before they sleep."""
    if backend.OPENMP_SPIN_SHORT:
        return f"spin {int(mt.OPENMP_SPINCOUNT):,} rounds, then sleep"
    said = {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in os.environ}
    if said:
        return "as the environment says: " + ", ".join(f"{k}={v}" for k, v in said.items())
    return "spin 300,000 rounds (GNU OpenMP default: loaded before minitransformer)"


def environment(device: str, threads: dict, torch=None) -> dict:
    """What a reader of the figures needs to know about the machine and the software."""
    import numba

    env = {
        "device": device,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "torch": None if torch is None else torch.__version__,
        "threads": threads,
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "load_average": load_average(),
        "precision": precision_policy(device, torch),
        "numpy_blas": blas_config(),
        "products": blas.describe() if device == "cpu" else None,
        # freed memory kept for the next step (mallopt, glibc), or handed back to the system
        "allocator": "keeps freed memory" if backend.keep_freed_memory() else "system default",
        "blas_idle_threads": "sleep at once" if backend.BLAS_THREADS_SLEEP else "spin (OpenBLAS default)",
        "openmp_idle_threads": openmp_idle_threads(),
    }
    try:
        import transformers

        env["transformers"] = transformers.__version__
    except ImportError:
        env["transformers"] = None
    if device == "cuda":
        cp = backend.cupy_module()
        env["cupy"] = cp.__version__
        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
        env["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return env


def check_device(device: str, torch=None) -> None:
    """Refuse, with what to do, a device this machine cannot run."""
    if device not in ("cpu", "cuda"):
        raise ValueError(f"--device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda":
        if not backend.has_cuda():
            raise RuntimeError("--device cuda needs CuPy and a CUDA GPU, and none was found; install the "
                               "GPU extra (pip install -e \".[cuda]\") on a machine with an NVIDIA GPU, "
                               "or run with --device cpu")
        if torch is not None and not torch.cuda.is_available():
            raise RuntimeError("--device cuda: CuPy sees a GPU but this PyTorch build has no CUDA "
                               f"(torch {torch.__version__}); install a CUDA build of torch to compare")


# =======================================================================================
# The peaks of the machine
# =======================================================================================

PEAK_SIZES = {   # (matmul sizes n, copy elements) per (device, mode)
    ("cpu", "tiny"): ((64, 128), 1 << 16),
    ("cpu", "quick"): ((1024, 2048), 1 << 23),
    ("cpu", "full"): ((1024, 2048, 3072), 1 << 24),
    ("cuda", "tiny"): ((256,), 1 << 20),
    ("cuda", "quick"): ((4096, 8192), 1 << 28),
    ("cuda", "full"): ((8192, 16384), 1 << 28),
}


def _matmuls(device: str, n: int, torch, sync) -> tuple[dict, dict]:
    """{source: a callable multiplying two n x n float32 matrices}, after checking each result.

    A product that is off (TF32 or another reduced precision switched on) is refused, as
    any contender that computes something else is.
    """
    rng = np.random.default_rng(n)
    a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
    xp = np if device == "cpu" else backend.cupy_module()
    ours_name = "numpy" if device == "cpu" else "cupy"
    da, db = xp.asarray(a), xp.asarray(b)
    dc = xp.empty((n, n), np.float32)
    fns, outs = {ours_name: lambda: xp.matmul(da, db, out=dc)}, {ours_name: dc}
    if device == "cpu" and blas.mkl_installed():
        # MKL where installed, whether or not our linear layers run on it on this CPU (they
        # do on Intel's; the header line says which library they use)
        mc = np.empty((n, n), np.float32)

        def mkl_product():
            with blas.using("mkl"):
                blas.gemm(a, b, out=mc)
        fns["mkl"], outs["mkl"] = mkl_product, mc
    if torch is not None:
        tdev = "cpu" if device == "cpu" else "cuda"
        ta, tb = torch.from_numpy(a).to(tdev), torch.from_numpy(b).to(tdev)
        tc = torch.empty((n, n), dtype=torch.float32, device=tdev)
        fns["pytorch"], outs["pytorch"] = (lambda: torch.mm(ta, tb, out=tc)), tc
    rows = min(n, 256)          # checking a band of rows in float64 is enough, and cheap
    want = a[:rows].astype(np.float64) @ b.astype(np.float64)
    errors = {}
    for name, fn in fns.items():
        fn()
        sync()
        errors[name] = rel_error(outs[name][:rows], want)
        if errors[name] > 1e-4:
            raise RuntimeError(f"peaks: the {name} float32 matmul is off by {errors[name]:.2e} "
                               "(relative); is TF32 or another reduced precision on?")
    return fns, errors


def matmul_peak(device: str, mode: str, repeat: int, torch=None) -> dict:
    """The best sustained float32 matmul rate: the fastest of ``repeat`` runs at each size.

    A machine's peak is what it *can* do, so the figure is a maximum, not a median: the
    median of a few products on a shared or frequency-scaling machine falls well below it
    (on 2 threads, 119 GFLOP/s as a median of five 1024^3 products against 200-206 as the
    best at 1024-3072), and a training step that ran in a good moment would then show an
    MFU above 100%. Several sizes, because a small product does not fill the cores' caches
    and threads the way a large one does, and a large one can meet memory limits.

    Returns {"sizes": {n: {source: best flop/s}}, "samples": {n: {source: [flop/s, ...]}},
    "source", "n", "flop_per_s"} (the last three: the best of all).
    """
    sizes, _ = PEAK_SIZES[(device, mode)]
    sync = sync_for(device, torch)
    best_at, samples, errors = {}, {}, {}
    for n in sizes:
        fns, errors[n] = _matmuls(device, n, torch, sync)
        times = interleaved(fns, repeat, warmup=1, sync=sync)
        samples[n] = {name: [2.0 * n ** 3 / t for t in ts] for name, ts in times.items()}
        best_at[n] = {name: max(rates) for name, rates in samples[n].items()}
    n, source = max(((n, s) for n in best_at for s in best_at[n]), key=lambda k: best_at[k[0]][k[1]])
    return {"sizes": best_at, "samples": samples, "rel_error": errors,
            "source": source, "n": n, "flop_per_s": best_at[n][source]}


def copy_peak(device: str, mode: str, repeat: int, torch=None) -> dict:
    """The best memory copy rate, bytes read + written per second, each way available."""
    _, count = PEAK_SIZES[(device, mode)]
    sync = sync_for(device, torch)
    xp = np if device == "cpu" else backend.cupy_module()
    src, dst = xp.ones(count, np.float32), xp.empty(count, np.float32)
    copies = {"numpy" if device == "cpu" else "cupy": lambda: xp.copyto(dst, src)}
    if torch is not None:
        tdev = "cpu" if device == "cpu" else "cuda"
        tsrc = torch.ones(count, dtype=torch.float32, device=tdev)
        tdst = torch.empty(count, dtype=torch.float32, device=tdev)
        copies["pytorch"] = lambda: tdst.copy_(tsrc)
    moved = 2.0 * 4 * count                     # every byte read once and written once
    times = interleaved(copies, repeat, warmup=1, sync=sync)
    return {"bytes": moved, "bytes_per_s": {k: moved / min(v) for k, v in times.items()}}


def peaks(device: str, mode: str, repeat: int, torch=None) -> dict:
    """The machine's float32 matmul FLOP/s and memory copy bytes/s, each way available.

    Returns {"matmul": matmul_peak(...), "copy": copy_peak(...), "matmul_peak": {"source",
    "n", "flop_per_s"}}. ``combine_peaks`` later folds in a second matmul measurement taken
    after the timed work, so the MFU denominator is the best the machine showed in the run.
    """
    matmul = matmul_peak(device, mode, repeat, torch)
    return {"matmul": {"before": matmul}, "copy": copy_peak(device, mode, repeat, torch),
            "matmul_peak": {k: matmul[k] for k in ("source", "n", "flop_per_s")}}


def combine_peaks(p: dict, after: dict) -> dict:
    """Add the matmul peak measured after the run; the MFU denominator becomes the best of both.

    Also records the spread: every best-per-size figure, before and after, as a range, so a
    reader sees how steady the machine was (a wide spread means a busy or throttling machine,
    and every MFU of the run is uncertain by as much).
    """
    p["matmul"]["after"] = after
    before = p["matmul"]["before"]
    best = max((before, after), key=lambda m: m["flop_per_s"])
    p["matmul_peak"] = {k: best[k] for k in ("source", "n", "flop_per_s")}
    p["matmul_peak"]["measured"] = "before" if best is before else "after"
    rates = [r for m in (before, after) for by_source in m["sizes"].values() for r in by_source.values()]
    p["matmul_spread"] = {"min": min(rates), "max": max(rates),
                          "before": before["flop_per_s"], "after": after["flop_per_s"]}
    return p


# =======================================================================================
# Model FLOP utilisation, and what makes a run's figures untrustworthy
# =======================================================================================

def add_mfu(rows: list[dict], peak_flop_per_s: float) -> None:
    """Each timed training row's MFU: model FLOPs per second / the machine's peak."""
    for row in rows:
        if "seconds" in row:
            row["mfu"] = {k: row["model_flops"]["total"] / s / peak_flop_per_s
                          for k, s in row["seconds"].items()}


def failures(result: dict) -> list[str]:
    """Why this run's figures cannot be trusted, one line each (empty: they can).

    A REFUSED pair computed something else than its reference, so the run did not measure
    what it says. An MFU above 100% is impossible: the peak was measured too low, or the
    FLOPs were over-counted; either way every MFU of the run is wrong.
    """
    problems = []
    for row in result.get("ops", []):
        for name, c in row["contenders"].items():
            if "refused" in c:
                problems.append(f"REFUSED op {row['op']} {tuple(row['shape'])} / {name}: {c['refused']}")
    for row in result.get("train", []):
        where = f"{row['family']} {row['shape']}"
        if "refused" in row:
            problems.append(f"REFUSED training pair {where}: {row['refused']}")
        for side, mfu in row.get("mfu", {}).items():
            if mfu > 1.0:
                problems.append(f"MFU above 100% in row {where} ({side}: {mfu:.1%}): the measured peak "
                                "is too low or the FLOP count too high; the run's MFU figures are wrong")
    return problems
