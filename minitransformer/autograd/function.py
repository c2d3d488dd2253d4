"""How an op joins the graph: ``Function``, its ``Context``, and gradient mode.

Every differentiable op, built in or written by a user, is a subclass of ``Function`` with two
static methods that work on plain arrays:

    class Mul(Function):
        @staticmethod
        def forward(ctx, a, b):          # arrays in, one array out
            ctx.save(a=a, b=b)           # keep, by name, only what backward needs
            return a * b

        @staticmethod
        def backward(ctx, grad):         # dL/d(out) in, one dL/d(input) per input out
            return grad * ctx.b, grad * ctx.a

    z = Mul.apply(x, y)                  # Tensors (or constants) in, a Tensor out

``apply`` unwraps Tensors to arrays, runs ``forward``, and, when any input needs a gradient
and gradients are enabled, records a ``Node`` on the output: the function, its context and
where its inputs came from (their nodes, or the leaf Tensors). ``Tensor.backward`` later
walks those nodes in reverse topological order.
Arguments that are not Tensors (Python numbers, arrays, shapes, axes) are passed through
unchanged and receive no gradient; ``backward`` returns None in their place.
"""
from __future__ import annotations

import contextlib

from minitransformer.autograd import hooks as _hooks
from minitransformer.autograd.tensor import Tensor, _grad_mode


class Context:
    """Per-call scratch space: what forward saved for backward, and which inputs need grads."""

    __slots__ = ("__dict__", "needs_input_grad")

    def save(self, **named) -> None:
        """Save arrays (or anything) by name for backward: ``ctx.save(x=x)`` then ``ctx.x``."""
        self.__dict__.update(named)

    def release(self) -> None:
        """Drop what forward saved (called after backward unless the graph is retained)."""
        self.__dict__.clear()


class Node:
    """The record an op leaves on its output: which function, its context, its inputs.

    Of each input the node keeps only what backward needs to route a gradient there: the
    input's own node when an op made it, the Tensor itself when it is a leaf (whose
    ``.grad`` backward fills). It does not keep an input's array: the arrays backward needs
    are the ones the op saved in ``ctx``, and an activation nobody saved (the output of a
    projection that a sum consumed, say) is freed as soon as the forward code drops it.
    ``shape`` and ``dtype`` are those of the op's output, which the gradients coming back
    to it must match; ``retained`` is set by ``Tensor.retain_grad``.
    """

    __slots__ = ("fn", "ctx", "inputs", "released", "shape", "dtype", "retained")

    def __init__(self, fn, ctx, inputs, out):
        self.fn = fn
        self.ctx = ctx
        self.inputs = inputs      # tuple: for each argument, a Node, a leaf Tensor, or None
        self.released = False
        self.shape = out.shape
        self.dtype = out.dtype
        self.retained = None      # a weak reference to the output Tensor, if it retains its grad


def _edge(arg):
    """What a node keeps of one argument: the node that made it, the leaf Tensor, or None."""
    if not isinstance(arg, Tensor):
        return None
    return arg if arg._node is None else arg._node


class Function:
    """Base class of every differentiable op; see the module docstring."""

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError

    @staticmethod
    def flops(ctx, phase: str, *arrays) -> int:
        """Matrix-product FLOPs of this call's ``phase`` ("forward": ``arrays`` are the inputs;
        "backward": ``(grad,)``), read after it ran; 0 for an op that multiplies no matrices.
        FLOP counters ask each op through ``autograd.observe``."""
        return 0

    @classmethod
    def apply(cls, *args, **kwargs):
        arrays = [a.data if isinstance(a, Tensor) else a for a in args]
        track = _grad_mode.enabled and any(isinstance(a, Tensor) and a.requires_grad for a in args)
        ctx = Context()
        ctx.needs_input_grad = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        if _hooks._observers:         # a FLOP counter or a timer is watching (autograd.observe)
            out = _hooks.run_observed(cls, "forward", ctx, tuple(arrays),
                                        lambda: cls.forward(ctx, *arrays, **kwargs))
        else:
            out = cls.forward(ctx, *arrays, **kwargs)
        result = Tensor._wrap(out, track)
        if track:
            result._node = Node(cls, ctx, tuple(map(_edge, args)), out)
        return result


# ---------------------------------------------------------------------------------------
# Gradient mode
# ---------------------------------------------------------------------------------------

class no_grad(contextlib.ContextDecorator):
    """Inside this block (or decorated function) no op records a graph: inference mode."""

    def __enter__(self):
        self._prev = _grad_mode.enabled
        _grad_mode.enabled = False

    def __exit__(self, *exc):
        _grad_mode.enabled = self._prev
        return False


class enable_grad(contextlib.ContextDecorator):
    """Turn graph recording back on inside a ``no_grad`` block."""

    def __enter__(self):
        self._prev = _grad_mode.enabled
        _grad_mode.enabled = True

    def __exit__(self, *exc):
        _grad_mode.enabled = self._prev
        return False


def is_grad_enabled() -> bool:
    return _grad_mode.enabled


# ---------------------------------------------------------------------------------------
# Broadcasting, undone
# ---------------------------------------------------------------------------------------

def unbroadcast(grad, shape):
    """Sum ``grad`` back to ``shape`` after a broadcast forward.

    If ``y = f(a)`` broadcast ``a`` of shape ``shape`` up to ``grad.shape``, each element of
    ``a`` fed every copy of itself, so dL/da sums dL/dy over the broadcast axes: the leading
    axes ``a`` lacked, and the axes where ``a`` had size 1.
    """
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and grad.shape[lead + i] != 1
    )
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


def shape_of(x):
    """The shape of an array or Python scalar (a scalar is a 0-d constant)."""
    return getattr(x, "shape", ())


__all__ = ["Function", "Context", "Node", "no_grad", "enable_grad", "is_grad_enabled",
           "unbroadcast", "shape_of"]
