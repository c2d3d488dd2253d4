"""Matrix products on the CPU: C = alpha op(A) op(B) + beta C, op(X) = X or X^T.

A transformer's training step is mostly products: at GPT-2 small, batch 4 x 256, the
linear layers and the head are nine tenths of its floating-point work. Every product of
a linear layer goes through ``gemm`` below, so the library that computes it sets the
speed of the whole step:

- the reference is NumPy's ``matmul`` (the BLAS NumPy ships with: OpenBLAS in its wheels);
- the fast path is Intel's MKL (``pip install minitransformer[mkl]``), called directly
  through its C interface (``cblas_sgemm`` / ``cblas_dgemm``), on Intel's CPUs. Measured on
  a 2-core AVX-512 Intel machine, interleaved in one process, MKL runs the products of a
  GPT-2 layer at 315-345 GFLOP/s where the OpenBLAS of NumPy's wheel runs them at 180-300.
  On an AMD EPYC (AVX-512) the same MKL ran a 2048^3 product at 186 GFLOP/s against
  OpenBLAS's 349, and a GPT-2 small step took 5.5 s on it against 2.6 s on OpenBLAS: MKL
  does not take its fast code paths on other vendors' CPUs. So MKL multiplies only where the
  CPU says "GenuineIntel"; elsewhere NumPy's BLAS does, installed or not.

``MINITRANSFORMER_GEMM`` overrides the choice for a process: ``numpy`` or ``mkl`` (``auto``,
the default, is the rule above); :func:`using` overrides it for a block of code (the tests
and the benchmarks' peaks use it to run both libraries in one process).

Both compute the same sums; only the order of the additions inside each dot product
differs, so results agree to rounding (tests/kernels/test_blas.py compares them).

BLAS reads row-major arrays through a leading dimension: row i of A starts lda elements
after row i-1. A C-contiguous (m, k) array is (m, k) row-major with lda = k; its transpose
(an F-contiguous view) is the same memory read as op = T, so no operand is ever copied.

Threads: MKL runs on the GNU OpenMP runtime (its "GNU threading layer"), PyTorch's runtime
too, so a process that holds both has one pool of threads for products, not two taking the
same cores in turn. MKL uses exactly the threads it is given (no dynamic adjustment), so a
product's bits do not depend on the machine's load. The fused kernels between the products
run on threads of their own (``_cpu.run_parallel``); for them to find the cores free, the
package shortens how long OpenMP's idle threads spin after a product
(``minitransformer/__init__.py``).

Reproducibility: a run resumed from a checkpoint holds new arrays at new addresses, and
must compute what the uninterrupted run computed. On the machines this was measured on
(AVX-512), MKL's products give the same bits whatever the alignment of their arrays
(tests/kernels/test_blas.py checks it wherever the suite runs). Where a CPU's code path
could differ, MKL's own switch guarantees it at a cost (6% of a GPT-2 small step here):
``MKL_CBWR=AUTO,STRICT`` in the environment.
"""
from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import sys
from importlib import metadata

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from minitransformer import backend

# Constants of the C interface (mkl_cblas.h, mkl_service.h).
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_THREADING_GNU = 3

CHOICES = ("auto", "mkl", "numpy")

_MKL: dict = {}            # MKL once loaded ({"lib": CDLL, "gemm": {dtype: function}, "version"}),
                           # or {"absent": True} once looked for in vain
_POLICY: dict = {}         # the process's choice, decided once: {"mkl": _MKL or None, "why": str}
_USING: list = []          # choices of enclosing ``using`` blocks, innermost last


def _find_mkl() -> str | None:
    """The path of MKL's single dynamic library (libmkl_rt), as the ``mkl`` wheel installs it."""
    try:
        for f in metadata.files("mkl") or ():
            if os.path.basename(str(f)).startswith("libmkl_rt.so"):
                return str(f.locate())
    except metadata.PackageNotFoundError:
        pass
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        found = sorted(glob.glob(os.path.join(prefix, "lib", "libmkl_rt.so*")))
        if found:
            return found[0]
    return None


