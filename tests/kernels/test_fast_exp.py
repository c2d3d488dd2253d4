"""The kernels' SIMD exponential (kernels/_cpu.fast_exp) against NumPy's, in both float dtypes."""
import numpy as np
import pytest
from numba import njit

from minitransformer.kernels._cpu import FASTMATH, fast_exp


@njit(fastmath=FASTMATH)
def _exp_loop(x, out):
    for j in range(x.size):             # vectorised, as in the kernels
        out[j] = fast_exp(x[j])


# float32: within 3 units in the last place. float64: within 5e-14 relative (about 200
# units): fastmath lets LLVM reassociate the two-part range reduction, which then loses
# the low part's bits; still far below what any float64 check of the library resolves.
@pytest.mark.parametrize("dtype, lo, hi, bound", [(np.float32, -87.0, 88.0, 3 * np.finfo(np.float32).eps),
                                                  (np.float64, -708.0, 709.0, 5e-14)])
def test_fast_exp_is_within_its_error_bound(dtype, lo, hi, bound):
    x = np.concatenate([np.linspace(lo, hi, 200_001), [0.0, -0.0, 1e-30, -1e-30, lo, hi]]).astype(dtype)
    got = np.empty_like(x)
    _exp_loop(x, got)
    want = np.exp(x.astype(np.float64))
    err = np.abs(got.astype(np.float64) - want) / want
    assert got.dtype == dtype
    assert err.max() <= bound, (x[err.argmax()], got[err.argmax()], want[err.argmax()])


@pytest.mark.parametrize("dtype, below", [(np.float32, [-88.5, -104.0, -800.0]),
                                          (np.float64, [-709.0, -745.0, -800.0])])
def test_below_the_smallest_normal_exp_is_zero_and_minus_infinity_gives_zero(dtype, below):
    x = np.array([-np.inf, -1e30, *below], dtype)
    got = np.empty_like(x)
    _exp_loop(x, got)
    want = np.exp(x.astype(np.float64))
    # 0 where libm gives a subnormal (an error of at most the smallest normal number) or 0
    assert np.all(got == 0), got
    assert np.all(want <= np.finfo(dtype).tiny)
