"""The threaded add kernel against NumPy's a + b, and the Add op that calls it."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer import kernels
from minitransformer.kernels import elementwise as E

from .threads import numba_threads


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 700), chunk=st.sampled_from([1, 7, 64, E.CHUNK]),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**31))
def test_add_is_numpys_sum_bit_for_bit(n, chunk, dtype, seed):
    rng = np.random.default_rng(seed)
    a, b = (rng.standard_normal((n, 3)).astype(dtype) for _ in range(2))
    out = E.add(a, b, chunk=chunk)
    assert out.dtype == dtype and out.shape == a.shape
    np.testing.assert_array_equal(out, a + b)


@pytest.mark.parametrize("threads", [1, 2])
def test_add_covers_every_chunk_on_any_number_of_threads(threads):
    # three whole chunks and a partial one, so each thread takes a share and one ends short
    a = np.arange(3 * E.CHUNK + 5, dtype=np.float32)
    b = np.full_like(a, 0.5)
    with numba_threads(threads):
        np.testing.assert_array_equal(E.add(a, b), a + 0.5)


def test_add_refuses_what_it_does_not_sum():
    a = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"\(4, 3\) float32 and \(3,\) float32"):
        E.add(a, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="float64"):
        E.add(a, a.astype(np.float64))
    with pytest.raises(ValueError, match=r"C-contiguous arrays, got strides \(4, 12\) and \(4, 12\)"):
        E.add(a.T, a.T)


def test_the_add_op_sums_large_arrays_on_the_kernel_and_agrees_with_the_reference(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 64, 300)).astype(np.float32)      # 76,800 elements: > a chunk
    y = rng.standard_normal((4, 64, 300)).astype(np.float32)
    calls = []
    kernel = E.add
    monkeypatch.setattr(E, "add", lambda a, b: calls.append(a.shape) or kernel(a, b))
    results = {}
    for mode in ("reference", "auto"):
        with kernels.using(mode):
            a, b = mt.tensor(x, requires_grad=True), mt.tensor(y, requires_grad=True)
            out = a + b
            (out * out).sum().backward()
            results[mode] = (out.data, a.grad, b.grad)
    assert calls == [(4, 64, 300)]                                 # auto mode only
    for ref, got in zip(results["reference"], results["auto"]):
        np.testing.assert_array_equal(got, ref)
