"""The CUDA kernels, run under Numba's CUDA simulator (no GPU needed), against the references.

The simulator must be switched on before numba is imported, so the checks run in a
process of their own (``cuda_sim_check.py``). On a machine with a GPU and CuPy, the
``gpu`` test below also runs the compiled kernels on CuPy arrays.
"""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_cuda_kernels_under_the_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    result = subprocess.run([sys.executable, "-m", "tests.kernels.cuda_sim_check"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failed" in result.stdout
    assert result.stdout.count("ok  ") >= 20


def test_cuda_modules_import_without_a_gpu():
    # Importing builds nothing: numba.cuda is only touched when a kernel is first built.
    from minitransformer.kernels import cuda_attention, cuda_cross_entropy, cuda_softmax

    assert cuda_attention.cuda is None or cuda_attention.cuda.__name__.startswith("numba")
    assert callable(cuda_softmax.softmax_forward)
    assert callable(cuda_cross_entropy.cross_entropy_forward)


@pytest.mark.gpu
def test_cuda_kernels_on_a_gpu_match_the_cpu_kernels():
    import cupy as cp

    from minitransformer.kernels import attention, cross_entropy, cuda_attention
    from minitransformer.kernels import cuda_cross_entropy, cuda_softmax, softmax

    from .util import assert_close

    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1000)).astype(np.float32)
    mask = rng.random((1, 1000)) > 0.2
    y = cuda_softmax.softmax_forward(cp.asarray(x), cp.asarray(mask))
    assert_close(cp.asnumpy(y), softmax.softmax_forward(x, mask), np.float32, "softmax")
    targets = rng.integers(0, 1000, 64)
    losses, lse = cuda_cross_entropy.cross_entropy_forward(cp.asarray(x), cp.asarray(targets))
    ref_losses, ref_lse = cross_entropy.cross_entropy_forward(x, targets)
    assert_close(cp.asnumpy(losses), ref_losses, np.float32, "cross-entropy")
    for dtype in (np.float32, np.float64):
        q, k, v, do = (rng.standard_normal((2, 4, 300, 64)).astype(dtype) for _ in range(4))
        bias = rng.standard_normal((1, 4, 300, 300)).astype(dtype)
        args = (None, bias, None, True, 0.1, 5)
        o, lse = cuda_attention.attention_forward(*map(cp.asarray, (q, k, v)), None,
                                                  cp.asarray(bias), *args[2:])
        ref_o, ref_lse = attention.attention_forward(q, k, v, *args)
        assert_close(cp.asnumpy(o), ref_o, dtype, "attention O")
        grads = cuda_attention.attention_backward(*map(cp.asarray, (q, k, v)), o, lse,
                                                  cp.asarray(do), None, cp.asarray(bias),
                                                  *args[2:])
        ref = attention.attention_backward(q, k, v, ref_o, ref_lse, do, *args)
        for g, r, name in zip(grads, ref, ("dq", "dk", "dv", "dbias")):
            assert_close(cp.asnumpy(g), r, dtype, name)
