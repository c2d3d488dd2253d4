"""GELU on a CUDA GPU, forward and backward, one read and one write per element each way.

The math is that of ``gelu.py``, with Phi the standard normal CDF and phi its density:

    exact ("none", BERT):      y = a Phi(a),                  dy/da = Phi(a) + a phi(a)
    tanh  ("tanh", GPT-2):     y = a sigmoid(2u),             u = sqrt(2/pi) (a + 0.044715 a^3)
                               dy/da = sigmoid(2u) + 2 a sigmoid(2u) (1 - sigmoid(2u)) du/da

Each thread takes elements i, i + stride, ... of the flat array (a grid-stride loop: a grid
of a fixed size covers an array of any size, and neighbouring threads read neighbouring
floats). The backward recomputes the nonlinearity from the saved input, as the CPU kernel
does, so only ``a`` is kept between the passes.

On the GPU erf and erfc are short instruction sequences of CUDA's maths library, in float32
for float32 data, so the exact form needs none of the CPU kernel's polynomials. It is
written with erfc, Phi(a) = erfc(-a / sqrt 2) / 2, which keeps its relative accuracy in
the left tail where 1 + erf(a / sqrt 2) would cancel. The tanh form is written with the
sigmoid built from p = exp(-|2u|) <= 1, as on the CPU: no overflow for any a. Every
constant is formed in the data's float type (``ft``), so float32 data is computed in
float32 throughout.
"""
from __future__ import annotations

import functools
import math

from minitransformer import backend

from . import _cuda
from ._cuda import THREADS, bind_cuda, contiguous, float_type, grid_for_elements, launch_stream
from .gelu import APPROXIMATIONS

cuda = None  # numba.cuda once a kernel is built (see _cuda.bind_cuda)

# Constants as plain numbers, which a kernel converts to its type with ``ft(...)``; an
# expression such as ``ft(2.0 * c)`` in a kernel would multiply in float64 on the device.
_TWO_SQRT_2_OVER_PI = 2.0 * math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_K = 0.044715
_K3 = 3.0 * _K


@functools.lru_cache(maxsize=None)
def _kernels(ft):
    """(forward, backward) kernels of both forms for float type ``ft``, as a dict by form."""
    bind_cuda(globals())

    @cuda.jit(device=True)
    def normal_cdf_pdf(a):
        cdf = ft(0.5) * math.erfc(-a * ft(_INV_SQRT_2))
        pdf = ft(_INV_SQRT_2PI) * math.exp(ft(-0.5) * a * a)
        return cdf, pdf

    @cuda.jit(device=True)
    def sigmoid_2u(a):
        """(s, s (1 - s), 2 du/da) with s = sigmoid(2u)."""
        one = ft(1.0)
        c2 = ft(_TWO_SQRT_2_OVER_PI)
        z = c2 * (a + ft(_K) * a * a * a)                   # 2u
        p = math.exp(-abs(z))                                # in (0, 1]
        inv = one / (one + p)
        s = inv if z >= ft(0.0) else p * inv
        return s, p * inv * inv, c2 * (one + ft(_K3) * a * a)

    @cuda.jit
    def erf_forward(x, y):
        # x, y: flat (n,)
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            a = x[i]
            cdf, _ = normal_cdf_pdf(a)
            y[i] = a * cdf

    @cuda.jit
    def erf_backward(x, g, dx):
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            a = x[i]
            cdf, pdf = normal_cdf_pdf(a)
            dx[i] = g[i] * (cdf + a * pdf)

    @cuda.jit
    def tanh_forward(x, y):
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            a = x[i]
            s, _, _ = sigmoid_2u(a)
            y[i] = a * s

    @cuda.jit
    def tanh_backward(x, g, dx):
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            a = x[i]
            s, s_1ms, du2 = sigmoid_2u(a)
            # Where s (1 - s) underflows to 0 the second term is 0, even if a du is inf.
            slope = a * du2 * s_1ms if s_1ms > ft(0.0) else s_1ms
            dx[i] = g[i] * (s + slope)

    return {"none": (erf_forward, erf_backward), "tanh": (tanh_forward, tanh_backward)}


def _check_approximate(approximate, name):
    if approximate not in APPROXIMATIONS:
        raise ValueError(f"{name}: approximate must be 'none' or 'tanh', got {approximate!r}")


def _launch(kernel, arrays, like, threads):
    """Run an elementwise kernel over the flat ``arrays``; returns its flat output."""
    xp = backend.xp(like)
    out = _cuda.empty(xp, arrays[0].size, arrays[0].dtype)
    if out.size:
        kernel[grid_for_elements(out.size, threads), threads, launch_stream(like)](*arrays, out)
    return out


def gelu_forward(x, approximate: str = "none", *, threads=THREADS):
    """GELU of ``x``: returns ``(y, saved)``, where ``saved`` is what backward needs (``x``)."""
    _check_approximate(approximate, "gelu_forward")
    xp = backend.xp(x)
    ft = float_type(x.dtype)
    flat = contiguous(x, ft, xp).reshape(-1)
    y = _launch(_kernels(ft)[approximate][0], [flat], x, threads)
    return y.reshape(x.shape).astype(x.dtype, copy=False), x


def gelu_backward(saved, g, approximate: str = "none", *, threads=THREADS):
    """da = g * dGELU/da at the input ``saved`` (the second result of ``gelu_forward``)."""
    _check_approximate(approximate, "gelu_backward")
    x = saved
    if g.shape != x.shape:
        raise ValueError(f"gelu_backward: gradient shape {g.shape} must equal the input shape "
                         f"{x.shape}; pass the gradient of the GELU output")
    xp = backend.xp(x)
    ft = float_type(x.dtype)
    flat = contiguous(x, ft, xp).reshape(-1)
    gflat = contiguous(g, ft, xp).reshape(-1)
    dx = _launch(_kernels(ft)[approximate][1], [flat, gflat], x, threads)
    return dx.reshape(x.shape).astype(x.dtype, copy=False)
