"""The primitive differentiable ops, each forward beside its backward.

Notation in the docstrings: ``g`` is dL/d(out), the gradient arriving from above; each
backward returns dL/d(input) for every input, summed back to the input's shape by
``unbroadcast`` where the forward broadcast it. Every op takes its array module from its
inputs (``backend.xp``), so the same code runs on NumPy and CuPy arrays.

Ops are grouped: arithmetic, elementwise functions, reductions, shape and indexing,
selection. The fused ops of neural networks (softmax, layer norm, cross-entropy, attention)
live in ``minitransformer.functional``.
"""
from __future__ import annotations

import math

import numpy

from minitransformer import backend, kernels
from minitransformer.autograd.function import Function, shape_of, unbroadcast
from minitransformer.autograd.tensor import Tensor
from minitransformer.kernels import elementwise as _elementwise

xp_of = backend.xp


def as_array(x):
    """The array inside a Tensor, or ``x`` itself (masks and indices are plain arrays)."""
    return x.data if isinstance(x, Tensor) else x


def norm_axis(axis, ndim):
    """Normalise ``axis`` (None, int, or tuple) to None or a sorted tuple of non-negative ints."""
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    for a in axes:
        if not -ndim <= a < max(ndim, 1):
            raise ValueError(f"axis {a} is out of range for a tensor with {ndim} dimensions")
    return tuple(sorted(a % max(ndim, 1) for a in axes))


class shape_errors:
    """``with shape_errors(describe): out = ...``: NumPy's (or CuPy's) ValueError about
    shapes, which names neither the op nor a remedy, becomes ``ValueError(describe())``.

    ``describe`` is called only when there is an error, so the message costs nothing on
    the way through; the array library's own error is dropped from the traceback.
    """

    __slots__ = ("describe",)

    def __init__(self, describe):
        self.describe = describe

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if kind is not None and issubclass(kind, ValueError):
            raise ValueError(self.describe()) from None
        return False


def broadcasting(name, a, b):
    """``shape_errors`` for an op whose two operands must broadcast together."""
    return shape_errors(lambda: f"{name}: shapes {shape_of(a)} and {shape_of(b)} do not broadcast "
                                "(trailing axes must be equal or 1); reshape or expand one operand")


# =======================================================================================
# Arithmetic
# =======================================================================================

def _threaded_add(a, b) -> bool:
    """Whether a + b goes to the CPU add kernel: NumPy float32/float64 arrays of one shape,
    dtype and C layout, at least a chunk of them, outside the reference mode."""
    return (type(a) is numpy.ndarray and type(b) is numpy.ndarray and a.shape == b.shape
            and a.dtype == b.dtype and a.dtype in (numpy.float32, numpy.float64)
            and a.size >= _elementwise.CHUNK and a.flags.c_contiguous and b.flags.c_contiguous
            and kernels.mode() != "reference")


class Add(Function):
    """out = a + b.   da = g, db = g (each summed to its own shape).

    Two large float arrays of one shape (a residual connection's) are summed by the
    threaded kernel (kernels/elementwise.py), the same sums as ``a + b``.
    """

    @staticmethod
    def forward(ctx, a, b):
        ctx.save(a_shape=shape_of(a), b_shape=shape_of(b))
        if _threaded_add(a, b):
            return _elementwise.add(a, b)
        with broadcasting("add", a, b):
            return a + b

    @staticmethod
    def backward(ctx, g):
        return unbroadcast(g, ctx.a_shape), unbroadcast(g, ctx.b_shape)


class Sub(Function):
    """out = a - b.   da = g, db = -g."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save(a_shape=shape_of(a), b_shape=shape_of(b))
        with broadcasting("sub", a, b):
            return a - b

    @staticmethod
    def backward(ctx, g):
        gb = unbroadcast(-g, ctx.b_shape) if ctx.needs_input_grad[1] else None
        return unbroadcast(g, ctx.a_shape), gb


class Mul(Function):
    """out = a * b.   da = g * b, db = g * a."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save(a=a, b=b)
        with broadcasting("mul", a, b):
            return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.a, ctx.b
        ga = unbroadcast(g * b, shape_of(a)) if ctx.needs_input_grad[0] else None
        gb = unbroadcast(g * a, shape_of(b)) if ctx.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    """out = a / b.   da = g / b, db = -g * a / b^2 = -g * out / b."""

    @staticmethod
    def forward(ctx, a, b):
        with broadcasting("div", a, b):
            out = a / b
        ctx.save(a_shape=shape_of(a), b=b, out=out)
        return out

    @staticmethod
    def backward(ctx, g):
        b = ctx.b
        ga = unbroadcast(g / b, ctx.a_shape) if ctx.needs_input_grad[0] else None
        gb = unbroadcast(-g * ctx.out / b, shape_of(b)) if ctx.needs_input_grad[1] else None
        return ga, gb