def _mkl() -> dict:
    """Load MKL once, whether or not the products will run on it: {"lib", "gemm", "version"},
    or {} where MKL is not installed."""
    if "lib" in _MKL or "absent" in _MKL:
        return _MKL if "lib" in _MKL else {}
    path = _find_mkl()
    if path is None:
        _MKL["absent"] = True
        return {}
    lib = ctypes.CDLL(path)
    # Chosen before the first computing call, which is when MKL fixes them.
    if "MKL_THREADING_LAYER" not in os.environ:
        lib.MKL_Set_Threading_Layer(ctypes.c_int(_THREADING_GNU))
    if "MKL_DYNAMIC" not in os.environ:
        lib.MKL_Set_Dynamic(ctypes.c_int(0))
    if "MKL_NUM_THREADS" not in os.environ:
        # MKL counts physical cores; Numba's kernels (and NumPy's BLAS) take every core the
        # process may use, or what the user gave Numba: MKL takes the same.
        lib.MKL_Set_Num_Threads(ctypes.c_int(_threads()))
    c_int, P = ctypes.c_int, ctypes.c_void_p
    gemms = {}
    for dtype, name, scalar in ((np.float32, "cblas_sgemm", ctypes.c_float),
                                (np.float64, "cblas_dgemm", ctypes.c_double)):
        fn = getattr(lib, name)
        fn.argtypes = [c_int, c_int, c_int, c_int, c_int, c_int, scalar, P, c_int, P, c_int, scalar, P, c_int]
        fn.restype = None
        gemms[np.dtype(dtype)] = fn
    buf = ctypes.create_string_buffer(256)
    lib.MKL_Get_Version_String(buf, ctypes.c_int(len(buf)))
    _MKL.update(lib=lib, gemm=gemms, version=buf.value.decode(errors="replace").strip())
    return _MKL


def cpu_vendor() -> str | None:
    """The CPU's vendor string ("GenuineIntel", "AuthenticAMD", ...) or None where unknown."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _check_choice(choice: str, where: str) -> str:
    choice = choice.strip().lower() or "auto"
    if choice not in CHOICES:
        raise ValueError(f"{where}: {choice!r} is not a product library; expected one of {', '.join(CHOICES)}")
    return choice


def _decide(choice: str) -> dict:
    """{"mkl": the MKL to multiply on or None, "why": one line saying why}."""
    if choice == "numpy":
        return {"mkl": None, "why": "MKL turned off (numpy chosen)"}
    mkl = _mkl()
    if not mkl:
        if choice == "mkl":
            raise RuntimeError("MKL was chosen for the CPU's products but is not installed: "
                               "pip install minitransformer[mkl]")
        return {"mkl": None, "why": "install minitransformer[mkl] for MKL on Intel CPUs"}
    vendor = cpu_vendor()
    if choice == "auto" and vendor != "GenuineIntel":
        return {"mkl": None, "why": f"MKL installed but left off on this {vendor or 'unknown'} CPU, where "
                                    "it runs slower than OpenBLAS; MINITRANSFORMER_GEMM=mkl forces it"}
    return {"mkl": mkl, "why": ""}


def _active() -> dict | None:
    """The MKL the products run on now, or None for NumPy's BLAS."""
    if _USING:
        return _USING[-1]["mkl"]
    if not _POLICY:
        _POLICY.update(_decide(_check_choice(os.environ.get("MINITRANSFORMER_GEMM", "auto"),
                                             "MINITRANSFORMER_GEMM")))
    return _POLICY["mkl"]


@contextlib.contextmanager
def using(choice: str):
    """Run the products inside the block on ``choice``: "mkl", "numpy" or "auto" (the rule
    of the module docstring, whatever the environment says). Process-wide, not per thread;
    "mkl" raises where MKL is not installed."""
    _USING.append(_decide(_check_choice(choice, "blas.using")))
    try:
        yield
    finally:
        _USING.pop()


def _threads() -> int:
    """Numba's thread count where Numba is loaded, else the cores this process may use."""
    if "numba" in sys.modules:
        return sys.modules["numba"].get_num_threads()
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:       # pragma: no cover - not Linux
        return os.cpu_count() or 1


def library() -> str:
    """Which library runs the CPU products now: "mkl" or "numpy" (NumPy's own BLAS)."""
    return "numpy" if _active() is None else "mkl"


def mkl_installed() -> bool:
    """Whether MKL can be loaded, used or not."""
    return bool(_mkl())


def describe() -> str:
    """One line for reports: the library and, for MKL, its version and threads; for NumPy's
    BLAS, why MKL is not used."""
    mkl = _active()
    if mkl is None:
        return f"NumPy's BLAS ({(_USING[-1] if _USING else _POLICY)['why']})"
    threads = mkl["lib"].MKL_Get_Max_Threads()
    layer = os.environ.get("MKL_THREADING_LAYER", "GNU OpenMP")
    return f"MKL ({mkl['version']}; {threads} threads; threading: {layer})"


def _row_major(x: np.ndarray) -> tuple[bool, int] | None:
    """(transposed, leading dimension) reading the 2-D ``x`` as BLAS row-major memory: x
    itself (rows of stride lda), or x^T when x is a transposed view; None when x's strides
    are neither."""
    item = x.itemsize
    s0, s1 = x.strides
    rows, cols = x.shape
    if (s1 == item or cols == 1) and s0 % item == 0 and s0 // item >= max(cols, 1):
        return False, s0 // item
    if (s0 == item or rows == 1) and s1 % item == 0 and s1 // item >= max(rows, 1):
        return True, s1 // item
    return None


