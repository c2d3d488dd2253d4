"""Helpers for testing code built on minitransformer: comparisons and hypothesis strategies.

    from minitransformer.testing import assert_close, float_arrays, broadcastable_shapes
    from hypothesis import given

    @given(broadcastable_shapes().flatmap(lambda s: st.tuples(float_arrays(s[0]), float_arrays(s[1]))))
    def test_my_op(pair):
        a, b = (mt.tensor(x, requires_grad=True) for x in pair)
        assert mt.gradcheck(my_op, (a, b))

Needs ``hypothesis`` (the dev extra); importing this module without it raises ImportError.
"""
from __future__ import annotations

import numpy
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minitransformer import backend
from minitransformer.autograd.tensor import Tensor, tensor


def _host(x):
    if isinstance(x, Tensor):
        x = x.data
    return numpy.asarray(backend.to_numpy(x)) if hasattr(x, "shape") else numpy.asarray(x)


def relative_error(actual, expected) -> float:
    """||actual - expected|| / ||expected|| (Frobenius norms; 0 when both are zero)."""
    a, e = _host(actual).astype(numpy.float64), _host(expected).astype(numpy.float64)
    num = float(numpy.linalg.norm((a - e).ravel()))
    den = float(numpy.linalg.norm(e.ravel()))
    return num / den if den else num


def assert_close(actual, expected, rtol: float = 1e-7, atol: float = 0.0, msg: str = "") -> None:
    """Elementwise |actual - expected| <= atol + rtol |expected|, else an AssertionError that
    names the shapes, the worst element, both values there, and the largest errors."""
    a, e = _host(actual), _host(expected)
    if a.shape != e.shape:
        raise AssertionError(f"{msg}shape mismatch: actual {a.shape}, expected {e.shape}")
    a64, e64 = a.astype(numpy.float64), e.astype(numpy.float64)
    same_nan = numpy.isnan(a64) & numpy.isnan(e64)
    err = numpy.where(same_nan, 0.0, numpy.abs(a64 - e64))
    bound = atol + rtol * numpy.abs(e64)
    bad = ~(err <= bound)
    if bad.any():
        excess = numpy.where(bad, numpy.nan_to_num(err - bound, nan=numpy.inf), -numpy.inf)
        idx = numpy.unravel_index(int(numpy.argmax(excess)), a.shape) if a.ndim else ()
        rel = err / numpy.maximum(numpy.abs(e64), 1e-300)
        raise AssertionError(
            f"{msg}not close: {int(bad.sum())} of {a.size} elements differ (rtol={rtol}, atol={atol}); "
            f"worst at {tuple(int(i) for i in idx)}: actual {a64[idx]!r}, expected {e64[idx]!r}; "
            f"max abs error {float(numpy.nanmax(err)):.3g}, max rel error {float(numpy.nanmax(rel)):.3g}"
        )


# ---------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------

def shapes(min_dims: int = 0, max_dims: int = 3, min_side: int = 1, max_side: int = 4):
    """Array shapes (tuples of ints)."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def broadcastable_shapes(num_shapes: int = 2, min_dims: int = 0, max_dims: int = 3,
                         min_side: int = 1, max_side: int = 4):
    """A tuple of ``num_shapes`` shapes that broadcast together (sizes of 1, missing axes)."""
    return hnp.mutually_broadcastable_shapes(
        num_shapes=num_shapes, min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side
    ).map(lambda b: b.input_shapes)


def float_arrays(shape, dtype=numpy.float64, min_value: float = -2.0, max_value: float = 2.0,
                 min_magnitude: float = 0.0, unique: bool = False):
    """Float arrays with elements in [min_value, max_value] and |x| >= ``min_magnitude``
    (keep away from 0 for log, division, sqrt). ``unique`` avoids ties (for max)."""
    elements = st.floats(min_value, max_value, allow_nan=False, allow_infinity=False,
                         width=numpy.dtype(dtype).itemsize * 8)
    if min_magnitude > 0:
        elements = elements.filter(lambda v: abs(v) >= min_magnitude)
    return hnp.arrays(dtype, shape, elements=elements, unique=unique)


def tensors(shape, dtype=numpy.float64, requires_grad: bool = True, **domain):
    """Tensors over ``float_arrays(shape, dtype, **domain)``."""
    return float_arrays(shape, dtype, **domain).map(lambda a: tensor(a, requires_grad=requires_grad))


def token_ids(batch: int, length: int, vocab_size: int):
    """Integer id arrays of shape (batch, length) in [0, vocab_size)."""
    return hnp.arrays(numpy.int64, (batch, length), elements=st.integers(0, vocab_size - 1))


__all__ = ["assert_close", "relative_error", "shapes", "broadcastable_shapes", "float_arrays",
           "tensors", "token_ids"]