class Neg(Function):
    """out = -a.   da = -g."""

    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, g):
        return -g


class Pow(Function):
    """out = a ** b.   da = g * b * a^(b-1);  db = g * out * log(a)  (needs a > 0)."""

    @staticmethod
    def forward(ctx, a, b):
        with broadcasting("pow", a, b):
            out = a ** b
        ctx.save(a=a, b=b, out=out)
        return out

    @staticmethod
    def backward(ctx, g):
        a, b, out = ctx.a, ctx.b, ctx.out
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = unbroadcast(g * b * a ** (b - 1), shape_of(a))
        if ctx.needs_input_grad[1]:
            gb = unbroadcast(g * out * xp_of(out).log(a), shape_of(b))
        return ga, gb


class MatMul(Function):
    """out = a @ b over the last two axes, batch axes broadcast.

    da = g @ b^T,  db = a^T @ g  (transposes of the last two axes), summed over broadcast batch axes.
    """

    @staticmethod
    def forward(ctx, a, b):
        if a.shape[-1] != b.shape[-2]:
            raise ValueError(
                f"matmul: shapes {a.shape} and {b.shape} are not aligned: the last axis of the "
                f"first ({a.shape[-1]}) must equal the second-to-last of the second ({b.shape[-2]})"
            )
        ctx.save(a=a, b=b)
        with shape_errors(lambda: f"matmul: batch axes of shapes {a.shape} and {b.shape} do not broadcast"):
            return a @ b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.a, ctx.b
        ga = unbroadcast(g @ b.swapaxes(-1, -2), a.shape) if ctx.needs_input_grad[0] else None
        gb = unbroadcast(a.swapaxes(-1, -2) @ g, b.shape) if ctx.needs_input_grad[1] else None
        return ga, gb

    @staticmethod
    def flops(ctx, phase, *arrays):
        """2 m k n per matrix forward; backward one product as large per input gradient (da, db)."""
        from minitransformer.autograd.hooks import matmul_flops

        product = matmul_flops(ctx.a.shape, ctx.b.shape)
        return product if phase == "forward" else product * sum(ctx.needs_input_grad[:2])