def _mkl_gemm(fn, a, b, trans_a, trans_b, out, alpha, beta) -> bool:
    """One cblas gemm call, or False when an operand's layout is not one BLAS reads."""
    ra, rb, rc = _row_major(a), _row_major(b), _row_major(out)
    if ra is None or rb is None or rc is None or rc[0]:
        return False
    m, n = out.shape
    k = a.shape[0] if trans_a else a.shape[1]
    # a transposed view is its own transpose in row-major memory: flip the op instead
    ta = trans_a != ra[0]
    tb = trans_b != rb[0]
    fn(_ROW_MAJOR, _TRANS if ta else _NO_TRANS, _TRANS if tb else _NO_TRANS, m, n, k,
       alpha, a.ctypes.data, ra[1], b.ctypes.data, rb[1], beta, out.ctypes.data, rc[1])
    return True


def gemm(a, b, trans_a: bool = False, trans_b: bool = False, out=None, alpha: float = 1.0,
         beta: float = 0.0, reference: bool = False):
    """out = alpha op(a) op(b) + beta out for 2-D arrays; returns out (new when None).

    op(x) is x, or x^T where ``trans_*`` is set. ``beta`` other than 0 needs ``out``
    (accumulating into it). ``reference`` runs NumPy's matmul whatever is installed.
    """
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"gemm: operands must be 2-D, got shapes {a.shape} and {b.shape}")
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    kb, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if k != kb:
        raise ValueError(f"gemm: op(a) {(m, k)} (from shape {a.shape}) and op(b) {(kb, n)} (from shape "
                         f"{b.shape}) do not chain: {k} != {kb}")
    if out is None:
        if beta != 0:
            raise ValueError(f"gemm: beta={beta} adds the product to out, but out is None; pass the "
                             f"array to accumulate into as out= (shape {(m, n)}), or leave beta at 0")
        out = backend.xp(a).empty((m, n), dtype=np.result_type(a.dtype, b.dtype))
    elif out.shape != (m, n):
        raise ValueError(f"gemm: out has shape {out.shape}, the product of op(a) {(m, k)} and op(b) "
                         f"{(kb, n)} has shape {(m, n)}")
    mkl = None if reference else _active()
    fn = None if mkl is None else mkl["gemm"].get(out.dtype)
    if (fn is not None and m and n and k and type(a) is np.ndarray and type(b) is np.ndarray
            and type(out) is np.ndarray and a.dtype == b.dtype == out.dtype and out.flags.writeable
            and _mkl_gemm(fn, a, b, trans_a, trans_b, out, alpha, beta)):
        return out
    return _numpy_gemm(a, b, trans_a, trans_b, out, alpha, beta)


def _numpy_gemm(a, b, trans_a, trans_b, out, alpha, beta):
    """The reference: the array module's matmul. NumPy's matmul cannot add into its output,
    so an accumulating product on NumPy arrays goes to SciPy's gemm on the same BLAS (no
    temporary); elsewhere it is scaled and added in separate passes."""
    xp = backend.xp(out)
    if beta == 0:
        xp.matmul(a.T if trans_a else a, b.T if trans_b else b, out=out)
        if alpha != 1:
            out *= alpha
        return out
    if (xp is np and out.dtype in (np.float32, np.float64) and a.dtype == b.dtype == out.dtype
            and out.flags.c_contiguous):
        from scipy.linalg import blas

        # BLAS is column-major and sees each row-major matrix transposed: it computes
        # out^T = op(b)^T op(a)^T in place, reading b^T and a^T (no copies) with the ops swapped
        scipy_gemm = blas.get_blas_funcs("gemm", dtype=out.dtype)
        scipy_gemm(alpha, b.T, a.T, beta=beta, c=out.T, trans_a=trans_b, trans_b=trans_a, overwrite_c=True)
        return out
    product = xp.matmul(a.T if trans_a else a, b.T if trans_b else b)
    if alpha != 1:
        product *= alpha
    if beta != 1:
        out *= beta
    out += product
    return out


# ---------------------------------------------------------------------------------------
# Products inside Numba kernels.
#
# The attention kernel multiplies tiles of 64 to 256 rows from inside its own threads. It calls
# BLAS there through a function's address, the Fortran interface's ?gemm, which takes every
# argument by reference:
#
#     gemm(transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc)
#
# and is column-major. A row-major (r, c) matrix with row stride ld is, to Fortran, its
# transpose: a column-major (c, r) one with the same ld. So the row-major product
# C = op(A) op(B) is the column-major C^T = op(B)^T op(A)^T: the same call with A and B
# (and m and n) swapped, the ops unchanged. Through the leading dimensions a tile is read
# where it lies (the rows of one head inside a (B, T, H, D) array have stride H D), alpha
# scales the product and beta = 1 adds it into C: no copies, no separate passes.
#
# Which BLAS: the one the linear layers use. MKL where it runs the products (its ``sgemm``
# symbol), told to stay on the calling thread (``MKL_Set_Num_Threads_Local(1)``), since the
# kernel's threads already share the cores; elsewhere SciPy's, the OpenBLAS of its wheel
# that Numba's own ``np.dot`` calls, which runs products this small on the calling thread.
# The addresses are arguments of the kernel, not constants in it, so its compiled code stays
# valid in the next process and is cached on disk like every other kernel's.
# ---------------------------------------------------------------------------------------

