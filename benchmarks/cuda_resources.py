"""Registers, spills and shared memory of every CUDA kernel, compiled for sm_90 without a GPU.

    python -m benchmarks.cuda_resources            # the table for sm_90 (H100, H200)
    python -m benchmarks.cuda_resources --cc 8.0   # another architecture

How: each CUDA wrapper of ``kernels.dispatch._TABLE`` (and ``cuda_attention``, the reference
attention kernel) is called on the arguments of ``kernel_cases`` while launches are
recorded instead of run, which gives every kernel's Python function and argument types
(the attention kernels at head sizes 64 and 128). Each is compiled to PTX with
``numba.cuda.compile_ptx`` (NVVM) and assembled by ``ptxas -v``, which reports what one
thread of the kernel uses. Needs NVVM and ptxas (a CUDA toolkit, or the wheels
``nvidia-cuda-nvcc-cu12`` and ``nvidia-cuda-nvrtc-cu12``), but no GPU; and a process without
Numba's CUDA simulator, which compiles nothing.

Reading the table: "spill" is bytes stored to and loaded from local memory because the
registers ran out (the figure that must be 0 for the attention kernels); "stack" includes
local arrays the compiler could not keep in registers; shared memory is per block.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import NamedTuple

from benchmarks import kernel_cases

# The attention wrappers are compiled at both production head sizes.
HEAD_DIMS = (64, 128)
# Modules compiled besides those of the dispatch table: the kernels they keep as references.
EXTRA = (("attention_forward", "cuda_attention"), ("attention_backward", "cuda_attention"))


class Launch(NamedTuple):
    module: str        # the kernel module, e.g. "cuda_flash_attention"
    name: str          # the function that builds the kernel, e.g. "_forward_kernel"
    detail: str        # what it was built for (head size), or ""
    py_func: object
    argtypes: tuple
    threads: int


class Row(NamedTuple):
    kernel: str
    detail: str
    threads: int
    registers: int
    spill_stores: int
    spill_loads: int
    stack: int
    shared: int


@contextlib.contextmanager
def recording(into: list, detail: str):
    """Record every Numba CUDA launch as a :class:`Launch` instead of running it."""
    from numba import typeof
    from numba.core.typing.typeof import Purpose
    from numba.cuda import dispatcher

    class Recorder:
        def __init__(self, disp, _griddim, blockdim, *_stream_and_shared):
            self.disp = disp
            self.threads = blockdim if isinstance(blockdim, int) else math.prod(blockdim)

        def __call__(self, *args):
            types = tuple(typeof(a, Purpose.argument) for a in args)
            func = self.disp.py_func
            # The builder's name tells the kernels apart: softmax's are both called "kernel".
            name = func.__qualname__.split(".<locals>.")[0]
            into.append(Launch(func.__module__.rsplit(".", 1)[-1], name, detail, func, types, self.threads))

    original = dispatcher.CUDADispatcher.configure
    dispatcher.CUDADispatcher.configure = lambda self, *a, **k: Recorder(self, *a, **k)
    try:
        yield into
    finally:
        dispatcher.CUDADispatcher.configure = original


def launches() -> list[Launch]:
    """Every distinct kernel (and argument types) the CUDA wrappers launch on the cases."""
    import importlib

    from minitransformer.kernels import dispatch

    pairs = [(name, mods[1]) for name, mods in dispatch._TABLE.items() if mods[1] is not None]
    found, seen = [], set()
    for name, module in pairs + list(EXTRA):
        fn = getattr(importlib.import_module(f"minitransformer.kernels.{module}"), name)
        dims = HEAD_DIMS if name.startswith("attention") else (None,)
        for dim in dims:
            shape = None if dim is None else (2, 2, 70, 70, dim)
            case = kernel_cases.cases(name, "simulate", attention_shape=shape)[-1]
            got = []
            with recording(got, "" if dim is None else f"D={dim}"):
                fn(*case.args)
            for launch in got:
                key = (launch.py_func, launch.argtypes)   # one function per builder call
                if key not in seen:
                    seen.add(key)
                    found.append(launch)
    return found


def find_ptxas() -> str | None:
    """ptxas: $PTXAS, on PATH, in the nvidia-cuda-nvcc wheel, or in a CUDA toolkit folder."""
    candidates = [os.environ.get("PTXAS"), shutil.which("ptxas")]
    try:
        import nvidia.cuda_nvcc as nvcc
        candidates += [os.path.join(p, "bin", "ptxas") for p in nvcc.__path__]
    except ImportError:
        pass
    candidates += sorted(glob.glob("/usr/local/cuda*/bin/ptxas"), reverse=True)
    return next((c for c in candidates if c and os.path.exists(c)), None)


_ENTRY = re.compile(r"Compiling entry function '([^']+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def parse_ptxas(text: str) -> dict:
    """{registers, spill_stores, spill_loads, stack, shared} of the entry function ptxas -v reports."""
    frame = _FRAME.search(text)
    used = _USED.search(text)
    if not (_ENTRY.search(text) and frame and used):
        raise ValueError(f"ptxas -v printed no entry function's resources; it printed:\n{text}")
    return dict(registers=int(used.group(1)), spill_stores=int(frame.group(2)),
                spill_loads=int(frame.group(3)), stack=int(frame.group(1)),
                shared=int(used.group(2) or 0))


@contextlib.contextmanager
def target_device(cc):
    """Make Numba compile device functions for ``cc`` without asking a GPU for its own.

    A kernel's device functions (the dropout hash, the block reduction) are compiled when
    the kernel is typed, for "the current device", which a machine without a GPU lacks.
    """
    from numba.cuda import dispatcher

    class Target:
        compute_capability = cc

    original = dispatcher.get_current_device
    dispatcher.get_current_device = Target
    try:
        yield
    finally:
        dispatcher.get_current_device = original


def compile_row(launch: Launch, ptxas: str, cc=(9, 0)) -> Row:
    from numba import cuda

    with target_device(cc):
        ptx, _ = cuda.compile_ptx(launch.py_func, launch.argtypes, cc=cc)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        done = subprocess.run([ptxas, "-v", f"-arch=sm_{cc[0]}{cc[1]}", path, "-o", os.devnull],
                              capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise RuntimeError(f"ptxas failed on {launch.module}.{launch.name}: {done.stderr.strip()}")
    r = parse_ptxas(done.stdout + done.stderr)
    return Row(f"{launch.module}.{launch.name}", launch.detail, launch.threads, r["registers"],
               r["spill_stores"], r["spill_loads"], r["stack"], r["shared"])


def table(rows: list[Row]) -> str:
    lines = ["| kernel | built for | threads/block | registers | spill stores (B) | spill loads (B) "
             "| stack (B) | shared memory (B) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.kernel} | {r.detail or '-'} | {r.threads} | {r.registers} | {r.spill_stores} | "
                     f"{r.spill_loads} | {r.stack} | {r.shared} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cuda_resources",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--cc", default="9.0", help="compute capability to compile for (default 9.0)")
    args = parser.parse_args(argv)
    cc = tuple(int(x) for x in args.cc.split("."))
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        print("cuda_resources: the CUDA simulator is on (NUMBA_ENABLE_CUDASIM=1), and it compiles "
              "nothing; run in a process without it")
        return 2
    ptxas = find_ptxas()
    if ptxas is None:
        print("cuda_resources: no ptxas found (looked at $PTXAS, PATH, the nvidia-cuda-nvcc wheel and "
              "/usr/local/cuda*/bin); install a CUDA toolkit or pip install nvidia-cuda-nvcc-cu12")
        return 2
    rows, failed = [], 0
    for launch in launches():
        try:
            rows.append(compile_row(launch, ptxas, cc))
        except Exception as e:       # one kernel that fails to compile must not hide the others
            failed += 1
            print(f"FAILED to compile {launch.module}.{launch.name} {launch.detail}: "
                  f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", flush=True)
    print(f"CUDA kernels compiled for sm_{cc[0]}{cc[1]} by NVVM and {ptxas}\n")
    print(table(rows))
    spilled = [r for r in rows if r.spill_stores or r.spill_loads]
    print(f"\n{len(rows)} kernels, {len(spilled)} with spills, {failed} failed to compile")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