def matmul(a, b):
    """Matrix product with NumPy's rules: 1-D operands are promoted, then the axis dropped."""
    a = a if isinstance(a, Tensor) else Tensor(a)
    b = b if isinstance(b, Tensor) else Tensor(b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: operands must have at least one axis, got shapes {a.shape} and {b.shape}")
    if a.ndim == 1 and b.ndim == 1:
        return (MatMul.apply(a.reshape(1, -1), b.reshape(-1, 1))).reshape(())
    if a.ndim == 1:
        return squeeze(MatMul.apply(unsqueeze(a, 0), b), -2)
    if b.ndim == 1:
        return squeeze(MatMul.apply(a, unsqueeze(b, -1)), -1)
    return MatMul.apply(a, b)


# =======================================================================================
# Elementwise functions
# =======================================================================================

class Exp(Function):
    """out = exp(a).   da = g * out."""

    @staticmethod
    def forward(ctx, a):
        out = xp_of(a).exp(a)
        ctx.save(out=out)
        return out

    @staticmethod
    def backward(ctx, g):
        return g * ctx.out


class Log(Function):
    """out = log(a).   da = g / a."""

    @staticmethod
    def forward(ctx, a):
        ctx.save(a=a)
        return xp_of(a).log(a)

    @staticmethod
    def backward(ctx, g):
        return g / ctx.a


class Sqrt(Function):
    """out = sqrt(a).   da = g / (2 out)."""

    @staticmethod
    def forward(ctx, a):
        out = xp_of(a).sqrt(a)
        ctx.save(out=out)
        return out

    @staticmethod
    def backward(ctx, g):
        return g / (2 * ctx.out)


class Tanh(Function):
    """out = tanh(a).   da = g * (1 - out^2)."""

    @staticmethod
    def forward(ctx, a):
        out = xp_of(a).tanh(a)
        ctx.save(out=out)
        return out

    @staticmethod
    def backward(ctx, g):
        out = ctx.out
        return g * (1 - out * out)


class Sigmoid(Function):
    """out = 1 / (1 + exp(-a)).   da = g * out * (1 - out)."""

    @staticmethod
    def forward(ctx, a):
        xp = xp_of(a)
        # Split by sign so exp never overflows: for a < 0, sigmoid(a) = e^a / (1 + e^a).
        e = xp.exp(-xp.abs(a))
        out = xp.where(a >= 0, 1 / (1 + e), e / (1 + e)).astype(a.dtype, copy=False)
        ctx.save(out=out)
        return out

    @staticmethod
    def backward(ctx, g):
        out = ctx.out
        return g * out * (1 - out)


class Relu(Function):
    """out = max(a, 0).   da = g where a > 0, else 0."""

    @staticmethod
    def forward(ctx, a):
        positive = a > 0
        ctx.save(positive=positive)
        return a * positive

    @staticmethod
    def backward(ctx, g):
        return g * ctx.positive


class Abs(Function):
    """out = |a|.   da = g * sign(a)."""

    @staticmethod
    def forward(ctx, a):
        ctx.save(a=a)
        return xp_of(a).abs(a)

    @staticmethod
    def backward(ctx, g):
        return g * xp_of(g).sign(ctx.a)


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class Gelu(Function):
    """Exact GELU (BERT): out = a * Phi(a), Phi(a) = (1 + erf(a / sqrt 2)) / 2.

    da = g * (Phi(a) + a * phi(a)), phi the standard normal density.
    Where ``kernels.get`` finds a fused kernel (kernels/gelu.py) it computes both instead.
    """

    @staticmethod
    def forward(ctx, a):
        fwd = kernels.get("gelu_forward", a) if a.dtype.kind == "f" else None
        if fwd:
            out, saved = fwd(a, "none")
            ctx.save(a=saved, kernel=True)
            return out
        cdf = _normal_cdf(a)
        ctx.save(a=a, cdf=cdf, kernel=False)
        return a * cdf

    @staticmethod
    def backward(ctx, g):
        bwd = kernels.get("gelu_backward", g) if ctx.kernel else None
        if bwd:
            return bwd(ctx.a, g, "none")
        a = ctx.a
        cdf = _normal_cdf(a) if ctx.kernel else ctx.cdf      # a kernel's forward kept only a
        pdf = _INV_SQRT_2PI * xp_of(a).exp(-0.5 * a * a)
        return g * (cdf + a * pdf)


def _normal_cdf(a):
    return 0.5 * (1.0 + backend.erf(a * _INV_SQRT_2))


class GeluTanh(Function):
    """Tanh GELU (GPT-2's gelu_new): out = a/2 (1 + tanh(u)), u = sqrt(2/pi)(a + 0.044715 a^3).

    da = g * [ (1 + t)/2 + a/2 (1 - t^2) sqrt(2/pi)(1 + 3 * 0.044715 a^2) ], t = tanh(u).
    Where ``kernels.get`` finds a fused kernel (kernels/gelu.py) it computes both instead.
    """

    @staticmethod
    def forward(ctx, a):
        fwd = kernels.get("gelu_forward", a) if a.dtype.kind == "f" else None
        if fwd:
            out, saved = fwd(a, "tanh")
            ctx.save(a=saved, kernel=True)
            return out
        t = _tanh_u(a)
        ctx.save(a=a, t=t, kernel=False)
        return 0.5 * a * (1.0 + t)

    @staticmethod
    def backward(ctx, g):
        bwd = kernels.get("gelu_backward", g) if ctx.kernel else None
        if bwd:
            return bwd(ctx.a, g, "tanh")
        a = ctx.a
        t = _tanh_u(a) if ctx.kernel else ctx.t              # a kernel's forward kept only a
        du = _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * a * a)
        return g * (0.5 * (1.0 + t) + 0.5 * a * (1.0 - t * t) * du)


def _tanh_u(a):
    return xp_of(a).tanh(_SQRT_2_OVER_PI * (a + 0.044715 * a * a * a))


