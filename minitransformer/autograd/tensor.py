"""The Tensor: an array, the gradient it may collect, and the node that made it.

A Tensor wraps one array (NumPy on the CPU, CuPy on a GPU) in ``.data``. When it
``requires_grad``, ops applied to it record a graph: each result keeps a ``Node`` naming the
``Function`` that produced it, the context that function saved, and where its inputs came
from: their nodes, or the leaf Tensors themselves. The graph holds no array an op did not
save, so an intermediate result is freed once the forward code lets go of it.

``loss.backward()`` runs reverse-mode differentiation over that graph:

1. Order the nodes topologically with an explicit stack (no recursion, so a graph 10,000
   ops deep is fine).
2. Walk them from the loss back to the leaves, calling each function's ``backward`` with
   dL/d(output) and collecting dL/d(input) for each input. A result used twice (``a + a``,
   or a diamond) receives the sum of its gradients before its own node runs.
3. Leaves that require grad accumulate into ``.grad`` (across calls, until zeroed).

After a backward pass the saved arrays are freed unless ``retain_graph=True``.
"""
from __future__ import annotations

import functools
import sys
import weakref

import numpy

from minitransformer import backend
from minitransformer.autograd import hooks as _hooks


class _GradMode:
    enabled = True


_grad_mode = _GradMode()


def _is_float(dtype) -> bool:
    return numpy.dtype(dtype).kind == "f"


