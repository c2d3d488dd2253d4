"""The CUDA twins of the CPU kernels, and how the row kernels are laid out and compiled.

Three ways, as far as each machine allows:

- under Numba's CUDA simulator (``cuda_sim_twins.py``, in a process of its own): every
  twin against its CPU kernel and the reference, on the shared-memory reduction, with
  outputs pre-filled with NaN;
- compiled to LLVM IR on any machine (``cuda_ir_check.py``): every float32 kernel types
  and lowers, the warp-shuffle path included, with no float64 arithmetic; and to PTX where
  NVVM is installed;
- on a GPU (the ``gpu`` test): the compiled kernels, warp shuffles and all, on CuPy arrays.
"""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from minitransformer.kernels import _cuda

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _run(module, *args, simulate):
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    if simulate:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failed" in result.stdout, result.stdout
    return result.stdout


def test_cuda_twins_under_the_simulator():
    out = _run("tests.kernels.cuda_sim_twins", simulate=True)
    for kernel in ("gelu", "layer_norm", "rms_norm", "embedding", "adamw", "softmax", "cross-entropy"):
        assert f"ok   {kernel}" in out, kernel
    assert out.count("ok  ") >= 100


def test_float32_kernels_compile_without_float64_and_with_shuffles_where_built():
    out = _run("tests.kernels.cuda_ir_check", "--ptx", simulate=False)
    from . import cuda_ir_check

    lines = [line for line in out.splitlines() if line.startswith("ok   ") and "ptx" not in line]
    assert len(lines) == len(cuda_ir_check.kernels_to_check())
    assert sum("shuffles: yes" in line for line in lines) == 14     # 7 row kernels x 2 paths


def test_the_check_finds_float64_arithmetic():
    from . import cuda_ir_check

    ir = ('  %".5" = fmul double %".4", 0x3fe0000000000000\n'
          '  %".6" = fptrunc double 0x3fe0000000000000 to float\n'
          'declare double @"__nv_exp"(double %".1")\n')
    assert cuda_ir_check.float64_operations(ir) == [ir.splitlines()[0].strip()]


@pytest.mark.parametrize("width, layout", [
    (1, (128, 1)), (768, (128, 6)), (1024, (128, 8)), (1025, (256, 5)), (2048, (256, 8)),
    (2049, (256, 0)), (50257, (256, 0)),
])
def test_row_layout_holds_a_row_in_registers_where_it_fits(width, layout):
    assert _cuda.row_layout(width, shuffle=True) == layout


def test_row_layout_takes_the_given_block_size():
    assert _cuda.row_layout(9, 4) == (4, 3)
    assert _cuda.row_layout(4 * _cuda.MAX_PER_THREAD + 1, 4) == (4, 0)        # looped


@pytest.mark.parametrize("threads, shuffle, message", [
    (4, True, "multiple of 32"), (48, False, "power of two"), (2048, False, "power of two"),
])
def test_block_sizes_a_reduction_cannot_use_are_refused(threads, shuffle, message):
    with pytest.raises(ValueError, match=message):
        _cuda.row_layout(100, threads, shuffle, "softmax_forward")


def test_the_reduction_is_chosen_by_the_simulator_switch():
    # This process has no simulator (the simulator checks run in their own processes).
    assert _cuda.simulating() is False
    assert _cuda.scratch_length(256, True) == 8 and _cuda.scratch_length(256, False) == 256


def test_cuda_twin_modules_import_without_a_gpu():
    from minitransformer.kernels import cuda_adamw, cuda_embedding, cuda_gelu, cuda_layer_norm

    for module, name in ((cuda_gelu, "gelu_forward"), (cuda_layer_norm, "rms_norm_backward"),
                         (cuda_embedding, "embedding_backward"), (cuda_adamw, "adamw_update")):
        assert callable(getattr(module, name))


