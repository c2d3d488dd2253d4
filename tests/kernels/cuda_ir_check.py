"""Compile the float32 CUDA kernels without a GPU and check what arithmetic they compile to.

Run as ``python -m tests.kernels.cuda_ir_check [--ptx]`` in a process without the simulator
(``test_cuda_twins.py`` runs it). Numba compiles a CUDA kernel in two steps: type inference
and lowering to LLVM IR, which need only Numba, then NVVM to PTX, which needs the CUDA
toolkit's libraries. The first step is what this checks, so it runs on any machine, for
every float32 kernel as a GPU builds it (the row kernels with their warp-shuffle
reductions, on both the registers and the looped path; the shared-memory reduction is
what the simulator runs, and checks):

- the kernel types and lowers: the warp-shuffle path, which the simulator cannot run, at
  least compiles this far, and contains its shuffles;
- no float64 arithmetic in a float32 kernel. In Numba a float32 times a Python float is
  float64 (``x * 0.5``, ``s / n`` for an integer n), which on a GPU runs at a fraction of
  float32 speed (1/64 on consumer chips). The check: no instruction takes a float64 value
  that is not a constant (a constant converted once, ``ft(0.5)``, folds away).

Kernels that call device functions ask Numba for the current device's compute capability;
without a GPU, a stand-in device of compute capability 9.0 (an H100) answers.

With ``--ptx`` it also compiles the warp-shuffle kernels to PTX for sm_90 where NVVM and
NVRTC are installed (``numba-cuda[cu12]`` brings them as wheels), and says so where not.
Prints one line per kernel and exits non-zero on a failure.
"""
from __future__ import annotations

import re
import sys
import types

import numpy as np

CC = (9, 0)
# An operand of type double that is a value (%name), not a constant.
_FLOAT64_VALUE = re.compile(r"\bdouble %")


def float64_operations(ir: str) -> list:
    """The instructions of LLVM IR that take a float64 value."""
    return [line.strip() for line in ir.splitlines()
            if not line.startswith(("declare", "define")) and _FLOAT64_VALUE.search(line)]


def kernels_to_check():
    """(name, kernel, argument types, expects shuffles) for every float32 CUDA twin."""
    from numba import types as nt

    from minitransformer.kernels import cuda_adamw, cuda_cross_entropy, cuda_embedding, cuda_gelu
    from minitransformer.kernels import cuda_layer_norm, cuda_softmax

    f32 = nt.float32
    vec, mat = nt.Array(f32, 1, "C"), nt.Array(f32, 2, "C")
    ids, mask = nt.Array(nt.int64, 1, "C"), nt.Array(nt.boolean, 2, "C")
    ft = np.float32
    out = []
    # The row kernels as a GPU builds them: warp shuffles, on both of their paths.
    for per_thread, path in ((6, "registers"), (0, "looped")):
        out += [
            (f"softmax forward {path}", cuda_softmax._forward_kernel(ft, 128, per_thread, True),
             (mat, mask, ids, nt.boolean, mat), True),
            (f"softmax backward {path}", cuda_softmax._backward_kernel(ft, 128, per_thread, True),
             (mat, mat, mat), True),
            (f"cross-entropy forward {path}", cuda_cross_entropy._forward_kernel(ft, 128, per_thread, True),
             (mat, ids, nt.int64, f32, vec, vec), True),
        ]
        for rms in (False, True):
            forward, backward = cuda_layer_norm._kernels(ft, 128, per_thread, True, rms)
            norm = "rms_norm" if rms else "layer_norm"
            out += [(f"{norm} forward {path}", forward, (mat, vec, vec, f32, f32, mat, vec, vec), True),
                    (f"{norm} backward {path}", backward, (mat, vec, vec, vec, mat, f32, mat, mat, mat), True)]
    out.append(("cross-entropy backward", cuda_cross_entropy._backward_kernel(ft, 128),
                (mat, ids, vec, vec, nt.int64, f32, mat), False))
    for form, (forward, backward) in cuda_gelu._kernels(ft).items():
        out += [(f"gelu {form} forward", forward, (vec, vec), False),
                (f"gelu {form} backward", backward, (vec, vec, vec), False)]
    out.append(("embedding backward", cuda_embedding._kernel(ft), (ids, ids, mat, mat), False))
    out.append(("adamw", cuda_adamw._kernel(ft), (vec,) * 4 + (f32,) * 8, False))
    return out


def _stand_in_device():
    """Let Numba compile device functions without a GPU (see the module docstring)."""
    from numba.cuda import dispatcher

    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=CC)


def main(argv) -> int:
    from numba import config

    if config.ENABLE_CUDASIM:
        print("run this without NUMBA_ENABLE_CUDASIM: the simulator compiles nothing")
        return 2
    from numba import cuda
    from numba import types as nt
    from numba.cuda.compiler import compile_cuda

    _stand_in_device()
    failures = []
    kernels = kernels_to_check()
    for name, kernel, argtypes, shuffles in kernels:
        ir = compile_cuda(kernel.py_func, nt.void, argtypes, cc=CC).library.get_llvm_str()
        stray = float64_operations(ir)
        has_shuffles = "llvm.nvvm.shfl.sync" in ir
        ok = not stray and has_shuffles == shuffles
        detail = f"{len(stray)} float64 operations, shuffles: {'yes' if has_shuffles else 'no'}"
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}" + (f"; first: {stray[0]}" if stray else ""))
        if not ok:
            failures.append(name)
    if "--ptx" in argv:
        for name, kernel, argtypes, shuffles in kernels:
            if not shuffles:
                continue
            try:
                ptx, _ = cuda.compile_ptx(kernel.py_func, argtypes, cc=CC)
            except Exception as error:                 # the toolkit's libraries are missing
                if "find" not in str(error).lower() and "not found" not in str(error).lower():
                    raise
                print(f"skip ptx: NVVM or NVRTC is not installed ({type(error).__name__})")
                break
            ok = "shfl.sync.bfly" in ptx
            print(f"{'ok  ' if ok else 'FAIL'} ptx sm_{CC[0]}{CC[1]} {name}: {len(ptx)} characters")
            if not ok:
                failures.append(f"ptx {name}")
    print(f"{len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
