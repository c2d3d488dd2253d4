"""The per-entry dropout decision of the kernels equals the reference's keep mask, bit for bit."""
import warnings

import numba
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from minitransformer.kernels import rng

_keep_jit = numba.njit(rng.keep_scalar)


@numba.njit
def _keep_mask_jit(hashed_seed, threshold, n):
    out = np.empty(n, np.bool_)
    for c in range(n):
        out[c] = _keep_jit(hashed_seed, np.uint64(c), threshold)
    return out


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**63 - 1), p=st.floats(0.0, 0.99),
       shape=st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 40)))
def test_scalar_twin_matches_the_keep_mask(seed, p, shape):
    want = rng.dropout_keep_mask(np, seed, *shape, p).reshape(-1)
    got = _keep_mask_jit(rng.seed_hash(seed), rng.keep_threshold(p), want.size)
    assert np.array_equal(got, want)


def test_python_twin_and_boundary_probabilities():
    seed = 2024
    want = rng.dropout_keep_mask(np, seed, 1, 1, 64, 0.5).reshape(-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # uint64 wrap-around on NumPy scalars
        got = [rng.keep_scalar(rng.seed_hash(seed), np.uint64(c), rng.keep_threshold(0.5))
               for c in range(64)]
    assert np.array_equal(got, want)
    assert 10 < want.sum() < 54
    # p = 0 keeps everything; the threshold is exact at p = 2**-53 steps.
    assert _keep_mask_jit(rng.seed_hash(1), rng.keep_threshold(0.0), 100).all()
    assert int(rng.keep_threshold(0.5)) == 2**52