@pytest.mark.gpu
def test_cuda_twins_on_a_gpu_match_the_cpu_kernels():
    import cupy as cp

    from minitransformer import kernels
    from minitransformer.kernels import adamw, cross_entropy, cuda_adamw, cuda_cross_entropy
    from minitransformer.kernels import cuda_embedding, cuda_gelu, cuda_layer_norm, cuda_softmax
    from minitransformer.kernels import embedding, gelu, layer_norm, softmax

    from .util import assert_close

    rng = np.random.default_rng(0)
    f32 = np.float32
    with _cuda.nan_fill():
        x = rng.standard_normal((300, 37)).astype(f32) * 3
        g = rng.standard_normal(x.shape).astype(f32)
        for form in ("none", "tanh"):
            y, saved = cuda_gelu.gelu_forward(cp.asarray(x), form)
            assert_close(cp.asnumpy(y), gelu.gelu_forward(x, form)[0], f32, f"gelu {form}")
            dx = cuda_gelu.gelu_backward(saved, cp.asarray(g), form)
            assert_close(cp.asnumpy(dx), gelu.gelu_backward(x, g, form), f32, f"gelu {form} backward")

        for width in (768, 3000):                        # in registers, looped
            x = rng.standard_normal((600, width)).astype(f32)
            g = rng.standard_normal(x.shape).astype(f32)
            w, b = (rng.standard_normal(width).astype(f32) for _ in range(2))
            y, mean, rstd = cuda_layer_norm.layer_norm_forward(*map(cp.asarray, (x, w, b)))
            ref = layer_norm.layer_norm_forward(x, w, b)
            assert_close(cp.asnumpy(y), ref[0], f32, f"layer_norm {width}")
            grads = cuda_layer_norm.layer_norm_backward(cp.asarray(x), cp.asarray(w), mean, rstd,
                                                        cp.asarray(g))
            for got, want in zip(grads, layer_norm.layer_norm_backward(x, w, *ref[1:], g)):
                assert_close(cp.asnumpy(got), want, f32, f"layer_norm backward {width}")
            y, rstd = cuda_layer_norm.rms_norm_forward(cp.asarray(x), cp.asarray(w))
            ref_y, ref_rstd = layer_norm.rms_norm_forward(x, w)
            assert_close(cp.asnumpy(y), ref_y, f32, f"rms_norm {width}")
            grads = cuda_layer_norm.rms_norm_backward(cp.asarray(x), cp.asarray(w), rstd, cp.asarray(g))
            for got, want in zip(grads, layer_norm.rms_norm_backward(x, w, ref_rstd, g)):
                assert_close(cp.asnumpy(got), want, f32, f"rms_norm backward {width}")

            mask = rng.random((1, width)) > 0.2
            y = cuda_softmax.softmax_forward(cp.asarray(x), cp.asarray(mask))
            assert_close(cp.asnumpy(y), softmax.softmax_forward(x, mask), f32, f"softmax {width}")
            dx = cuda_softmax.softmax_backward(y, cp.asarray(g))
            assert_close(cp.asnumpy(dx), softmax.softmax_backward(cp.asnumpy(y), g), f32,
                         f"softmax backward {width}")
            targets = rng.integers(0, width, x.shape[0])
            targets[::7] = -100
            losses, lse = cuda_cross_entropy.cross_entropy_forward(cp.asarray(x), cp.asarray(targets),
                                                                   -100, 0.1)
            ref_losses, ref_lse = cross_entropy.cross_entropy_forward(x, targets, -100, 0.1)
            assert_close(cp.asnumpy(losses), ref_losses, f32, f"cross-entropy {width}")
            assert_close(cp.asnumpy(lse), ref_lse, f32, f"cross-entropy lse {width}")

        ids = rng.integers(0, 1000, (8, 64))
        g = rng.standard_normal((8, 64, 96)).astype(f32)
        dw = cuda_embedding.embedding_backward(cp.asarray(ids), cp.asarray(g), 1000)
        np.testing.assert_array_equal(cp.asnumpy(dw), embedding.embedding_backward(ids, g, 1000))

    p0 = rng.standard_normal(10_001).astype(f32)
    grad = rng.standard_normal(p0.shape).astype(f32)
    p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    pd, md, vd = cp.asarray(p0), cp.zeros(p0.shape, f32), cp.zeros(p0.shape, f32)
    for step in (1, 2):
        args = (1e-2, 0.8, 0.99, 1e-6, 0.05, 1 - 0.8 ** step, 1 - 0.99 ** step)
        adamw.adamw_update(p, grad, m, v, *args)
        cuda_adamw.adamw_update(pd, cp.asarray(grad), md, vd, *args)
    for got, want in zip((pd, md, vd), (p, m, v)):
        assert_close(cp.asnumpy(got), want, f32, "adamw")

    with kernels.using("numba"):
        for name in ("gelu_forward", "layer_norm_forward", "rms_norm_backward", "embedding_backward",
                     "adamw_update"):
            assert kernels.get(name, cp.zeros(3, f32)) is not None, name
