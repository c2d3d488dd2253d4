"""The CPU softmax kernel against the reference softmax of ``minitransformer.functional``.

The reference runs through autograd with ``mt.kernels.using("reference")``; the kernel is
called directly (``softmax_forward`` / ``softmax_backward``) and through the functional op
in "auto" mode, which dispatches to it.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitransformer as mt
import minitransformer.functional as F
from minitransformer import kernels
from minitransformer.kernels import softmax as K

from .util import assert_close

DTYPES = [np.float32, np.float64]


def reference(x, dy, mask):
    """Softmax and its input gradient by the plain array code, through autograd."""
    with kernels.using("reference"):
        t = mt.tensor(x, requires_grad=True)
        y = F.softmax(t, mask=mask)
        y.backward(dy)
    return y.data, t.grad


@st.composite
def softmax_cases(draw):
    lead = draw(st.lists(st.integers(1, 4), min_size=0, max_size=2))
    width = draw(st.sampled_from([1, 2, 7, 16, 33, 100, 257]))
    shape = (*lead, width)
    mask_kind = draw(st.sampled_from(["none", "full", "row", "broadcast"]))
    return shape, mask_kind, draw(st.sampled_from(DTYPES)), draw(st.integers(0, 2**31))


def make_mask(rng, shape, kind):
    if kind == "none":
        return None
    if kind == "full":
        mask = rng.random(shape) > 0.3
    elif kind == "row":                     # one mask row for all leading positions
        mask = rng.random(shape[-1:]) > 0.3
    elif len(shape) >= 2:                   # broadcast over the second-to-last axis
        mask = rng.random((*shape[:-2], 1, shape[-1])) > 0.3
    else:
        mask = rng.random(shape) > 0.3
    # A fully masked row must give zeros, not NaN.
    mask.reshape(-1, mask.shape[-1])[0] = False
    return mask


@settings(max_examples=30, deadline=None)
@given(softmax_cases())
def test_softmax_kernel_matches_reference(case):
    shape, mask_kind, dtype, seed = case
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    mask = make_mask(rng, shape, mask_kind)
    y_ref, dx_ref = reference(x, dy, mask)

    y = K.softmax_forward(x, mask)
    dx = K.softmax_backward(y, dy)
    assert y.dtype == dtype and dx.dtype == dtype
    assert_close(y, y_ref, dtype, "softmax forward")
    assert_close(dx, dx_ref, dtype, "softmax backward")

    # The functional op in "auto" mode runs the kernel and must agree too.
    t = mt.tensor(x, requires_grad=True)
    out = F.softmax(t, mask=mask)
    out.backward(dy)
    assert_close(out.data, y_ref, dtype, "F.softmax (auto)")
    assert_close(t.grad, dx_ref, dtype, "F.softmax backward (auto)")


@pytest.mark.parametrize("dtype", DTYPES)
def test_fully_masked_rows_are_zero(dtype):
    x = np.arange(12, dtype=dtype).reshape(3, 4)
    mask = np.array([[True, False, True, True], [False] * 4, [True] * 4])
    y = K.softmax_forward(x, mask)
    assert np.all(y[1] == 0) and np.all(y[0, 1] == 0)
    np.testing.assert_allclose(y.sum(-1), [1, 0, 1], rtol=1e-6)
    dx = K.softmax_backward(y, np.ones_like(y))
    assert np.all(dx[1] == 0) and np.isfinite(dx).all()


def test_extreme_logits_stay_finite():
    x = np.array([[1e4, 0.0, -1e4], [-np.inf, 0.0, 1.0], [-88.0, -87.0, -200.0]], np.float32)
    y = K.softmax_forward(x)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-6)
    assert y[0, 0] == 1.0 and y[1, 0] == 0.0


def test_gradcheck_through_the_kernel():
    rng = np.random.default_rng(0)
    mask = rng.random((3, 1, 9)) > 0.4
    x = mt.tensor(rng.standard_normal((3, 4, 9)), requires_grad=True)
    assert kernels.get("softmax_forward", x.data) is K.softmax_forward
    assert mt.gradcheck(lambda a: F.softmax(a, mask=mask), [x], fast_mode=True)


def test_bad_mask_is_refused_with_a_clear_message():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(TypeError, match="bool"):
        K.softmax_forward(x, np.ones((2, 3)))
    with pytest.raises(ValueError, match="broadcast"):
        K.softmax_forward(x, np.ones((4, 3), bool))
