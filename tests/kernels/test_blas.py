"""The CPU's matrix products (kernels/blas.py): MKL on Intel's CPUs where installed, against
NumPy's matmul. Every product test runs on each library this machine has, whichever of the
two the rule picks here."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from numba import njit

from minitransformer.kernels import blas

from .util import LIBRARIES, mkl_installed


@pytest.fixture(params=LIBRARIES)
def library(request):
    """Each library this machine has, chosen for the test's products."""
    with blas.using(request.param):
        assert blas.library() == request.param
        yield request.param


def test_mkl_runs_the_products_on_intel_cpus_wherever_it_is_installed():
    # The dev install brings MKL on x86-64 Linux (CI's machines): on an Intel CPU the fast
    # path is the one the training step takes, never a silent fallback to NumPy; on another
    # vendor's, NumPy's BLAS (MKL runs at half its speed there) and the report says why.
    if platform.machine() == "x86_64" and sys.platform == "linux":
        assert mkl_installed(), "pip install -e '.[dev]' installs MKL on x86-64 Linux"
    assert blas.mkl_installed() == mkl_installed()
    intel = blas.cpu_vendor() == "GenuineIntel"
    with blas.using("auto"):
        if mkl_installed() and intel:
            assert blas.library() == "mkl" and blas.describe().startswith("MKL (")
        else:
            assert blas.library() == "numpy"
            assert blas.describe().startswith("NumPy's BLAS (")
            if mkl_installed():
                assert f"left off on this {blas.cpu_vendor()} CPU" in blas.describe()


def test_the_environment_chooses_the_library_for_the_process():
    code = """
        from minitransformer.kernels import blas
        print(blas.library())
    """
    assert _child(code, MINITRANSFORMER_GEMM="numpy") == "numpy"
    with blas.using("auto"):
        assert _child(code, MINITRANSFORMER_GEMM="auto") == blas.library()
    if mkl_installed():
        assert _child(code, MINITRANSFORMER_GEMM="mkl") == "mkl"
    else:
        failed = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                                env={**os.environ, "MINITRANSFORMER_GEMM": "mkl"})
        assert failed.returncode != 0 and "minitransformer[mkl]" in failed.stderr
    failed = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            env={**os.environ, "MINITRANSFORMER_GEMM": "openblas"})
    assert failed.returncode != 0 and "'openblas' is not a product library" in failed.stderr
    with pytest.raises(ValueError, match="expected one of auto, mkl, numpy"):
        with blas.using("cublas"):
            pass


@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-6), (np.float64, 1e-14)])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_gemm_equals_the_reference(library, dtype, tol, trans_a, trans_b):
    rng = np.random.default_rng(0)
    m, k, n = 67, 45, 38
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    want = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
    scale = np.abs(want).max()
    for reference in (False, True):
        got = blas.gemm(a, b, trans_a, trans_b, reference=reference)
        assert got.shape == (m, n) and got.dtype == dtype
        assert np.abs(got - want).max() <= tol * scale * k
        # accumulate: out = 0.5 op(a) op(b) + 2 out, into a given array
        c = rng.standard_normal((m, n)).astype(dtype)
        expect = 0.5 * want + 2.0 * c.astype(np.float64)
        out = blas.gemm(a, b, trans_a, trans_b, out=c, alpha=0.5, beta=2.0, reference=reference)
        assert out is c
        assert np.abs(c - expect).max() <= tol * scale * k * 4


def test_views_are_read_in_place_or_fall_back_correctly(library):
    rng = np.random.default_rng(1)
    big = rng.standard_normal((40, 50)).astype(np.float32)
    w = rng.standard_normal((30, 50)).astype(np.float32)
    cases = [
        (big[:, :20], w[:, :20].T),          # rows with a leading dimension wider than the row
        (big[5:25].T, w[:, :20].T),          # a transposed view of a slice
        (big[::2, ::3], w[:17, :17]),        # strides BLAS cannot read: NumPy's matmul instead
        (np.asfortranarray(big[:, :30]), w), # F-ordered
    ]
    for a, b in cases:
        want = a.astype(np.float64) @ b.astype(np.float64)
        got = blas.gemm(a, b)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    out = np.zeros((80, 30), np.float32)[::2]          # an output whose rows are 60 apart
    blas.gemm(big[:, :20], w[:, :20], trans_b=True, out=out)
    np.testing.assert_allclose(out, big[:, :20] @ w[:, :20].T, rtol=1e-5, atol=1e-4)


