"""Recompute the float32 erf coefficients of ``kernels/gelu.py`` (``_ERF_P32``, ``_ERFCX_R32``).

Two approximations, each a polynomial of least maximum relative error over its range:

    erf(x) / x   ~ P32(s),        s = x^2 in [0, 1]             (|x| <= 1)
    erfcx(x) / t ~ R32(u),        t = 1 / (1 + x), u = 4t - 1   (x >= 1, so u in (-1, 1])

erfcx(x) = exp(x^2) erfc(x) falls like 1 / (x sqrt pi), and so does t: their ratio tends to
1 / sqrt(pi) as x grows, a bounded smooth function of u over the whole tail, which a
polynomial of degree 8 fits to 3e-8. The fit is iteratively reweighted least squares
(Lawson's algorithm): each round raises the weight of the points with the largest relative
error, and the weighted least-squares solutions converge to the minimax polynomial. SciPy's
float64 ``erf`` and ``erfcx`` (relative errors near 1e-16) are the truth; the coefficients
are rounded to float32, and the error this prints is that of evaluating in float32.

    python tools/fit_erf.py
"""
from __future__ import annotations

import numpy as np
import scipy.special

SMALL_DEGREE = 5
TAIL_DEGREE = 8


def minimax(v, f, degree: int, rounds: int = 40):
    """Coefficients (highest power first) of the polynomial in ``v`` that fits ``f`` with
    the least maximum relative error, by Lawson's reweighting."""
    vander = np.vander(v, degree + 1) / f[:, None]       # relative: fit V c / f to 1
    weight = np.ones_like(f)
    for _ in range(rounds):
        coeffs, *_ = np.linalg.lstsq(vander * weight[:, None], weight, rcond=None)
        weight *= np.sqrt(np.abs(vander @ coeffs - 1.0) + 1e-15)
        weight /= weight.max()
    return coeffs


def horner32(coeffs, v):
    """The polynomial evaluated in float32, as the kernel does."""
    coeffs = np.asarray(coeffs, np.float32)
    v = np.asarray(v, np.float32)
    p = np.full_like(v, coeffs[0])
    for c in coeffs[1:]:
        p = p * v + c
    return p


def fit_small(points: int = 20_001):
    """P32: erf(x) / x as a polynomial in s = x^2 on [0, 1]."""
    s = np.linspace(0.0, 1.0, points)
    x = np.sqrt(s)
    f = np.where(x > 0, scipy.special.erf(x) / np.maximum(x, 1e-300), 2.0 / np.sqrt(np.pi))
    return minimax(s, f, SMALL_DEGREE).astype(np.float32)


def fit_tail(points: int = 40_001):
    """R32: erfcx(x) / t as a polynomial in u = 4t - 1, t = 1 / (1 + x), on x >= 1."""
    x = np.concatenate([np.linspace(1.0, 12.0, points), np.geomspace(12.0, 1e6, points // 100)])
    t = 1.0 / (1.0 + x)
    return minimax(4.0 * t - 1.0, scipy.special.erfcx(x) / t, TAIL_DEGREE).astype(np.float32)


def float32_errors(p32, r32):
    """Largest relative errors of the two approximations evaluated in float32."""
    x = np.linspace(1e-6, 1.0, 100_001).astype(np.float32)
    small = x * horner32(p32, x * x)
    e_small = np.max(np.abs(small / scipy.special.erf(x.astype(np.float64)) - 1.0))
    x = np.linspace(1.0, 12.0, 100_001).astype(np.float32)
    t = np.float32(1.0) / (np.float32(1.0) + x)
    tail = t * horner32(r32, np.float32(4.0) * t - np.float32(1.0))
    e_tail = np.max(np.abs(tail / scipy.special.erfcx(x.astype(np.float64)) - 1.0))
    return float(e_small), float(e_tail)


def main():
    p32, r32 = fit_small(), fit_tail()
    e_small, e_tail = float32_errors(p32, r32)
    np.set_printoptions(precision=7, floatmode="unique")
    print(f"_ERF_P32 (degree {SMALL_DEGREE}, float32 relative error {e_small:.2e}):\n{p32!r}")
    print(f"_ERFCX_R32 (degree {TAIL_DEGREE}, float32 relative error {e_tail:.2e}):\n{r32!r}")


if __name__ == "__main__":
    main()
