"""The fused GELU kernels (both forms) and the vectorised erf against the references.

The reference is ``F.gelu`` through autograd under ``kernels.using("reference")``; the
kernels are called directly, with small chunk sizes so that several chunks (and threads)
share even a small array, and through ``F.gelu`` in "auto" mode.
"""
import importlib.util
import pathlib

import numpy as np
import pytest
import scipy.special
from hypothesis import given, settings
from hypothesis import strategies as st

import minitransformer as mt
import minitransformer.functional as F
from minitransformer import kernels
from minitransformer.kernels import gelu as G

from .threads import numba_threads
from .util import assert_close

DTYPES = [np.float32, np.float64]
FORMS = ["none", "tanh"]


def reference(x, g, approximate):
    with kernels.using("reference"):
        t = mt.tensor(x, requires_grad=True)
        y = F.gelu(t, approximate=approximate)
        y.backward(g)
    return y.data, t.grad


@settings(max_examples=30, deadline=None)
@given(lead=st.lists(st.integers(1, 5), min_size=0, max_size=2),
       width=st.sampled_from([1, 3, 16, 33, 130]), approximate=st.sampled_from(FORMS),
       dtype=st.sampled_from(DTYPES), chunk=st.sampled_from([5, 64, G.CHUNK]),
       scale=st.sampled_from([1.0, 4.0]), seed=st.integers(0, 2**31))
def test_gelu_kernel_matches_reference(lead, width, approximate, dtype, chunk, scale, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((*lead, width)) * scale).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    y_ref, dx_ref = reference(x, g, approximate)

    y, saved = G.gelu_forward(x, approximate, chunk=chunk)
    dx = G.gelu_backward(saved, g, approximate, chunk=chunk)
    assert y.dtype == dtype and dx.dtype == dtype and y.shape == x.shape
    assert_close(y, y_ref, dtype, f"gelu {approximate} forward")
    assert_close(dx, dx_ref, dtype, f"gelu {approximate} backward")

    t = mt.tensor(x, requires_grad=True)
    out = F.gelu(t, approximate=approximate)
    out.backward(g)
    assert_close(out.data, y_ref, dtype, "F.gelu (auto)")
    assert_close(t.grad, dx_ref, dtype, "F.gelu backward (auto)")


def _erf_points():
    rng = np.random.default_rng(0)
    grid = np.linspace(-7.0, 7.0, 20001)
    tiny = np.geomspace(1e-30, 1.0, 2000)
    return np.concatenate([grid, tiny, -tiny, rng.standard_normal(20000) * 2.0,
                           [0.999999, 1.0, 1.000001, 5.9, 6.0, 6.1, 30.0, 1e30]])


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 1e-6)])
def test_erf_is_accurate_to_a_relative_tolerance(dtype, tol):
    x = _erf_points().astype(dtype)
    x = x[x != 0]
    expected = scipy.special.erf(x.astype(np.float64))
    got = G.erf(x, chunk=4096)
    assert got.dtype == dtype
    rel = np.abs(got.astype(np.float64) - expected) / np.abs(expected)
    worst = int(np.argmax(rel))
    assert rel[worst] <= tol, f"erf({x[worst]!r}) = {got[worst]!r}, scipy {expected[worst]!r}"


def test_float32_gelu_is_accurate_against_scipy_into_the_tail():
    """The float32 kernel computes in float32 (its own polynomials): against SciPy's float64
    normal CDF, GELU and its slope keep a relative error of 2e-7 (1 + a^2) from a = -13
    (where Phi(a) is near the smallest normal float32) to a = 8, the tail included, where
    (1 + erf) / 2 would have lost every digit."""
    rng = np.random.default_rng(3)
    a = np.concatenate([np.linspace(-13.0, 8.0, 200_001), rng.standard_normal(50_000)]).astype(np.float32)
    a64 = a.astype(np.float64)
    cdf = scipy.special.ndtr(a64)
    pdf = np.exp(-a64 * a64 / 2) / np.sqrt(2 * np.pi)
    y, saved = G.gelu_forward(a, "none")
    dy = G.gelu_backward(saved, np.ones_like(a), "none")
    assert y.dtype == np.float32 and dy.dtype == np.float32
    bound = 3e-7 * (1.0 + a64 * a64)
    y_err = np.abs(y - a64 * cdf) / (np.abs(a64) * cdf)
    # The slope Phi + a phi crosses zero near a = -0.75: bound by the size of its two terms.
    dy_err = np.abs(dy - (cdf + a64 * pdf)) / (cdf + np.abs(a64) * pdf)
    for name, err in (("forward", y_err), ("backward", dy_err)):
        worst = int(np.argmax(err / bound))
        assert err[worst] <= bound[worst], f"{name} at a = {a[worst]!r}: relative error {err[worst]:.3g}"


