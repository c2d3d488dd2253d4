"""The strict device: arrays that behave like CuPy's where it matters, on a machine with no GPU.

The commonest GPU bug is invisible on a CPU: an op that calls NumPy on its input
(``np.exp(x)``, ``np.asarray(x)``) or mixes a fresh NumPy array into device arithmetic works
on NumPy arrays and fails on CuPy ones. ``StrictArray`` wraps a NumPy array and refuses
exactly those things:

- ``np.asarray(a)`` / ``np.array(a)`` raise (no ``__array__``), as for CuPy arrays;
- NumPy functions and ufuncs called on it raise (``__array_function__`` / ``__array_ufunc__``);
- arithmetic with a NumPy ndarray raises (NumPy scalars and Python numbers are fine).

The matching module ``strict`` mirrors the NumPy namespace, unwrapping its arguments and
wrapping array results, so code that asks ``backend.xp(a)`` for its array module works.
Importing this module registers the device under the name ``"strict"``: ``model.to("strict")``,
``mt.tensor(x, device="strict")`` and ``to_strict(array)`` put things on it. The pytest
plugin's ``strict_device`` fixture does that import for a test.

It also counts what a GPU makes expensive: every device-to-host transfer. On CuPy each of
them waits for the device to finish all queued work (a synchronisation), so a training step
that makes one per micro-batch, or one per parameter, leaves the GPU idle between them. The
strict device counts, as CuPy would transfer:

- conversions to Python: ``bool(a)``, ``int(a)``, ``float(a)``, ``operator.index(a)``,
  ``a.item()``, ``a.tolist()``, ``a.get()``, printing (``repr``, ``str``, ``format``);
- copies to the host through the module (``backend.to_numpy``);
- iterating over an array (each element comes out as a device array, which the loop almost
  always converts: counted once, where the loop starts);
- results whose size depends on the data, which CuPy must read back to allocate:
  ``a[boolean_mask]`` (and ``a[boolean_mask] = v``, where CuPy counts the mask), ``nonzero``,
  ``argwhere``, ``flatnonzero``, ``unique``, ``compress``, ``extract`` and one-argument
  ``where``.

``with count_transfers() as transfers: ...`` counts the transfers made in the block
(``transfers.count``; ``transfers.sites`` says where each came from). ``np.asarray(a)`` is
still refused, not counted, as CuPy refuses it.
"""
from __future__ import annotations

import contextlib
import operator
import threading
import traceback

import numpy as np

from minitransformer import backend


class StrictConversionError(TypeError):
    pass


# ---------------------------------------------------------------------------------------
# Counting transfers to the host
# ---------------------------------------------------------------------------------------

class TransferCount:
    """The device-to-host transfers made inside one ``count_transfers()`` block."""

    def __init__(self):
        self.count = 0
        self.sites = []        # (what, "file:line in function") of each transfer

    def report(self) -> str:
        """One line per transfer: what it was and the library line that made it."""
        return "\n".join(f"  {what} at {where}" for what, where in self.sites) or "  (none)"


_counting = threading.local()     # the open blocks of this thread (data-parallel ranks are threads)


def _active():
    if not hasattr(_counting, "blocks"):
        _counting.blocks = []
    return _counting.blocks


def _where() -> str:
    """The two innermost frames outside this module and ``backend`` (which only moves what
    it is asked to): the line that asked for the transfer and its caller."""
    frames = [f for f in reversed(traceback.extract_stack()[:-2])
              if f.filename not in (__file__, backend.__file__)][:2]
    return " <- ".join(f"{f.filename}:{f.lineno} in {f.name}" for f in frames) or "?"


def _transfer(what: str) -> None:
    """Record one device-to-host transfer in every open ``count_transfers`` block."""
    blocks = _active()
    if blocks:
        site = (what, _where())
        for block in blocks:
            block.count += 1
            block.sites.append(site)


@contextlib.contextmanager
def count_transfers():
    """Count the device-to-host transfers the block makes on the strict device (this thread).

        with count_transfers() as transfers:
            trainer.train_step()
        assert transfers.count == 1, transfers.report()
    """
    block = TransferCount()
    _active().append(block)
    try:
        yield block
    finally:
        _active().remove(block)


def _unwrap(x):
    if isinstance(x, StrictArray):
        return x._a
    if isinstance(x, tuple):
        return tuple(_unwrap(i) for i in x)
    if isinstance(x, list):
        return [_unwrap(i) for i in x]
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return x


def _wrap(x):
    if isinstance(x, np.ndarray):
        return StrictArray(x)
    if isinstance(x, np.generic):       # CuPy returns 0-d arrays where NumPy gives scalars
        return StrictArray(np.asarray(x))
    if isinstance(x, tuple):
        return tuple(_wrap(i) for i in x)
    if isinstance(x, list):
        return [_wrap(i) for i in x]
    return x


def _operand(other, op_name):
    """Unwrap the other operand of an operator, refusing host NumPy arrays."""
    if isinstance(other, StrictArray):
        return other._a
    if isinstance(other, np.ndarray):
        raise StrictConversionError(
            f"strict backend: {op_name} between a device array and a host NumPy array of shape "
            f"{other.shape}; create it with the array module of the inputs (backend.xp)"
        )
    if isinstance(other, (tuple, list)):
        return _unwrap(other)
    return other


