"""Hypothesis strategies for arrays, shapes and tensors (needs ``hypothesis``: the testing extra).

    from minitransformer.testing import float_arrays, broadcastable_shapes
    from hypothesis import given, strategies as st

    @given(broadcastable_shapes().flatmap(lambda s: st.tuples(float_arrays(s[0]), float_arrays(s[1]))))
    def test_my_op(pair):
        a, b = (mt.tensor(x, requires_grad=True) for x in pair)
        assert mt.gradcheck(my_op, (a, b))
"""
from __future__ import annotations

import numpy
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minitransformer.autograd.tensor import tensor


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


__all__ = ["shapes", "broadcastable_shapes", "float_arrays", "tensors", "token_ids"]
