"""The embedding-gradient scatter-add kernel against ``numpy.add.at`` (the reference).

Both add each table row's gradients in position order, so they agree bit for bit.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitransformer as mt
import minitransformer.functional as F
from minitransformer import kernels
from minitransformer.kernels import embedding as E

from .threads import numba_threads


def reference(ids, g, num_rows):
    dw = np.zeros((num_rows, g.shape[-1]), g.dtype)
    np.add.at(dw, ids.reshape(-1), g.reshape(-1, g.shape[-1]))
    return dw


@settings(max_examples=30, deadline=None)
@given(num_rows=st.integers(1, 300), width=st.sampled_from([1, 3, 64, 130]),
       ids_shape=st.sampled_from([(1,), (7,), (3, 40), (2, 2, 9)]),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**31))
def test_embedding_backward_matches_add_at(num_rows, width, ids_shape, dtype, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, num_rows, ids_shape)                  # repeats when num_rows is small
    g = rng.standard_normal((*ids_shape, width)).astype(dtype)
    dw = E.embedding_backward(ids, g, num_rows)
    assert dw.dtype == dtype and dw.shape == (num_rows, width)
    np.testing.assert_array_equal(dw, reference(ids, g, num_rows))

    w = mt.tensor(rng.standard_normal((num_rows, width)).astype(dtype), requires_grad=True)
    F.embedding(ids, w).backward(g)
    np.testing.assert_array_equal(w.grad, reference(ids, g, num_rows))


def test_results_do_not_depend_on_the_thread_count():
    rng = np.random.default_rng(7)
    ids = rng.integers(0, 10_000, 5000)
    g = rng.standard_normal((5000, 64)).astype(np.float32)
    assert 10_000 * 64 > 2 * E.BLOCK_ELEMENTS                   # several blocks of rows to share
    results = []
    for n in (1, 2):
        with numba_threads(n):
            results.append(E.embedding_backward(ids, g, 10_000))
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], reference(ids, g, 10_000))


def test_registered_and_used_by_the_op():
    g = np.zeros((2, 3), np.float32)
    assert kernels.get("embedding_backward", g) is E.embedding_backward


def test_bad_arguments_are_refused_with_a_clear_message():
    g = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"ids must be in \[0, 5\)"):
        E.embedding_backward(np.array([0, 1, 5, 2]), g, 5)
    with pytest.raises(ValueError, match="gradient shape"):
        E.embedding_backward(np.array([0, 1, 2]), g, 5)
    with pytest.raises(TypeError, match="integers"):
        E.embedding_backward(np.zeros(4), g, 5)