class StrictArray:
    __slots__ = ("_a",)
    __array_ufunc__ = None

    def __init__(self, a):
        self._a = a

    def __array__(self, *args, **kwargs):
        raise StrictConversionError(
            "strict backend: implicit conversion of a device array to a NumPy array; use "
            "backend.to_numpy() to copy to the host, or the array module from backend.xp()"
        )

    def __array_function__(self, func, types, args, kwargs):
        raise StrictConversionError(
            f"strict backend: numpy.{func.__name__} called on a device array; call it on the "
            "array module from backend.xp() instead"
        )

    # -- attributes ------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    T = property(lambda self: StrictArray(self._a.T))
    flags = property(lambda self: self._a.flags)
    strides = property(lambda self: self._a.strides)

    def __getattr__(self, name):
        if name.startswith("__"):   # e.g. __array_interface__, which would let NumPy in
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if callable(attr):
            return lambda *a, **k: _wrap(attr(*_unwrap(a), **_unwrap(k)))
        return _wrap(attr)

    def __getitem__(self, index):
        index = _unwrap(index)
        if _has_boolean_index(index):
            _transfer("boolean-mask indexing (the result's size)")
        return _wrap(self._a[index])

    def __setitem__(self, index, value):
        index = _unwrap(index)
        if _has_boolean_index(index):
            _transfer("boolean-mask assignment (CuPy counts the mask)")
        self._a[index] = _operand(value, "assignment")

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        _transfer("iteration")
        return (_wrap(x) for x in self._a)

    def __bool__(self):
        _transfer("bool()")
        return bool(self._a)

    def __int__(self):
        _transfer("int()")
        return int(self._a)

    def __float__(self):
        _transfer("float()")
        return float(self._a)

    def __index__(self):
        _transfer("__index__")
        return operator.index(self._a)

    def item(self, *args):
        _transfer(".item()")
        return self._a.item(*args)

    def tolist(self):
        _transfer(".tolist()")
        return self._a.tolist()

    def get(self):
        """A NumPy copy on the host, as ``cupy.ndarray.get``."""
        _transfer(".get()")
        return self._a.copy()

    def nonzero(self):
        _transfer("nonzero (the result's size)")
        return _wrap(self._a.nonzero())

    def __repr__(self):
        _transfer("repr()")
        return f"StrictArray({self._a!r})"

    def __str__(self):
        _transfer("str()")
        return str(self._a)

    def __format__(self, spec):
        _transfer("format()")
        return format(self._a, spec)

    def __hash__(self):
        return id(self)


def _has_boolean_index(index) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, np.ndarray) and p.dtype == np.bool_ for p in parts)


def _binary(name):
    op = getattr(operator, name)

    def method(self, other):
        return _wrap(op(self._a, _operand(other, name)))

    def reflected(self, other):
        return _wrap(op(_operand(other, name), self._a))

    return method, reflected


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and_", "or_",
              "xor", "lshift", "rshift", "lt", "le", "gt", "ge", "eq", "ne"):
    _m, _r = _binary(_name)
    _dunder = _name.rstrip("_")
    setattr(StrictArray, f"__{_dunder}__", _m)
    if _name not in ("lt", "le", "gt", "ge", "eq", "ne"):
        setattr(StrictArray, f"__r{_dunder}__", _r)
for _name in ("neg", "pos", "invert", "abs"):
    setattr(StrictArray, f"__{_name}__", (lambda op: lambda self: _wrap(op(self._a)))(getattr(operator, _name)))


def _iadd(self, other):
    self._a += _operand(other, "+=")
    return self


def _isub(self, other):
    self._a -= _operand(other, "-=")
    return self


def _imul(self, other):
    self._a *= _operand(other, "*=")
    return self


def _itruediv(self, other):
    self._a /= _operand(other, "/=")
    return self


StrictArray.__iadd__, StrictArray.__isub__ = _iadd, _isub
StrictArray.__imul__, StrictArray.__itruediv__ = _imul, _itruediv


class _Namespace:
    """Mirror of a NumPy namespace (numpy itself, numpy.random, numpy.linalg) over StrictArrays."""

    def __init__(self, target):
        self._target = target

    def __getattr__(self, name):
        attr = getattr(self._target, name)
        if isinstance(attr, type) or not callable(attr):
            return attr                                   # dtypes, constants (inf, newaxis)
        if hasattr(attr, "__module__") and type(attr).__name__ == "module":
            return _Namespace(attr)
        return lambda *a, **k: _wrap(attr(*_unwrap(a), **_unwrap(k)))


# Functions whose result's size depends on the values: CuPy reads the size back first.
_DATA_DEPENDENT = ("nonzero", "argwhere", "flatnonzero", "unique", "compress", "extract")


class StrictModule(_Namespace):
    def __init__(self):
        super().__init__(np)
        self.random = _Namespace(np.random)
        self.linalg = _Namespace(np.linalg)

    def __getattr__(self, name):
        fn = super().__getattr__(name)
        if name not in _DATA_DEPENDENT:
            return fn

        def counted(*args, **kwargs):
            _transfer(f"{name} (the result's size)")
            return fn(*args, **kwargs)

        return counted

    @staticmethod
    def where(condition, *values):
        if not values:
            _transfer("one-argument where (the result's size)")
        return _wrap(np.where(*_unwrap((condition, *values))))

    @staticmethod
    def erf(a):
        from scipy.special import erf

        return _wrap(erf(_unwrap(a)))

    @staticmethod
    def scatter_add(out, index, values):
        np.add.at(_unwrap(out), _unwrap(index), _unwrap(values))

    @staticmethod
    def to_numpy(a):
        _transfer("copy to the host")
        return a._a.copy()

    @staticmethod
    def asarray(a, dtype=None):
        return StrictArray(np.asarray(_unwrap(a), dtype=dtype))


strict = StrictModule()
backend.register_array_module(StrictArray, strict, "strict")


def to_strict(x):
    """Put a NumPy array (or a nested list/tuple of them) on the strict device."""
    if isinstance(x, np.ndarray):
        return StrictArray(x.copy())
    if isinstance(x, (list, tuple)):
        return type(x)(to_strict(i) for i in x)
    return x
