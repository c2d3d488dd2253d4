"""The FlashAttention-2 style CUDA kernel: its tiles, and its results under the simulator.

The simulator must be switched on before numba is imported, so the comparisons run in a
process of their own (``flash_sim_check.py``): at head sizes 64 and 128 with the kernel's
real tiles, against ``cuda_attention`` (its reference) and the CPU kernel.
"""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from minitransformer.kernels import cuda_flash_attention as flash
from minitransformer.kernels import dispatch

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_flash_kernel_matches_its_references_under_the_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    result = subprocess.run([sys.executable, "-m", "tests.kernels.flash_sim_check"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failed" in result.stdout
    assert result.stdout.count("ok  ") >= 40, result.stdout


@pytest.mark.parametrize("dim", [64, 128])
@pytest.mark.parametrize("kernel", ["forward", "dq", "dkdv"])
def test_tiles_fit_static_shared_memory_and_the_thread_grid(kernel, dim):
    t = flash.tiles_for(kernel, dim)
    assert flash.shared_bytes(kernel, dim, t.rows, t.cols) <= 48 * 1024
    assert t.ty * t.tx == flash.THREADS
    assert t.rows % t.ty == 0 and t.cols % t.tx == 0 and dim % t.tx == 0


def test_production_tiles():
    assert flash.tiles_for("forward", 64)[:2] == (64, 32)
    assert flash.tiles_for("forward", 128)[:2] == (32, 16)


def test_supported_cases_and_the_fallback():
    assert flash.supported(np.float32, 64) and flash.supported(np.float16, 128)
    assert not flash.supported(np.float64, 64)          # float64 runs cuda_attention
    assert not flash.supported(np.float32, 12)          # D not a multiple of 8
    assert not flash.supported(np.float32, 256)
    with pytest.raises(ValueError, match="no tile"):
        flash.tiles_for("dkdv", 4096)


def test_rows_combine_by_shuffles_except_under_the_simulator():
    # This process has no simulator: a GPU build takes the shuffle path (its resources are in
    # benchmarks.cuda_resources); flash_sim_check runs the shared-memory path.
    assert flash.use_shuffles()


def test_dispatch_runs_the_flash_kernel_on_cuda():
    assert dispatch._TABLE["attention_forward"][1] == "cuda_flash_attention"
    assert dispatch._TABLE["attention_backward"][1] == "cuda_flash_attention"


@pytest.mark.gpu
@pytest.mark.parametrize("dim", [64, 128])
def test_flash_kernel_on_a_gpu_matches_the_reference_kernel(dim):
    import cupy as cp

    from minitransformer.kernels import _cuda, cuda_attention

    from .util import assert_close

    rng = np.random.default_rng(0)
    q, k, v, do = (cp.asarray(rng.standard_normal((2, 4, 300, dim)).astype(np.float32)) for _ in range(4))
    bias = cp.asarray(rng.standard_normal((1, 4, 300, 300)).astype(np.float32))
    args = (None, bias, None, True, 0.1, 5)
    with _cuda.nan_fill():
        o, lse = flash.attention_forward(q, k, v, *args)
        grads = flash.attention_backward(q, k, v, o, lse, do, *args)
    ref_o, ref_lse = cuda_attention.attention_forward(q, k, v, *args)
    ref = cuda_attention.attention_backward(q, k, v, ref_o, ref_lse, do, *args)
    assert_close(cp.asnumpy(o), cp.asnumpy(ref_o), np.float32, "O")
    for g, r, name in zip(grads, ref, ("dq", "dk", "dv", "dbias")):
        assert_close(cp.asnumpy(g), cp.asnumpy(r), np.float32, name)