def test_float32_coefficients_are_the_fit_the_tool_computes():
    """tools/fit_erf.py recomputes the float32 coefficients; they are the kernel's."""
    path = pathlib.Path(__file__).resolve().parents[2] / "tools" / "fit_erf.py"
    spec = importlib.util.spec_from_file_location("fit_erf", path)
    fit_erf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fit_erf)
    p32, r32 = fit_erf.fit_small(), fit_erf.fit_tail()
    np.testing.assert_allclose(p32, G._ERF_P32, rtol=1e-5)
    np.testing.assert_allclose(r32, G._ERFCX_R32, rtol=1e-4)
    e_small, e_tail = fit_erf.float32_errors(G._ERF_P32, G._ERFCX_R32)
    assert e_small < 2.5e-7 and e_tail < 3e-7, (e_small, e_tail)


def test_erf_special_values():
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan])
    got = G.erf(x)
    assert got[0] == 0 and got[2] == 1 and got[3] == -1 and np.isnan(got[4])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("approximate", FORMS)
def test_gelu_extremes_stay_finite_and_take_their_limits(dtype, approximate):
    x = np.array([-1e30, -1e6, -100.0, -30.0, -10.0, 10.0, 30.0, 100.0, 1e6, 1e30], dtype)
    y, saved = G.gelu_forward(x, approximate)
    dx = G.gelu_backward(saved, np.ones_like(x), approximate)
    assert np.isfinite(y).all() and np.isfinite(dx).all()
    positive = x > 0
    np.testing.assert_array_equal(y[positive], x[positive])          # GELU(x) -> x
    assert np.all(np.abs(y[~positive]) < 1e-20)                      # ... and -> 0
    np.testing.assert_array_equal(dx[positive], 1.0)
    assert np.all(np.abs(dx[~positive]) < 1e-20)


@pytest.mark.parametrize("approximate", FORMS)
def test_results_do_not_depend_on_the_thread_count(approximate):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(10_000).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    results = []
    for n in (1, 2):
        with numba_threads(n):
            y, saved = G.gelu_forward(x, approximate, chunk=1000)
            results.append((y, G.gelu_backward(saved, g, approximate, chunk=1000)))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("approximate", FORMS)
def test_backward_after_a_switch_to_reference_mode(approximate):
    """A forward through the kernel keeps only x; a reference backward must cope with that."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 9))
    g = rng.standard_normal(x.shape)
    _, dx_ref = reference(x, g, approximate)
    t = mt.tensor(x, requires_grad=True)
    y = F.gelu(t, approximate=approximate)
    with kernels.using("reference"):
        y.backward(g)
    assert_close(t.grad, dx_ref, np.float64, "kernel forward, reference backward")


def test_registered_and_dispatched():
    x = np.zeros(3, np.float32)
    assert kernels.get("gelu_forward", x) is G.gelu_forward
    assert kernels.get("gelu_backward", x) is G.gelu_backward
    with kernels.using("reference"):
        assert kernels.get("gelu_forward", x) is None


def test_bad_arguments_are_refused_with_a_clear_message():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh'"):
        G.gelu_forward(x, "sigmoid")
    with pytest.raises(ValueError, match="gradient shape"):
        G.gelu_backward(x, np.zeros((3, 2), np.float32), "tanh")
