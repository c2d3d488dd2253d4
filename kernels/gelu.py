"""GELU on the CPU, forward and backward, in one pass over memory each way.

Two forms (Hendrycks and Gimpel 2016), with Phi the standard normal CDF, phi its density:

    exact ("none", BERT):      y = a Phi(a),                  dy/da = Phi(a) + a phi(a)
    tanh  ("tanh", GPT-2):     y = a/2 (1 + tanh(u)),         u = sqrt(2/pi) (a + 0.044715 a^3)

The reference (``minitransformer.autograd.ops.Gelu`` / ``GeluTanh``) writes each formula as
a chain of NumPy expressions: about ten passes over memory and as many temporaries, and it
keeps two arrays for backward. Here the forward reads ``a`` once and writes ``y`` once; the
backward reads ``a`` and the incoming gradient once and writes ``da`` once, recomputing the
nonlinearity from ``a`` (a few arithmetic operations are cheaper than storing and rereading
an array), so only ``a`` is kept for backward.

The tanh form is rewritten without tanh: since (1 + tanh(u)) / 2 = sigmoid(2u),

    y = a sigmoid(2u),      dy/da = sigmoid(2u) + 2 a sigmoid(2u) (1 - sigmoid(2u)) du/da,

and sigmoid(z), 1 - sigmoid(z) and their product are all formed from p = exp(-|z|) <= 1,
which neither overflows nor cancels for any z. The exponential is the vectorisable
``_cpu.fast_exp``, so the loops compile to SIMD code.

The exact form needs erf, which neither NumPy nor Numba offers as vectorisable code (a
scalar libm call is several times slower than the rest of the loop). :func:`erf` below is
written as polynomials, plain arithmetic, one set per float type, so that float32 runs in
float32 (twice the SIMD lanes of float64, and lower degrees):

    float64, |x| <= 1:    erf(x) = x P(x^2)                         P of degree 10
             1 < |x|:     erf(x) = sign(x) (1 - exp(-x^2) Q(u))     u = (2|x| - 7) / 5
    float32, |x| <= 1:    erf(x) = x P32(x^2)                       P32 of degree 5
             1 < |x|:     erf(x) = sign(x) (1 - exp(-x^2) t R(u))   t = 1 / (1 + |x|), u = 4t - 1

Q (degree 24, on |x| in [1, 6]) and t R (degree 8, on |x| >= 1, t in (0, 1/2]) approximate
erfcx(x) = exp(x^2) erfc(x), a smooth function with no cancellation; erfcx(x) ~ 1/(x sqrt pi)
for large x, which is why the float32 form has the factor t and a variable that stays bounded
as x grows. Beyond |x| = 6, erfc(x) < 2e-17 and erf(x) = +-1 in float64. The float64
coefficients are least-squares fits at Chebyshev points (of erf(x)/x in x^2, and of erfcx in u)
against values computed to 40 digits; the float32 ones are fits of least maximum relative
error against SciPy's float64 erf and erfcx (``tools/fit_erf.py`` recomputes them). The tests
check erf against ``scipy.special.erf`` to a relative 1e-10 in float64 (it is about 4e-15)
and 1e-6 in float32 (it is about 2e-7, 3 units in the last place). In the float32 tail,
Phi(a) = erfc(-a / sqrt 2) / 2 keeps a relative error of about 2e-7 (1 + a^2), from the
rounding of a^2 in exp(-a^2 / 2), down to a = -13, where Phi falls below the smallest normal
float32 and the kernel returns 0; the usual form (1 + erf) / 2 loses all relative accuracy
there already near a = -5.

Work is split into fixed chunks of ``CHUNK`` elements shared among threads by
``run_parallel``; an array of at most one chunk runs on the calling thread alone, so a small
input pays no thread hand-off.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._cpu import FASTMATH, by_float_type, compute_dtype, fast_exp, readonly, run_parallel

APPROXIMATIONS = ("none", "tanh")

# Elements per unit of work: about 50 microseconds of work in one thread, large beside a
# thread hand-off (about 15 microseconds), small enough that two threads share a
# transformer's activations evenly. An array of at most one chunk runs on the calling thread.
CHUNK = 1 << 16

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_K = 0.044715

# erf(x) / x ~ P(x^2) on |x| <= 1, highest power first.
_ERF_P = np.array([
    9.46545332736993e-09, -1.520592274919864e-07, 1.6313935005146944e-06,
    -1.4913701314691788e-05, 0.0001205470886813175, -0.000854830598769986,
    0.005223977182016092, -0.02686617059046905, 0.11283791670608868,
    -0.37612638903175377, 1.1283791670955128,
])
# erfcx(x) = exp(x^2) erfc(x) ~ Q((2x - 7) / 5) on 1 <= x <= 6, highest power first.
_ERFCX_Q = np.array([
    9.795535133052484e-08, -2.1803679198399425e-07, -1.0847492162334575e-07,
    2.1318424533651123e-07, 1.1369292989685795e-06, -2.38753411148999e-06,
    2.619900403803249e-06, -5.647427448133403e-06, 1.4219809814797775e-05,
    -2.907885163290182e-05, 5.72155569508272e-05, -0.00011410973320439218,
    0.0002246016786988825, -0.0004334669413620333, 0.0008222385306014625,
    -0.0015324940647877608, 0.0028033286806122444, -0.005028070712328636,
    0.008833423695611586, -0.015182511351339103, 0.025495559653844296,
    -0.041766788125801015, 0.06663208245300783, -0.10330894458306947,
    0.15529365560889474,
])
_ERFC_CUTOFF = 6.0

# float32: erf(x) / x ~ P32(x^2) on |x| <= 1, and erfcx(x) ~ t R32(4t - 1) with t = 1/(1 + x)
# on x >= 1; highest power first (tools/fit_erf.py).
_ERF_P32 = np.array([
    -5.6313694e-04, 4.9175159e-03, -2.6711253e-02, 1.1280177e-01, -3.7612325e-01,
    1.1283791e+00,
], np.float32)
_ERFCX_R32 = np.array([
    4.0919145e-05, -4.9293878e-05, -2.8804824e-04, 7.8957336e-04, 1.2282553e-03,
    -9.2031695e-03, -7.3073469e-03, 1.5395169e-01, 7.1600461e-01,
], np.float32)


# ---------------------------------------------------------------------------------------
# Scalar building blocks, inlined into the loops below.
# ---------------------------------------------------------------------------------------

@njit(fastmath=FASTMATH, cache=True, inline="always")
def _horner(coeffs, x):
    # A loop over a global (hence constant) array: LLVM unrolls it, and the caller's loop
    # over elements still vectorises.
    p = coeffs[0]
    for k in range(1, coeffs.size):
        p = p * x + coeffs[k]
    return p


@njit(fastmath=FASTMATH, cache=True, inline="always")
def _erf_parts_f64(z):
    e = fast_exp(-z * z)
    small = z * _horner(_ERF_P, z * z)
    u = (2.0 * min(abs(z), _ERFC_CUTOFF) - 7.0) / 5.0
    tail = e * _horner(_ERFCX_Q, u)
    return small, tail, e


@njit(fastmath=FASTMATH, cache=True, inline="always")
def _erf_parts_f32(z):
    one = np.float32(1.0)
    e = fast_exp(-z * z)                          # 0 for |z| > 9.3: erfc below float32's range
    small = z * _horner(_ERF_P32, z * z)
    t = one / (one + abs(z))
    tail = e * t * _horner(_ERFCX_R32, np.float32(4.0) * t - one)
    return small, tail, e


def _erf_parts(z):
    """For a float32 or float64 z: (erf(z) for |z| <= 1, erfc(|z|) for |z| > 1, exp(-z^2)),
    in z's own type.

    Both branches are computed for every element and the caller selects: a select
    vectorises, a branch would not.
    """
    return (_erf_parts_f32 if isinstance(z, np.float32) else _erf_parts_f64)(z)


by_float_type(_erf_parts, _erf_parts_f32, _erf_parts_f64)


@njit(fastmath=FASTMATH, cache=True, inline="always")
def _normal_cdf_pdf(a, half, one, inv_sqrt2, inv_sqrt_2pi):
    """Phi(a) and phi(a) from erf(a / sqrt 2) (Phi = (1 + erf) / 2), in a's type; the
    constants come in that type too (a float64 constant would widen float32 arithmetic)."""
    z = a * inv_sqrt2
    small, tail, e = _erf_parts(z)
    # In the tail, Phi is 1 - erfc/2 or, for negative a, erfc/2 itself: no cancellation.
    cdf_tail = half * tail if z < 0 else one - half * tail
    cdf = half + half * small if abs(z) <= one else cdf_tail
    return cdf, inv_sqrt_2pi * e                  # exp(-z^2) = exp(-a^2 / 2)


@njit(fastmath=FASTMATH, cache=True, inline="always")
def _sigmoid_2u(a, one, c2, k, k3):
    """For the tanh form: (s, s (1 - s), 2 du/da) with s = sigmoid(2u).

    The constants come in a's own type (one = 1, c2 = 2 sqrt(2/pi), k = 0.044715, k3 = 3k),
    since a float64 constant would turn float32 arithmetic into float64.
    """
    z = c2 * (a + k * a * a * a)                   # 2u
    p = fast_exp(-abs(z))                          # in (0, 1]: no overflow for any z
    inv = one / (one + p)
    s = inv if z >= 0 else p * inv
    s_1ms = p * inv * inv                          # s (1 - s) = p / (1 + p)^2
    du2 = c2 * (one + k3 * a * a)
    return s, s_1ms, du2


# ---------------------------------------------------------------------------------------
# Kernels over flat arrays. ``run_parallel(..., contiguous=True)`` hands each thread a
# contiguous run of chunks, first .. stop - 1 (step is 1), i.e. elements
# [first * chunk, stop * chunk). The loops run over slices from index 0: a loop from an
# arbitrary start keeps Numba's negative-index wraparound and runs about 1.6x slower.
#
# error_model="numpy": under Python's error model every division checks for a zero
# divisor (to raise ZeroDivisionError), and that branch keeps LLVM from vectorising the
# loop; NumPy's model gives inf or nan as IEEE arithmetic does.
# ---------------------------------------------------------------------------------------

@njit(nogil=True, fastmath=FASTMATH, error_model="numpy", cache=True)
def _erf(first, stop, step, chunk, x, y):
    one = x.dtype.type(1.0)
    hi = min(stop * chunk, x.size)
    xs, ys = x[first * chunk:hi], y[first * chunk:hi]
    for i in range(xs.size):
        z = xs[i]
        small, tail, _ = _erf_parts(z)
        big = one - tail
        ys[i] = small if abs(z) <= one else (big if z >= 0 else -big)


@njit(nogil=True, fastmath=FASTMATH, error_model="numpy", cache=True)
def _gelu_erf_forward(first, stop, step, chunk, x, y):
    t = x.dtype.type
    half, one, r2, rpi = t(0.5), t(1.0), t(_INV_SQRT_2), t(_INV_SQRT_2PI)
    hi = min(stop * chunk, x.size)
    xs, ys = x[first * chunk:hi], y[first * chunk:hi]
    for i in range(xs.size):
        a = xs[i]
        cdf, _ = _normal_cdf_pdf(a, half, one, r2, rpi)
        ys[i] = a * cdf


@njit(nogil=True, fastmath=FASTMATH, error_model="numpy", cache=True)
def _gelu_erf_backward(first, stop, step, chunk, x, g, dx):
    t = x.dtype.type
    half, one, r2, rpi = t(0.5), t(1.0), t(_INV_SQRT_2), t(_INV_SQRT_2PI)
    lo, hi = first * chunk, min(stop * chunk, x.size)
    xs, gs, dxs = x[lo:hi], g[lo:hi], dx[lo:hi]
    for i in range(xs.size):
        a = xs[i]
        cdf, pdf = _normal_cdf_pdf(a, half, one, r2, rpi)
        dxs[i] = gs[i] * (cdf + a * pdf)


@njit(nogil=True, fastmath=FASTMATH, error_model="numpy", cache=True)
def _gelu_tanh_forward(first, stop, step, chunk, x, y):
    t = x.dtype.type
    one, c2, k, k3 = t(1.0), t(2.0 * _SQRT_2_OVER_PI), t(_K), t(3.0 * _K)
    hi = min(stop * chunk, x.size)
    xs, ys = x[first * chunk:hi], y[first * chunk:hi]
    for i in range(xs.size):
        a = xs[i]
        s, _, _ = _sigmoid_2u(a, one, c2, k, k3)
        ys[i] = a * s


@njit(nogil=True, fastmath=FASTMATH, error_model="numpy", cache=True)
def _gelu_tanh_backward(first, stop, step, chunk, x, g, dx):
    t = x.dtype.type
    one, c2, k, k3 = t(1.0), t(2.0 * _SQRT_2_OVER_PI), t(_K), t(3.0 * _K)
    lo, hi = first * chunk, min(stop * chunk, x.size)
    xs, gs, dxs = x[lo:hi], g[lo:hi], dx[lo:hi]
    for i in range(xs.size):
        a = xs[i]
        s, s_1ms, du2 = _sigmoid_2u(a, one, c2, k, k3)
        # Where s (1 - s) underflows to 0 the second term is 0, even if a du is inf.
        slope = a * du2 * s_1ms if s_1ms > 0 else s_1ms
        dxs[i] = gs[i] * (s + slope)


# ---------------------------------------------------------------------------------------
# Python-side wrappers
# ---------------------------------------------------------------------------------------

def _check_approximate(approximate, name):
    if approximate not in APPROXIMATIONS:
        raise ValueError(f"{name}: approximate must be 'none' or 'tanh', got {approximate!r}")


def _launch(kernel, arrays, out_dtype, chunk):
    n = arrays[0].size
    out = np.empty(n, out_dtype)
    run_parallel(kernel, -(-n // chunk), chunk, *arrays, out, contiguous=True)
    return out


def erf(x, chunk: int = CHUNK):
    """The error function of a float array, elementwise, in float32 for float32 input and
    float64 for float64 (other dtypes compute in float32)."""
    x = np.asarray(x)
    dtype = compute_dtype(x.dtype)
    flat = readonly(x, dtype).reshape(-1)
    return _launch(_erf, [flat], dtype, chunk).reshape(x.shape)


def gelu_forward(x, approximate: str = "none", chunk: int = CHUNK):
    """GELU of ``x``: returns ``(y, saved)``, where ``saved`` is what backward needs (``x``)."""
    _check_approximate(approximate, "gelu_forward")
    x = np.asarray(x)
    dtype = compute_dtype(x.dtype)
    flat = readonly(x, dtype).reshape(-1)
    kernel = _gelu_tanh_forward if approximate == "tanh" else _gelu_erf_forward
    y = _launch(kernel, [flat], dtype, chunk)
    return y.reshape(x.shape).astype(x.dtype, copy=False), x


def gelu_backward(saved, g, approximate: str = "none", chunk: int = CHUNK):
    """da = g * dGELU/da at the input ``saved`` (the second result of ``gelu_forward``)."""
    _check_approximate(approximate, "gelu_backward")
    x = np.asarray(saved)
    g = np.asarray(g)
    if g.shape != x.shape:
        raise ValueError(f"gelu_backward: gradient shape {g.shape} must equal the input shape "
                         f"{x.shape}; pass the gradient of the GELU output")
    dtype = compute_dtype(x.dtype)
    flat = readonly(x, dtype).reshape(-1)
    gflat = readonly(g, dtype).reshape(-1)
    kernel = _gelu_tanh_backward if approximate == "tanh" else _gelu_erf_backward
    dx = _launch(kernel, [flat, gflat], dtype, chunk)
    return dx.reshape(x.shape).astype(x.dtype, copy=False)
