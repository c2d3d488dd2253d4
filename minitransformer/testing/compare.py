"""Comparing arrays the way a test wants to: a bound per element, and a message that helps."""
from __future__ import annotations

import numpy

from minitransformer import backend
from minitransformer.autograd.tensor import Tensor


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