NO_TRANS, TRANS = ord("N"), ord("T")

_KERNEL_BLAS: dict = {}        # (library, dtype) -> int64 [gemm address, threads-local address]


def kernel_blas(dtype) -> np.ndarray:
    """What a Numba kernel calls for its products, as an int64 array: the address of a
    Fortran-interface gemm for ``dtype`` (float32 or float64), and the address of
    ``MKL_Set_Num_Threads_Local`` where that gemm is MKL's, else 0."""
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"kernel_blas: {dtype} has no BLAS product; use float32 or float64")
    mkl = _active()
    key = ("numpy" if mkl is None else "mkl", dtype)
    if key not in _KERNEL_BLAS:
        name = "sgemm" if dtype == np.float32 else "dgemm"
        if mkl is None:
            from numba.extending import get_cython_function_address

            fns = (get_cython_function_address("scipy.linalg.cython_blas", name), 0)
        else:
            fns = (ctypes.cast(getattr(mkl["lib"], name), ctypes.c_void_p).value,
                   ctypes.cast(mkl["lib"].MKL_Set_Num_Threads_Local, ctypes.c_void_p).value)
        _KERNEL_BLAS[key] = np.array(fns, np.int64)
    return _KERNEL_BLAS[key]


@intrinsic
def _fortran_gemm(_typingctx, fn, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Call the Fortran-interface gemm at address ``fn``; a, b, c are addresses. Each
    argument is stored in a stack slot and passed by its address, as Fortran expects."""
    if alpha not in (types.float32, types.float64) or beta != alpha:
        return None
    sig = types.void(fn, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, signature, args):
        i8, i32 = ir.IntType(8), ir.IntType(32)
        real = context.get_value_type(signature.args[6])

        def by_reference(value, ty):
            if isinstance(ty, ir.IntType) and value.type.width != ty.width:
                value = builder.trunc(value, ty) if value.type.width > ty.width else builder.sext(value, ty)
            slot = cgutils.alloca_once(builder, ty)
            builder.store(value, slot)
            return slot

        def address(value):
            return builder.inttoptr(value, real.as_pointer())

        f, ta, tb, m_, n_, k_, al, a_, lda_, b_, ldb_, be, c_, ldc_ = args
        call_args = [by_reference(ta, i8), by_reference(tb, i8), by_reference(m_, i32),
                     by_reference(n_, i32), by_reference(k_, i32), by_reference(al, real),
                     address(a_), by_reference(lda_, i32), address(b_), by_reference(ldb_, i32),
                     by_reference(be, real), address(c_), by_reference(ldc_, i32)]
        fnty = ir.FunctionType(ir.VoidType(), [x.type for x in call_args])
        builder.call(builder.inttoptr(f, fnty.as_pointer()), call_args)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _call_int(_typingctx, fn, value):
    """int fn(int value) at address ``fn`` (MKL_Set_Num_Threads_Local)."""
    if not isinstance(value, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(i32, [i32])
        result = builder.call(builder.inttoptr(args[0], fnty.as_pointer()),
                              [builder.trunc(args[1], i32) if args[1].type.width > 32 else args[1]])
        return builder.sext(result, ir.IntType(64))

    return types.int64(fn, value), codegen


@njit(nogil=True, cache=True, inline="always")
def kernel_gemm(blas_fns, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """C = alpha op(A) op(B) + beta C on row-major memory, from inside a kernel.

    C is (m, n); op(A) is (m, k), op(B) is (k, n); ``trans_*`` is NO_TRANS or TRANS; a, b,
    c are addresses and lda, ldb, ldc row strides in elements. ``blas_fns`` is what
    ``kernel_blas`` returned for the dtype of alpha."""
    # Row-major C is column-major C^T = op(B)^T op(A)^T: A and B swap, the ops stay.
    _fortran_gemm(blas_fns[0], trans_b, trans_a, n, m, k, alpha, b, ldb, a, lda, beta, c, ldc)


@njit(nogil=True, cache=True, inline="always")
def kernel_threads(blas_fns, n):
    """Limit the calling thread's products to ``n`` threads (0: back to the process's
    setting); returns the previous limit. Nothing to do, and 0, where the BLAS is not MKL."""
    if blas_fns[1] == 0:
        return 0
    return _call_int(blas_fns[1], n)