class Tensor:
    """An array with an optional gradient and the graph node that produced it."""

    __slots__ = ("data", "grad", "requires_grad", "_node", "__weakref__")
    __array_ufunc__ = None  # ndarray <op> Tensor defers to Tensor's reflected operator

    def __init__(self, data, requires_grad: bool = False):
        if requires_grad and not _is_float(data.dtype):
            raise TypeError(
                f"only floating-point tensors can require gradients, got dtype {data.dtype}; "
                "cast first (e.g. mt.tensor(x, dtype='float32')) or leave requires_grad False"
            )
        self.data = data
        self.grad = None
        self.requires_grad = requires_grad
        self._node = None

    @classmethod
    def _wrap(cls, data, requires_grad: bool):
        """Fast constructor for op outputs (the dtype check is the op's business)."""
        t = object.__new__(cls)
        t.data = data
        t.grad = None
        t.requires_grad = requires_grad
        t._node = None
        return t

    # ------------------------------------------------------------------ properties
    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return self.data.size

    @property
    def device(self) -> str:
        return backend.device_of(self.data)

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        dev = "" if self.device == "cpu" else f", device={self.device!r}"
        body = repr(backend.to_numpy(self.data)).replace("array(", "tensor(", 1)
        if body.endswith(")"):
            body = body[:-1]
        return f"{body}{dev}{grad})"

    # ------------------------------------------------------------------ conversions
    def numpy(self):
        """The values as a NumPy array (copied from the GPU if needed), outside the graph."""
        return backend.to_numpy(self.data)

    def item(self):
        """The value of a one-element tensor as a Python number (through ``backend.to_numpy``, so
        the checks waiting on its device come back in the same transfer: ``backend.check_later``)."""
        if self.data.size != 1:
            raise ValueError(f"item(): tensor has {self.data.size} elements (shape {self.shape}); "
                             "only one-element tensors convert to a Python number")
        return backend.to_numpy(self.data).reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def detach(self) -> "Tensor":
        """The same array, cut from the graph (shares memory; requires no grad)."""
        return Tensor._wrap(self.data, False)

    def to(self, device: str) -> "Tensor":
        """A copy on ``device`` ("cpu" or "cuda"); differentiable (gradients move back)."""
        if device == self.device:
            return self
        return _ops.ToDevice.apply(self, device=device)

    def astype(self, dtype) -> "Tensor":
        """Cast to ``dtype``; differentiable between float types."""
        return _ops.Cast.apply(self, dtype=numpy.dtype(dtype))

    def float(self) -> "Tensor":
        return self.astype(numpy.float32)

    def double(self) -> "Tensor":
        return self.astype(numpy.float64)

    def requires_grad_(self, flag: bool = True) -> "Tensor":
        if flag and not _is_float(self.dtype):
            raise TypeError(f"only floating-point tensors can require gradients, got dtype {self.dtype}")
        self.requires_grad = flag
        return self

    def retain_grad(self) -> None:
        """Keep ``.grad`` on this non-leaf tensor after backward (for inspection); a leaf
        keeps its gradient anyway."""
        if self._node is not None:
            self._node.retained = weakref.ref(self)     # the graph holds nodes, not tensors

    def zero_grad(self) -> None:
        self.grad = None

    # ------------------------------------------------------------------ backward
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into the ``.grad`` of every leaf that requires grad.

        ``grad`` is dL/d(self); it may be omitted only when self has one element (a loss).
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward(): this tensor does not require grad and has no graph; create the "
                "inputs with requires_grad=True (and not under mt.no_grad())"
            )
        xp = backend.xp(self.data)
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward(): grad can be omitted only for a one-element output, but this "
                    f"output has shape {self.shape}; pass grad= an array of that shape "
                    "(or reduce the output to a scalar first)"
                )
            grad = xp.ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else xp.asarray(grad, dtype=self.dtype)
            if grad.shape != self.shape:
                raise ValueError(f"backward(): grad shape {grad.shape} must match the output shape {self.shape}")

        if self._node is None:  # backward on a leaf: d(self)/d(self) = grad
            _accumulate(self, grad)
            return

        order = _topological_order(self._node)
        grads = {id(self._node): grad}
        mine = set()  # keys of pending gradients no one else holds: later ones add into them
        handed = {}   # id -> array: the gradients leaves took without a copy in this pass
        while order:  # outputs before the inputs that made them; popped, so a done node can go
            node = order.pop()
            g = grads.pop(id(node), None)
            mine.discard(id(node))
            if g is None:
                continue  # no path from the loss through here
            retained = node.retained() if node.retained is not None else None
            if retained is not None:
                _accumulate(retained, g)
            if node.released:
                raise RuntimeError(
                    "backward(): trying to go through the graph a second time, but its saved "
                    "arrays were freed by the first backward; pass retain_graph=True to the first"
                )
            if _hooks._observers:   # a FLOP counter or a timer is watching (autograd.observe)
                in_grads = _hooks.run_observed(node.fn, "backward", node.ctx, (g,),
                                                 functools.partial(node.fn.backward, node.ctx, g))
            else:
                in_grads = node.fn.backward(node.ctx, g)
            if not isinstance(in_grads, tuple):
                in_grads = (in_grads,)
            if len(in_grads) != len(node.inputs):
                raise RuntimeError(
                    f"{node.fn.__name__}.backward returned {len(in_grads)} gradients for "
                    f"{len(node.inputs)} inputs; return one (or None) per forward input"
                )
            for inp, ig in zip(node.inputs, in_grads):
                if inp is None or ig is None:
                    continue
                leaf = isinstance(inp, Tensor)
                if leaf and not inp.requires_grad:
                    continue
                shape, dtype = (inp.data.shape, inp.data.dtype) if leaf else (inp.shape, inp.dtype)
                if ig.shape != shape:
                    raise RuntimeError(
                        f"{node.fn.__name__}.backward returned a gradient of shape {ig.shape} "
                        f"for an input of shape {shape}"
                    )
                if ig.dtype != dtype:  # mixed-dtype op: grad follows its input
                    ig = ig.astype(dtype)
                if leaf:
                    owned = _owned(ig, grad, in_grads, node.ctx, handed)
                    if owned and inp.grad is not None:   # ig will be summed into in place
                        owned = not any(pending is ig for pending in grads.values())
                    if owned:
                        handed[id(ig)] = ig
                    _accumulate(inp, ig, owned=owned)
                else:
                    _pend(grads, mine, id(inp), ig, lambda: _owned(ig, g, in_grads, node.ctx, handed))
            if not retain_graph:
                # Free what this node kept: its saved arrays, and its hold on its inputs, so
                # each activation is released as soon as the last op that needs it is done
                # (not when the whole backward ends). A second backward still stops at the
                # released node with the error above.
                node.ctx.release()
                node.released = True
                node.inputs = ()

    # ------------------------------------------------------------------ operators
    def __add__(self, other):
        return _ops.Add.apply(self, other)

    def __radd__(self, other):
        return _ops.Add.apply(other, self)

    def __sub__(self, other):
        return _ops.Sub.apply(self, other)

    def __rsub__(self, other):
        return _ops.Sub.apply(other, self)

    def __mul__(self, other):
        return _ops.Mul.apply(self, other)

    def __rmul__(self, other):
        return _ops.Mul.apply(other, self)

    def __truediv__(self, other):
        return _ops.Div.apply(self, other)

    def __rtruediv__(self, other):
        return _ops.Div.apply(other, self)

    def __neg__(self):
        return _ops.Neg.apply(self)

    def __pow__(self, exponent):
        return _ops.Pow.apply(self, exponent)

    def __rpow__(self, base):
        return _ops.Pow.apply(base, self)

    def __matmul__(self, other):
        return _ops.matmul(self, other)

    def __rmatmul__(self, other):
        return _ops.matmul(other, self)

    def __getitem__(self, index):
        return _ops.GetItem.apply(self, index=_ops.plain_index(index))

    # Comparisons give boolean tensors outside the graph (masks, not values).
    def _compare(self, other, fn):
        other = other.data if isinstance(other, Tensor) else other
        return Tensor._wrap(fn(self.data, other), False)

    def __lt__(self, other):
        return self._compare(other, lambda a, b: a < b)

    def __le__(self, other):
        return self._compare(other, lambda a, b: a <= b)

    def __gt__(self, other):
        return self._compare(other, lambda a, b: a > b)

    def __ge__(self, other):
        return self._compare(other, lambda a, b: a >= b)

    def __eq__(self, other):
        return self._compare(other, lambda a, b: a == b)

    def __ne__(self, other):
        return self._compare(other, lambda a, b: a != b)

    __hash__ = object.__hash__

    def __bool__(self):
        if self.data.size != 1:
            raise ValueError(f"the truth value of a tensor of shape {self.shape} is ambiguous; "
                             "use .any() / .all() on .data, or .item() for one element")
        return bool(self.data.reshape(()).item())

    # ------------------------------------------------------------------ elementwise
    def exp(self):
        return _ops.Exp.apply(self)

    def log(self):
        return _ops.Log.apply(self)

    def sqrt(self):
        return _ops.Sqrt.apply(self)

    def tanh(self):
        return _ops.Tanh.apply(self)

    def sigmoid(self):
        return _ops.Sigmoid.apply(self)

    def relu(self):
        return _ops.Relu.apply(self)

    def gelu(self, approximate: str = "none"):
        return _ops.gelu(self, approximate)

    def abs(self):
        return _ops.Abs.apply(self)

    # ------------------------------------------------------------------ reductions
    def sum(self, axis=None, keepdims: bool = False):
        return _ops.Sum.apply(self, axis=_ops.norm_axis(axis, self.ndim), keepdims=keepdims)

    def mean(self, axis=None, keepdims: bool = False):
        return _ops.Mean.apply(self, axis=_ops.norm_axis(axis, self.ndim), keepdims=keepdims)

    def max(self, axis=None, keepdims: bool = False):
        return _ops.Max.apply(self, axis=_ops.norm_axis(axis, self.ndim), keepdims=keepdims)

    def var(self, axis=None, keepdims: bool = False, ddof: int = 0):
        return _ops.Var.apply(self, axis=_ops.norm_axis(axis, self.ndim), keepdims=keepdims, ddof=ddof)

    # ------------------------------------------------------------------ shape
    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return _ops.Reshape.apply(self, shape=tuple(shape))

    def transpose(self, axis0: int, axis1: int):
        """Swap two axes (as ``torch.transpose``); ``permute`` takes the full order."""
        axes = list(range(self.ndim))
        axes[axis0], axes[axis1] = axes[axis1], axes[axis0]
        return _ops.Permute.apply(self, axes=tuple(axes))

    def permute(self, *axes):
        axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        return _ops.Permute.apply(self, axes=tuple(a % self.ndim for a in axes))

    @property
    def T(self):
        return self.permute(*reversed(range(self.ndim)))

    def expand(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return _ops.Expand.apply(self, shape=tuple(shape))

    def squeeze(self, axis=None):
        return _ops.squeeze(self, axis)

    def unsqueeze(self, axis: int):
        return _ops.unsqueeze(self, axis)

    def masked_fill(self, mask, value):
        return _ops.MaskedFill.apply(self, _ops.as_array(mask), value=value)

    def split(self, indices_or_sections, axis: int = 0):
        return _ops.split(self, indices_or_sections, axis)


def _accumulate(t: Tensor, g, owned: bool = False) -> None:
    """Add ``g`` into ``t.grad``: the first time a copy, so that no array is shared, unless
    ``owned`` says nothing else holds ``g`` (then it is kept as it is, saving a copy of
    every parameter's gradient per step). Later, an owned ``g`` takes the sum in place (a
    tied embedding's second gradient costs no new array); the old ``.grad``, which a caller
    may hold, is only read."""
    if t.grad is None:
        t.grad = g if owned else g.copy()
    elif owned and g.dtype == t.grad.dtype:
        g += t.grad
        t.grad = g
    else:
        t.grad = t.grad + g


def _pend(grads: dict, mine: set, key: int, ig, owned) -> None:
    """Add ``ig`` to the gradient pending for the node ``key`` (an input used by several ops
    gets one from each: a residual stream, the input of the q, k and v projections).

    The sum goes into an array no one else holds where there is one (``key`` in ``mine``,
    or ``ig`` itself when ``owned()`` says so; the first sum's new array is the engine's
    own), not into a new one: an add into memory just written is about three times faster
    than one into memory not in the cache (0.23 vs 0.69 ms for a (1024, 768) float32 array
    here). Sums are the same either way (a + b = b + a, bit for bit).
    """
    pending = grads.get(key)
    if pending is None:
        grads[key] = ig
        if owned():
            mine.add(key)
    elif key in mine:
        pending += ig
    elif owned():
        ig += pending
        grads[key] = ig
        mine.add(key)
    else:
        grads[key] = pending + ig
        mine.add(key)


def _owned(ig, caller_grad, in_grads, ctx, handed) -> bool:
    """Whether the gradient ``ig`` an op's backward returned may become a leaf's ``.grad``
    as it is, or take later sums in place: whether no one else can change it, or see it
    changed.

    It must be writeable and own its memory, or be a view of all of an array that nothing
    else references (a kernel's output reshaped: the view is then the only way to reach
    that memory), and be neither the gradient the caller passed to ``backward`` (ops may
    hand their incoming gradient straight on), nor returned for two inputs at once, nor an
    array the op saved in ``ctx`` (kept with ``retain_graph``), nor one another leaf
    already took in this pass. Such an array is then written in place: a leaf's later
    sums go into it, and so do the other gradients of a non-leaf input (``_pend``).
    """
    if ig is caller_grad or id(ig) in handed or not getattr(ig.flags, "writeable", True):
        return False
    if getattr(ig, "base", None) is not None:
        # The base's references: the view's own and getrefcount's argument (CPython).
        whole = getattr(ig.base, "base", None) is None and ig.base.size == ig.size
        if not (whole and sys.getrefcount(ig.base) == 2):
            return False
    if sum(other is ig for other in in_grads) != 1:
        return False
    return not any(saved is ig for saved in vars(ctx).values())


def _topological_order(root) -> list:
    """Nodes reachable from the node ``root``, each after every node whose output it took.

    Iterative depth-first search: a node is appended once all its inputs' nodes have been.
    """
    order, seen = [], {id(root)}
    stack = [(root, iter(root.inputs))]
    while stack:
        node, children = stack[-1]
        for child in children:
            if isinstance(child, Node) and id(child) not in seen:
                seen.add(id(child))
                stack.append((child, iter(child.inputs)))
                break
        else:
            stack.pop()
            order.append(node)
    return order


def tensor(data, requires_grad: bool = False, dtype=None, device: str = "cpu") -> Tensor:
    """Make a Tensor from an array, a (nested) list or a scalar.

    An array keeps its dtype (float64 stays float64, so gradient checks stay exact); Python
    floats become float32 and Python ints int64, as in PyTorch. ``device`` is "cpu" or "cuda".
    """
    if isinstance(data, Tensor):
        data = data.data
    xp = backend.module_for_device(device)
    if hasattr(data, "dtype") and hasattr(data, "shape"):
        arr = data if dtype is None else data.astype(dtype)
        arr = backend.to_device(arr, device)
    else:
        host = numpy.asarray(data, dtype=dtype)
        if dtype is None and host.dtype == numpy.float64:
            host = host.astype(numpy.float32)
        arr = xp.asarray(host)
    return Tensor(arr, requires_grad=requires_grad)


from minitransformer.autograd import ops as _ops  # noqa: E402  (ops need Tensor defined first)
from minitransformer.autograd.function import Node  # noqa: E402  (as do nodes)