def gelu(x, approximate: str = "none"):
    """GELU; ``approximate="tanh"`` is GPT-2's form, "none" the exact erf form of BERT."""
    if approximate == "none":
        return Gelu.apply(x)
    if approximate == "tanh":
        return GeluTanh.apply(x)
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


class Cast(Function):
    """out = a as another dtype.   da = g cast back to a's dtype."""

    @staticmethod
    def forward(ctx, a, dtype):
        ctx.save(in_dtype=a.dtype)
        return a.astype(dtype)

    @staticmethod
    def backward(ctx, g):
        return g.astype(ctx.in_dtype)


class ToDevice(Function):
    """out = a copied to another device.   da = g copied back."""

    @staticmethod
    def forward(ctx, a, device):
        ctx.save(src=backend.device_of(a))
        return backend.to_device(a, device)

    @staticmethod
    def backward(ctx, g):
        return backend.to_device(g, ctx.src)


# =======================================================================================
# Reductions
# =======================================================================================

def _expand_reduced(g, in_shape, axis, keepdims):
    """Reshape a reduced gradient so it broadcasts against the input again."""
    if axis is None:
        return g.reshape((1,) * len(in_shape))
    if keepdims:
        return g
    shape = list(in_shape)
    for a in axis:
        shape[a] = 1
    return g.reshape(shape)


class Sum(Function):
    """out = sum of a over ``axis``.   da = g broadcast back over the summed axes."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.save(shape=a.shape, axis=axis, keepdims=keepdims)
        return a.sum(axis=axis, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        g = _expand_reduced(g, ctx.shape, ctx.axis, ctx.keepdims)
        return xp_of(g).broadcast_to(g, ctx.shape).copy()


class Mean(Function):
    """out = mean of a over ``axis`` (n elements each).   da = g / n broadcast back."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        n = a.size if axis is None else math.prod(a.shape[i] for i in axis)
        ctx.save(shape=a.shape, axis=axis, keepdims=keepdims, n=n)
        return a.mean(axis=axis, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        g = _expand_reduced(g, ctx.shape, ctx.axis, ctx.keepdims) / ctx.n
        return xp_of(g).broadcast_to(g, ctx.shape).copy()


class Max(Function):
    """out = max of a over ``axis``.

    da = g at the maximal elements, 0 elsewhere; ties share g equally (so the gradient is
    the average of the one-sided choices, as ``torch.amax`` does).
    """

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        if a.size == 0:
            raise ValueError(f"max: cannot reduce an empty tensor of shape {a.shape}")
        out = a.max(axis=axis, keepdims=True)
        is_max = a == out
        ctx.save(is_max=is_max, axis=axis, keepdims=keepdims, shape=a.shape)
        return out if keepdims else (out.reshape(()) if axis is None else out.squeeze(axis))

    @staticmethod
    def backward(ctx, g):
        g = _expand_reduced(g, ctx.shape, ctx.axis, ctx.keepdims)
        is_max = ctx.is_max
        count = is_max.sum(axis=ctx.axis, keepdims=True)
        return (is_max * (g / count)).astype(g.dtype, copy=False)


class Var(Function):
    """out = mean((a - mean(a))^2) * n / (n - ddof) over ``axis``.

    da = g * 2 (a - mean(a)) / (n - ddof).
    """

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False, ddof=0):
        n = a.size if axis is None else math.prod(a.shape[i] for i in axis)
        if n - ddof <= 0:
            raise ValueError(f"var: {n} elements with ddof={ddof} leave no degrees of freedom")
        centered = a - a.mean(axis=axis, keepdims=True)
        ctx.save(centered=centered, axis=axis, keepdims=keepdims, denom=n - ddof)
        return (centered * centered).sum(axis=axis, keepdims=keepdims) / (n - ddof)

    @staticmethod
    def backward(ctx, g):
        c = ctx.centered
        g = _expand_reduced(g, c.shape, ctx.axis, ctx.keepdims)
        return g * (2.0 / ctx.denom) * c


# =======================================================================================
# Shape
# =======================================================================================

class Reshape(Function):
    """out = a with a new shape (same elements, same order).   da = g reshaped back."""

    @staticmethod
    def forward(ctx, a, shape):
        ctx.save(shape=a.shape)
        with shape_errors(lambda: f"reshape: cannot reshape a tensor of shape {a.shape} "
                                  f"({a.size} elements) into shape {tuple(shape)}"):
            return a.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        return g if g.shape == ctx.shape else g.reshape(ctx.shape)