def test_empty_and_mixed_inputs(library):
    a = np.ones((3, 0), np.float32)
    assert np.array_equal(blas.gemm(a, np.ones((0, 4), np.float32)), np.zeros((3, 4), np.float32))
    mixed = blas.gemm(np.ones((2, 3), np.float32), np.ones((3, 2), np.float64))
    assert mixed.dtype == np.float64 and np.all(mixed == 3.0)


@njit
def _kernel_product(fns, trans_a, trans_b, alpha, a, lda, b, ldb, beta, c, ldc, m, n, k):
    """One product from inside a Numba function, on row strides given by the caller."""
    blas.kernel_gemm(fns, trans_a, trans_b, m, n, k, alpha, a.ctypes.data, lda, b.ctypes.data,
                     ldb, beta, c.ctypes.data, ldc)


@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-6), (np.float64, 1e-14)])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_a_kernel_multiplies_through_blas_in_place(library, dtype, tol, trans_a, trans_b):
    """kernel_gemm: C = alpha op(A) op(B) + beta C on row-major memory whose rows are wider
    than the matrices (the attention kernel's heads inside (B, T, H, D) arrays), all four
    ops, on the library the linear layers use."""
    rng = np.random.default_rng(2)
    m, k, n = 37, 19, 23
    wide = 7                                  # each matrix is the left part of wider rows
    a_mem = rng.standard_normal(((k, m) if trans_a else (m, k))).astype(dtype)
    a_mem = np.concatenate([a_mem, np.zeros((a_mem.shape[0], wide), dtype)], axis=1)
    b_mem = rng.standard_normal(((n, k) if trans_b else (k, n))).astype(dtype)
    b_mem = np.concatenate([b_mem, np.zeros((b_mem.shape[0], wide), dtype)], axis=1)
    c_mem = rng.standard_normal((m, n + wide)).astype(dtype)
    a, b, c0 = a_mem[:, :-wide], b_mem[:, :-wide], c_mem.copy()
    want = (0.5 * (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
            + 2.0 * c0[:, :n].astype(np.float64))
    fns = blas.kernel_blas(dtype)
    _kernel_product(fns, blas.TRANS if trans_a else blas.NO_TRANS, blas.TRANS if trans_b else blas.NO_TRANS,
                    dtype(0.5), a_mem, a_mem.shape[1], b_mem, b_mem.shape[1], dtype(2.0), c_mem,
                    c_mem.shape[1], m, n, k)
    assert np.abs(c_mem[:, :n] - want).max() <= tol * np.abs(want).max() * k * 4
    np.testing.assert_array_equal(c_mem[:, n:], c0[:, n:])        # past each row: untouched


@njit
def _threads_inside(fns):
    before = blas.kernel_threads(fns, 1)
    inside = blas.kernel_threads(fns, before)
    return before, inside


@pytest.mark.skipif(not mkl_installed(), reason="MKL is not installed (pip install minitransformer[mkl])")
def test_a_kernels_products_stay_on_its_thread_and_the_limit_is_restored():
    """On MKL, kernel_threads sets the calling thread's limit and gives back the previous one
    (0: the process's setting; PyTorch's set_num_threads sets one too), so the linear layers'
    products after a kernel run as before; on OpenBLAS there is nothing to set."""
    with blas.using("mkl"):
        fns = blas.kernel_blas(np.float32)
        assert fns[1] != 0
        threads = blas._active()["lib"].MKL_Get_Max_Threads()
        before, inside = _threads_inside(fns)
        assert inside == 1
        assert _threads_inside(fns) == (before, 1)                 # restored
        assert blas._active()["lib"].MKL_Get_Max_Threads() == threads
    with blas.using("numpy"):
        fns = blas.kernel_blas(np.float32)
        assert fns[1] == 0 and _threads_inside(fns) == (0, 0)
    with pytest.raises(TypeError, match="float32 or float64"):
        blas.kernel_blas(np.float16)


def test_bad_shapes_name_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(6, 7\)"):
        blas.gemm(np.ones((4, 5), np.float32), np.ones((6, 7), np.float32))
    with pytest.raises(ValueError, match=r"out has shape \(3, 3\).*\(4, 7\)"):
        blas.gemm(np.ones((4, 5), np.float32), np.ones((5, 7), np.float32), out=np.ones((3, 3), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        blas.gemm(np.ones((2, 4, 5), np.float32), np.ones((5, 7), np.float32))
    with pytest.raises(ValueError, match=r"beta=1.0 adds the product to out, but out is None"):
        blas.gemm(np.ones((4, 5), np.float32), np.ones((5, 7), np.float32), beta=1.0)


def _at_offset(x: np.ndarray, offset: int) -> np.ndarray:
    """A copy of x starting ``offset`` bytes past a 64-byte boundary."""
    buf = np.empty(x.nbytes + 128, np.uint8)
    start = (-buf.ctypes.data) % 64 + offset
    y = buf[start:start + x.nbytes].view(x.dtype).reshape(x.shape)
    y[...] = x
    return y


@pytest.mark.parametrize("shape", [(256, 192, 320), (37, 29, 53)])
def test_a_product_has_the_same_bits_wherever_its_arrays_lie(library, shape):
    # A resumed run holds its arrays at other addresses than the run it continues, and must
    # compute the same bits (kernels/blas.py, "Reproducibility").
    m, k, n = shape
    rng = np.random.default_rng(2)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((n, k)).astype(np.float32)
    want = blas.gemm(a, b, trans_b=True)
    for offset in (4, 8, 16, 32, 48):
        out = _at_offset(np.zeros((m, n), np.float32), (offset * 3) % 64)
        got = blas.gemm(_at_offset(a, offset), _at_offset(b, 64 - offset), trans_b=True, out=out)
        assert np.array_equal(got, want), f"offset {offset}"


def _child(code: str, **env) -> str:
    full = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full, capture_output=True,
                          text=True, check=True, timeout=120).stdout.strip()


@pytest.mark.skipif(not mkl_installed(), reason="MKL is not installed (pip install minitransformer[mkl])")
def test_mkl_shares_numbas_openmp_runtime_and_can_be_turned_off():
    code = """
        import numpy as np
        from minitransformer.kernels import blas
        blas.gemm(np.ones((64, 64), np.float32), np.ones((64, 64), np.float32))
        maps = open("/proc/self/maps").read()
        print(blas.library(), "libgomp" in maps, "libiomp5" in maps)
    """
    # GNU OpenMP (the runtime of Numba's kernels), not Intel's second pool of threads
    assert _child(code, MINITRANSFORMER_GEMM="mkl") == "mkl True False"
    assert _child(code, MINITRANSFORMER_GEMM="numpy").split()[0] == "numpy"


def test_linear_layers_run_on_it(monkeypatch):
    # The linear op's products go through gemm, forward and backward (a planted bypass fails here).
    import minitransformer as mt
    import minitransformer.functional as F

    calls = []
    real = blas.gemm
    monkeypatch.setattr(blas, "gemm", lambda *a, **k: calls.append(k.get("reference")) or real(*a, **k))
    x = mt.tensor(np.ones((2, 3, 4), np.float32), requires_grad=True)
    w = mt.tensor(np.ones((5, 4), np.float32), requires_grad=True)
    F.linear(x, w).sum().backward()
    assert calls == [False, False, False]                 # y = x W^T; dx = g W; dW = g^T x
    with mt.kernels.using("reference"):
        F.linear(x, w)
    assert calls[-1] is True                              # the reference mode runs NumPy's matmul
