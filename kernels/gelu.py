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
written as two polynomials, also plain arithmetic:

    |x| <= 1:     erf(x) = x P(x^2)                          P of degree 10
    1 < |x|:      erf(x) = sign(x) (1 - exp(-x^2) Q(x))      Q of degree 24 on [1, 6]

where Q approximates erfcx(x) = exp(x^2) erfc(x), a smooth function with no cancellation;
beyond |x| = 6, erfc(x) < 2e-17 and erf(x) = +-1 in float64. The coefficients are least-
squares fits at Chebyshev points (of erf(x)/x in x^2, and of erfcx in (2x - 7)/5, which maps
[1, 6] to [-1, 1]) against values computed to 40 digits; the tests check the result against
``scipy.special.erf`` to a relative 1e-10 (it is about 4e-15). The exact form computes in
float64 for both float dtypes: one set of coefficients, and still SIMD code.

Work is split into fixed chunks of ``CHUNK`` elements shared among threads by
``run_parallel``; an array of at most one chunk runs on the calling thread alone, so a small
input pays no thread hand-off.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._cpu import FASTMATH, compute_dtype, fast_exp, readonly, run_parallel

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
def _erf_parts(z):
    """For a float64 z: (erf(z) for |z| <= 1, erfc(|z|) for |z| > 1, exp(-z^2)).

    Both branches are computed for every element and the caller selects: a select
    vectorises, a branch would not.
    """
    e = fast_exp(-z * z)
    small = z * _horner(_ERF_P, z * z)
    u = (2.0 * min(abs(z), _ERFC_CUTOFF) - 7.0) / 5.0
    tail = e * _horner(_ERFCX_Q, u)
    return small, tail, e


@njit(fastmath=FASTMATH, cache=True, inline="always")
def _normal_cdf_pdf(a):
    """Phi(a) and phi(a) of a float64, from erf(a / sqrt 2) (Phi = (1 + erf) / 2)."""
    z = a * _INV_SQRT_2
    small, tail, e = _erf_parts(z)
    # In the tail, Phi is 1 - erfc/2 or, for negative a, erfc/2 itself: no cancellation.
    cdf_tail = 0.5 * tail if z < 0.0 else 1.0 - 0.5 * tail
    cdf = 0.5 + 0.5 * small if abs(z) <= 1.0 else cdf_tail
    return cdf, _INV_SQRT_2PI * e                 # exp(-z^2) = exp(-a^2 / 2)


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
    hi = min(stop * chunk, x.size)
    xs, ys = x[first * chunk:hi], y[first * chunk:hi]
    for i in range(xs.size):
        z = np.float64(xs[i])
        small, tail, _ = _erf_parts(z)
        big = 1.0 - tail
        ys[i] = small if abs(z) <= 1.0 else (big if z >= 0.0 else -big)


@njit(nogil=True, fastmath=FASTMATH, error_model="numpy", cache=True)
def _gelu_erf_forward(first, stop, step, chunk, x, y):
    hi = min(stop * chunk, x.size)
    xs, ys = x[first * chunk:hi], y[first * chunk:hi]
    for i in range(xs.size):
        a = np.float64(xs[i])
        cdf, _ = _normal_cdf_pdf(a)
        ys[i] = a * cdf


@njit(nogil=True, fastmath=FASTMATH, error_model="numpy", cache=True)
def _gelu_erf_backward(first, stop, step, chunk, x, g, dx):
    lo, hi = first * chunk, min(stop * chunk, x.size)
    xs, gs, dxs = x[lo:hi], g[lo:hi], dx[lo:hi]
    for i in range(xs.size):
        a = np.float64(xs[i])
        cdf, pdf = _normal_cdf_pdf(a)
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
    """The error function of a float array, elementwise (float64 arithmetic for any dtype)."""
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