class Permute(Function):
    """out = a with its axes reordered by ``axes``.   da = g with the inverse order."""

    @staticmethod
    def forward(ctx, a, axes):
        if sorted(axes) != list(range(a.ndim)):
            raise ValueError(f"permute: {axes} is not an ordering of the {a.ndim} axes of shape {a.shape}")
        ctx.save(axes=axes)
        return a.transpose(axes)

    @staticmethod
    def backward(ctx, g):
        return g.transpose(tuple(numpy.argsort(ctx.axes)))


class Expand(Function):
    """out = a broadcast to ``shape`` (a view).   da = g summed over the broadcast axes."""

    @staticmethod
    def forward(ctx, a, shape):
        shape = tuple(a.shape[i - (len(shape) - a.ndim)] if s == -1 else s for i, s in enumerate(shape))
        ctx.save(shape=a.shape)
        with shape_errors(lambda: f"expand: cannot expand shape {a.shape} to {shape}; only axes of "
                                  "size 1 can grow"):
            return xp_of(a).broadcast_to(a, shape)

    @staticmethod
    def backward(ctx, g):
        return unbroadcast(g, ctx.shape)


def squeeze(x, axis=None):
    """Drop axes of size 1 (all of them, or ``axis``, which must have size 1)."""
    shape = x.shape
    if axis is None:
        new = tuple(n for n in shape if n != 1)
    else:
        axes = norm_axis(axis, len(shape))
        for a in axes:
            if shape[a] != 1:
                raise ValueError(f"squeeze: axis {a} of shape {shape} has size {shape[a]}, not 1")
        new = tuple(n for i, n in enumerate(shape) if i not in axes)
    return Reshape.apply(x, shape=new)


def unsqueeze(x, axis: int):
    """Insert an axis of size 1 at position ``axis`` (negative counts from the new end)."""
    ndim = len(x.shape) + 1
    if not -ndim <= axis < ndim:
        raise ValueError(f"unsqueeze: axis {axis} out of range for a result with {ndim} dimensions")
    shape = list(x.shape)
    shape.insert(axis % ndim, 1)
    return Reshape.apply(x, shape=tuple(shape))


class Concatenate(Function):
    """out = the inputs joined along ``axis``.   d(input i) = the slice of g it occupies."""

    @staticmethod
    def forward(ctx, *arrays, axis=0):
        ctx.save(sizes=[a.shape[axis] for a in arrays], axis=axis)
        with shape_errors(lambda: f"concatenate: shapes {[a.shape for a in arrays]} must agree on every "
                                  f"axis except {axis}"):
            return xp_of(*arrays).concatenate(arrays, axis=axis)

    @staticmethod
    def backward(ctx, g):
        bounds = numpy.cumsum(ctx.sizes)[:-1].tolist()
        return tuple(xp_of(g).split(g, bounds, axis=ctx.axis))


class Stack(Function):
    """out = the inputs stacked along a new ``axis``.   d(input i) = g's i-th slice there."""

    @staticmethod
    def forward(ctx, *arrays, axis=0):
        ctx.save(axis=axis, n=len(arrays))
        with shape_errors(lambda: f"stack: all shapes must be equal, got {[a.shape for a in arrays]}"):
            return xp_of(*arrays).stack(arrays, axis=axis)

    @staticmethod
    def backward(ctx, g):
        xp = xp_of(g)
        return tuple(xp.take(g, i, axis=ctx.axis) for i in range(ctx.n))


def _as_tensors(seq):
    return [t if isinstance(t, Tensor) else Tensor(t) for t in seq]


def concatenate(tensors, axis: int = 0):
    tensors = _as_tensors(tensors)
    if not tensors:
        raise ValueError("concatenate: need at least one tensor")
    return Concatenate.apply(*tensors, axis=axis % tensors[0].ndim)


def stack(tensors, axis: int = 0):
    tensors = _as_tensors(tensors)
    if not tensors:
        raise ValueError("stack: need at least one tensor")
    return Stack.apply(*tensors, axis=axis % (tensors[0].ndim + 1))


