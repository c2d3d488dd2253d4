"""The fused AdamW update against the reference arithmetic of ``optim.AdamW.step``.

The kernel repeats the reference's float operations in the same order with the same
rounded constants and without fast-math, so the two agree bit for bit here. The tests allow
one unit in the last place (ulp) per element: the difference a compiler may make by fusing
a multiply and an add into one FMA (one rounding instead of two), which is no difference in
the update rule. A wrong formula, order, or constant shows up as many ulps.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer import kernels, optim
from minitransformer.kernels import adamw as A

from .threads import numba_threads

DTYPES = [np.float32, np.float64]


def run(mode, p0, grads, wd, lr=3e-3, betas=(0.9, 0.95), eps=1e-8):
    """The parameter and moments after one AdamW step per gradient, in kernel ``mode``."""
    p = mt.nn.Parameter(p0.copy())
    opt = optim.AdamW([("p", p)], lr=lr, betas=betas, eps=eps, weight_decay=wd)
    with kernels.using(mode):
        for g in grads:
            p.grad = g
            opt.step()
    return p.data, opt.m["p"], opt.v["p"]


@settings(max_examples=20, deadline=None)
@given(shape=st.sampled_from([(1,), (7,), (33, 5), (4, 100, 3)]), dtype=st.sampled_from(DTYPES),
       wd=st.sampled_from([0.0, 0.1]), steps=st.integers(1, 4), seed=st.integers(0, 2**31))
def test_fused_update_matches_reference(shape, dtype, wd, steps, seed):
    rng = np.random.default_rng(seed)
    p0 = rng.standard_normal(shape).astype(dtype)
    grads = [(rng.standard_normal(shape) * 10.0 ** rng.integers(-6, 2)).astype(dtype)
             for _ in range(steps)]
    ref = run("reference", p0, grads, wd)
    fused = run("numba", p0, grads, wd)
    for name, a, b in zip("pmv", fused, ref):
        assert a.dtype == dtype
        np.testing.assert_array_max_ulp(a, b, maxulp=1, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_direct_call_in_chunks_matches_reference(dtype):
    rng = np.random.default_rng(5)
    p0 = rng.standard_normal(10_001).astype(dtype)
    g = rng.standard_normal(p0.shape).astype(dtype)
    ref = run("reference", p0, [g, g * 0.5], wd=0.05, lr=1e-2, betas=(0.8, 0.99), eps=1e-6)
    p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    for t, grad in enumerate([g, g * 0.5], start=1):
        A.adamw_update(p, grad, m, v, 1e-2, 0.8, 0.99, 1e-6, 0.05, 1 - 0.8 ** t, 1 - 0.99 ** t,
                       chunk=999)
    for a, b in zip((p, m, v), ref):
        np.testing.assert_array_max_ulp(a, b, maxulp=1, dtype=dtype)


def test_results_do_not_depend_on_the_thread_count():
    rng = np.random.default_rng(6)
    g = rng.standard_normal(50_000).astype(np.float32)
    results = []
    for n in (1, 2):
        p, m, v = np.ones_like(g), np.zeros_like(g), np.zeros_like(g)
        with numba_threads(n):
            A.adamw_update(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 0.1, 0.1, 0.001, chunk=4096)
        results.append((p, m, v))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_optimizer_uses_the_kernel_and_falls_back_for_odd_layouts(monkeypatch):
    calls = []
    real = A.adamw_update
    monkeypatch.setattr(A, "adamw_update", lambda *args, **kw: (calls.append(1), real(*args, **kw)))
    p = mt.nn.Parameter(np.ones((4, 3), np.float32))
    opt = optim.AdamW([("p", p)], lr=0.1)
    p.grad = np.ones((4, 3), np.float32)
    opt.step()
    assert calls == [1]
    p.grad = np.ones((3, 4), np.float32).T          # not C-contiguous: the reference runs
    opt.step()
    assert calls == [1]
    assert np.isfinite(p.data).all()


def test_registered():
    assert kernels.get("adamw_update", np.zeros(2, np.float32)) is A.adamw_update


def test_bad_arguments_are_refused_with_a_clear_message():
    p = np.ones(4, np.float32)
    args = (1e-3, 0.9, 0.999, 1e-8, 0.0, 0.1, 0.001)
    m, v = np.zeros(4, np.float32), np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="g must be a NumPy array of dtype float32"):
        A.adamw_update(p, np.ones(4, np.float64), m, v, *args)
    with pytest.raises(ValueError, match="shape"):
        A.adamw_update(p, np.ones(5, np.float32), m, v, *args)
    frozen = np.zeros(4, np.float32)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="m is read-only"):
        A.adamw_update(p, np.ones(4, np.float32), frozen, np.zeros(4, np.float32), *args)
    with pytest.raises(ValueError, match="float32 or float64"):
        A.adamw_update(np.ones(4, np.float16), *[np.ones(4, np.float16)] * 3, *args)
