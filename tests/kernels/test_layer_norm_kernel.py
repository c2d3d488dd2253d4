"""The fused LayerNorm and RMSNorm kernels against the references of ``F.layer_norm`` /
``F.rms_norm``, forward and backward (dx and the parameter gradients)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitransformer as mt
import minitransformer.functional as F
from minitransformer import kernels
from minitransformer.kernels import layer_norm as L

from .threads import numba_threads
from .util import assert_close

DTYPES = [np.float32, np.float64]


def reference(kind, x, w, b, g, eps):
    """y, dx, dw, db by the plain array code through autograd (dw/db None without w/b)."""
    with kernels.using("reference"):
        t = mt.tensor(x, requires_grad=True)
        tw = None if w is None else mt.tensor(w, requires_grad=True)
        tb = None if b is None else mt.tensor(b, requires_grad=True)
        y = F.layer_norm(t, tw, tb, eps=eps) if kind == "layer" else F.rms_norm(t, tw, eps=eps)
        y.backward(g)
    return y.data, t.grad, None if w is None else tw.grad, None if b is None else tb.grad


def kernel(kind, x, w, b, g, eps):
    if kind == "layer":
        y, mean, rstd = L.layer_norm_forward(x, w, b, eps)
        dx, dw, db = L.layer_norm_backward(x, w, mean, rstd, g)
        return y, dx, dw, db
    y, rstd = L.rms_norm_forward(x, w, eps)
    dx, dw = L.rms_norm_backward(x, w, rstd, g)
    return y, dx, dw, None


@st.composite
def norm_cases(draw):
    lead = draw(st.lists(st.integers(1, 6), min_size=0, max_size=2))
    width = draw(st.sampled_from([2, 3, 17, 64, 300]))
    return dict(kind=draw(st.sampled_from(["layer", "rms"])), shape=(*lead, width),
                dtype=draw(st.sampled_from(DTYPES)), weight=draw(st.booleans()),
                bias=draw(st.booleans()), offset=draw(st.sampled_from([0.0, 3.0])),
                seed=draw(st.integers(0, 2**31)))


@settings(max_examples=40, deadline=None)
@given(norm_cases())
def test_norm_kernels_match_reference(case):
    kind, dtype = case["kind"], case["dtype"]
    rng = np.random.default_rng(case["seed"])
    x = (rng.standard_normal(case["shape"]) * 2.0 + case["offset"]).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    c = x.shape[-1]
    w = rng.standard_normal(c).astype(dtype) if case["weight"] else None
    b = rng.standard_normal(c).astype(dtype) if case["bias"] and kind == "layer" else None
    eps = 1e-5 if kind == "layer" else 1e-6
    ref = reference(kind, x, w, b, g, eps)

    y, dx, dw, db = kernel(kind, x, w, b, g, eps)
    assert y.dtype == dtype and dx.dtype == dtype and dw.dtype == dtype
    assert_close(y, ref[0], dtype, f"{kind} norm forward")
    assert_close(dx, ref[1], dtype, f"{kind} norm dx")
    if w is not None:
        assert_close(dw, ref[2], dtype, f"{kind} norm dweight")
    if b is not None:
        assert_close(db, ref[3], dtype, f"{kind} norm dbias")

    # Through the functional op in "auto" mode (the kernel path), parameters included.
    t = mt.tensor(x, requires_grad=True)
    tw = None if w is None else mt.tensor(w, requires_grad=True)
    tb = None if b is None else mt.tensor(b, requires_grad=True)
    out = F.layer_norm(t, tw, tb, eps=eps) if kind == "layer" else F.rms_norm(t, tw, eps=eps)
    out.backward(g)
    assert_close(out.data, ref[0], dtype, "functional forward (auto)")
    assert_close(t.grad, ref[1], dtype, "functional dx (auto)")
    if w is not None:
        assert_close(tw.grad, ref[2], dtype, "functional dweight (auto)")
    if b is not None:
        assert_close(tb.grad, ref[3], dtype, "functional dbias (auto)")


@pytest.mark.parametrize("kind", ["layer", "rms"])
def test_parameter_gradients_do_not_depend_on_the_thread_count(kind):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((700, 200)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    w = rng.standard_normal(200).astype(np.float32)
    b = rng.standard_normal(200).astype(np.float32)
    assert -(-700 // L.rows_per_block(700, 200)) >= 4          # several blocks to share
    results = []
    for n in (1, 2):
        with numba_threads(n):
            results.append(kernel(kind, x, w, b, g, 1e-5))
    for one, two in zip(*results):
        if one is not None:
            np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("kind", ["layer", "rms"])
def test_backward_after_a_switch_to_reference_mode(kind):
    """A kernel forward keeps x and the row statistics; the reference backward rebuilds xhat."""
    rng = np.random.default_rng(4)
    x, g = rng.standard_normal((3, 4, 7)), rng.standard_normal((3, 4, 7))
    w, b = rng.standard_normal(7), rng.standard_normal(7)
    ref = reference(kind, x, w, b if kind == "layer" else None, g, 1e-5)
    t, tw, tb = (mt.tensor(a, requires_grad=True) for a in (x, w, b))
    y = F.layer_norm(t, tw, tb, eps=1e-5) if kind == "layer" else F.rms_norm(t, tw, eps=1e-5)
    with kernels.using("reference"):
        y.backward(g)
    assert_close(t.grad, ref[1], np.float64, "dx")
    assert_close(tw.grad, ref[2], np.float64, "dweight")


def test_constant_rows_give_finite_results():
    x = np.full((3, 8), 2.5, np.float32)
    y, mean, rstd = L.layer_norm_forward(x, None, None, 1e-5)
    dx, dw, db = L.layer_norm_backward(x, None, mean, rstd, np.ones_like(x))
    assert np.all(y == 0) and np.isfinite(dx).all() and np.all(db == 3)


def test_registered_and_dispatched():
    x = np.zeros((2, 3), np.float32)
    for name in ("layer_norm_forward", "layer_norm_backward", "rms_norm_forward",
                 "rms_norm_backward"):
        assert kernels.get(name, x) is getattr(L, name)


def test_mixed_dtypes_run_the_reference():
    """A float64 weight on float32 activations promotes in NumPy; the kernel is not used."""
    x = mt.tensor(np.ones((2, 3), np.float32))
    w = mt.tensor(np.ones(3, np.float64))
    with kernels.using("numba"):
        out = F.layer_norm(x, w, None)
    assert out.dtype == np.float64


def test_bad_arguments_are_refused_with_a_clear_message():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"weight shape \(4,\) must be \(3,\)"):
        L.layer_norm_forward(x, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="non-empty last axis"):
        L.rms_norm_forward(np.zeros((2, 0), np.float32))
    with pytest.raises(ValueError, match="gradient shape"):
        y, rstd = L.rms_norm_forward(x)
        L.rms_norm_backward(x, None, rstd, np.zeros((3, 2), np.float32))