def split(x, indices_or_sections, axis: int = 0):
    """Split into pieces along ``axis`` (NumPy's convention): each piece is a slice of ``x``."""
    n = x.shape[axis]
    if isinstance(indices_or_sections, int):
        if indices_or_sections <= 0 or n % indices_or_sections:
            raise ValueError(f"split: axis {axis} of size {n} does not divide into "
                             f"{indices_or_sections} equal sections")
        step = n // indices_or_sections
        bounds = list(range(0, n + 1, step))
    else:
        bounds = [0, *indices_or_sections, n]
    lead = (slice(None),) * (axis % x.ndim)
    return [x[lead + (slice(lo, hi),)] for lo, hi in zip(bounds[:-1], bounds[1:])]


# =======================================================================================
# Indexing and selection
# =======================================================================================

def plain_index(index):
    """Turn Tensors inside an index into arrays (an index is never differentiated)."""
    if isinstance(index, tuple):
        return tuple(as_array(i) for i in index)
    return as_array(index)


def _is_advanced(index) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(hasattr(p, "shape") or isinstance(p, list) for p in parts)


class GetItem(Function):
    """out = a[index] (basic slicing or integer/boolean arrays).

    da = zeros like a with g scattered back to the indexed places; with integer arrays an
    element picked k times receives the sum of its k gradients (scatter-add).
    """

    @staticmethod
    def forward(ctx, a, index):
        ctx.save(shape=a.shape, dtype=a.dtype, index=index)
        try:
            return a[index]
        except IndexError as e:
            raise IndexError(f"index {index!r} into a tensor of shape {a.shape}: {e}") from None

    @staticmethod
    def backward(ctx, g):
        xp = xp_of(g)
        out = xp.zeros(ctx.shape, dtype=g.dtype)
        if _is_advanced(ctx.index):
            backend.scatter_add(out, ctx.index, g)
        else:
            out[ctx.index] = g
        return out


class Where(Function):
    """out = a where cond else b.   da = g where cond (else 0), db = g where not cond."""

    @staticmethod
    def forward(ctx, cond, a, b):
        ctx.save(cond=cond, a_shape=shape_of(a), b_shape=shape_of(b))
        with shape_errors(lambda: f"where: condition {shape_of(cond)}, x {shape_of(a)} and y "
                                  f"{shape_of(b)} do not broadcast together"):
            return xp_of(a, b, cond).where(cond, a, b)

    @staticmethod
    def backward(ctx, g):
        zero = g.dtype.type(0)
        xp = xp_of(g)
        ga = unbroadcast(xp.where(ctx.cond, g, zero), ctx.a_shape) if ctx.needs_input_grad[1] else None
        gb = unbroadcast(xp.where(ctx.cond, zero, g), ctx.b_shape) if ctx.needs_input_grad[2] else None
        return None, ga, gb


def where(cond, a, b):
    """Elementwise choice: ``a`` where the boolean ``cond`` holds, else ``b``."""
    return Where.apply(as_array(cond), a, b)


class MaskedFill(Function):
    """out = value where mask else a.   da = g where not mask."""

    @staticmethod
    def forward(ctx, a, mask, value):
        if mask.dtype != bool:
            raise TypeError(f"masked_fill: mask must be boolean, got dtype {mask.dtype}")
        ctx.save(mask=mask, shape=a.shape)
        with shape_errors(lambda: f"masked_fill: mask shape {mask.shape} does not broadcast to {a.shape}"):
            return xp_of(a).where(mask, a.dtype.type(value), a)

    @staticmethod
    def backward(ctx, g):
        return unbroadcast(xp_of(g).where(ctx.mask, g.dtype.type(0), g), ctx.shape), None


class Maximum(Function):
    """out = elementwise max(a, b).   The larger input gets g; on a tie each gets g / 2."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save(a=a, b=b)
        with broadcasting("maximum", a, b):
            return xp_of(a, b).maximum(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.a, ctx.b
        share_a = (a > b) + 0.5 * (a == b)
        ga = unbroadcast(g * share_a, shape_of(a)) if ctx.needs_input_grad[0] else None
        gb = unbroadcast(g * (1 - share_a), shape_of(b)) if ctx.needs_input_grad[1] else None
        return ga, gb


def maximum(a, b):
    return Maximum.apply(a, b)


def exp(x):
    return Exp.apply(x)


def log(x):
    return Log.apply(x)


def sqrt(x):
    return Sqrt.apply(x)


def tanh(x):
    return Tanh.apply(x)


def sigmoid(x):
    return Sigmoid.apply(x)


def relu(x):
    return Relu.apply(x)
