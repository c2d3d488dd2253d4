"""Benchmark results that can be shared and compared: what ran, where, and against what.

Every results file (``python -m benchmarks --json FILE``) carries, besides every sample:

- ``schema_version``: the layout of the file (``compare`` refuses a layout it cannot read);
- ``run``: the library's version and the commit it ran from (and whether the checkout had
  uncommitted changes), the date (UTC), the command-line arguments;
- ``environment``: the machine (processor, cores, memory, operating system), the device and,
  on a GPU, its name and driver, and the versions of every library on either side.

``python -m benchmarks compare A.json B.json`` lines up the rows two runs share and prints
B's speed over A's for each (above 1: B is faster), with each run's spread, so a change's
effect can be told from the noise: when the two ranges overlap, the difference is within it.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

SCHEMA_VERSION = 1

# Libraries whose versions change a figure; reported when installed.
LIBRARIES = ("minitransformer", "numpy", "numba", "numba-cuda", "scipy", "torch", "transformers", "cupy-cuda12x",
             "cupy-cuda13x", "threadpoolctl")


def _git(*args: str) -> str | None:
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def versions() -> dict:
    """{distribution: version} of the libraries that are installed."""
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def machine() -> dict:
    """The processor, cores, memory and operating system of this machine."""
    memory = None
    if hasattr(os, "sysconf"):
        try:
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            memory = None
    return {"processor": platform.processor() or platform.machine(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "memory_bytes": memory, "system": platform.platform(),
            "python": platform.python_version()}


def gpu(device: str) -> dict | None:
    """Name, compute capability, driver and runtime versions of the GPU in use (None on the CPU)."""
    if device != "cuda":
        return None
    from minitransformer import backend

    cp = backend.cupy_module()
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return {"name": name, "compute_capability": f"{props['major']}.{props['minor']}",
            "driver": cp.cuda.runtime.driverGetVersion(), "runtime": cp.cuda.runtime.runtimeGetVersion()}


def run_info(argv) -> dict:
    """What ran: version, commit (with a dirty flag), date and arguments."""
    commit = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {"minitransformer": versions().get("minitransformer"),
            "commit": commit, "dirty": None if dirty is None else bool(dirty),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "arguments": list(sys.argv[1:] if argv is None else argv)}


def describe(result: dict, argv, device: str) -> dict:
    """Add the schema version, the run and the machine to a result dict (in place)."""
    result["schema_version"] = SCHEMA_VERSION
    result["run"] = run_info(argv)
    env = result.setdefault("environment", {})
    env["machine"] = machine()
    env["versions"] = versions()
    env["gpu_details"] = gpu(device)
    return result


# =======================================================================================
# Comparing two results files
# =======================================================================================

def load(path: str) -> dict:
    """A results file, refused in one line when it is missing, not JSON or of another layout."""
    try:
        with open(path) as f:
            result = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"compare: no results file at {path}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"compare: {path} is not JSON ({e}); give a file written by --json") from None
    version = result.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ValueError(f"compare: {path} has schema version {version!r}, this harness reads "
                         f"{SCHEMA_VERSION}; rerun the benchmark with this version")
    return result


def _timings(result: dict) -> dict:
    """{row label: (median seconds, min seconds, max seconds)} of every timed contender."""
    rows = {}
    for r in result.get("ops", []):
        for name, c in r["contenders"].items():
            if "samples" in c:
                label = f"op {r['op']} {'x'.join(map(str, r['shape']))} / {name}"
                rows[label] = (c["seconds"], min(c["samples"]), max(c["samples"]))
    for r in result.get("train", []):
        for name, samples in r.get("samples", {}).items():
            label = f"train {r['family']} {r['shape']} / {name}"
            rows[label] = (r["seconds"][name], min(samples), max(samples))
    return rows


def compare(a: dict, b: dict, name_a: str = "A", name_b: str = "B") -> list[str]:
    """A markdown table of B's speed over A's (time A / time B) for each row both timed."""
    ta, tb = _timings(a), _timings(b)
    shared = [k for k in ta if k in tb]
    lines = []
    ea, eb = a.get("environment", {}), b.get("environment", {})
    for key in ("device", "cpu", "gpu"):
        if ea.get(key) != eb.get(key):
            lines.append(f"note: the runs differ in {key}: {ea.get(key)!r} and {eb.get(key)!r}; the ratios "
                         "compare machines as much as code")
    for which, res in ((name_a, a), (name_b, b)):
        run = res.get("run", {})
        lines.append(f"{which}: commit {str(run.get('commit'))[:12]}{' (dirty)' if run.get('dirty') else ''}, "
                     f"{run.get('date')}, {' '.join(run.get('arguments', []))}")
    lines += ["", f"| row | {name_a} ms (min-max) | {name_b} ms (min-max) | {name_b} speed / {name_a} | within noise |",
              "|---|---:|---:|---:|---|"]
    for k in shared:
        (ma, la, ha), (mb, lb, hb) = ta[k], tb[k]
        overlap = la <= hb and lb <= ha
        lines.append(f"| {k} | {ma * 1e3:.2f} ({la * 1e3:.2f}-{ha * 1e3:.2f}) | {mb * 1e3:.2f} "
                     f"({lb * 1e3:.2f}-{hb * 1e3:.2f}) | {ma / mb:.2f}x | {'yes' if overlap else 'no'} |")
    only = sorted(set(ta) ^ set(tb))
    if not shared:
        lines.append("(no timed row in common)")
    if only:
        lines += ["", "timed in one run only: " + "; ".join(only)]
    return lines


def compare_main(argv) -> int:
    """``python -m benchmarks compare A.json B.json``: print the table; 2 on bad input."""
    if len(argv) != 2 or any(a.startswith("-") for a in argv):
        print("usage: python -m benchmarks compare A.json B.json   (B's speed over A's, row by row)",
              file=sys.stderr)
        return 2
    try:
        a, b = load(argv[0]), load(argv[1])
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(compare(a, b, Path(argv[0]).name, Path(argv[1]).name)))
    return 0
