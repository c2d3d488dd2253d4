"""A registry of gradient-check specs, one per differentiable op, and the check that none is missing.

A suite with many ops wants every one of them gradient-checked the same way, and wants to
know when someone adds an op and forgets its check. The registry gives both:

- a **spec** says how to draw the inputs of one op (the shapes, broadcasting ones included,
  and the domain where the op is smooth: away from kinks and poles), the tolerances its
  check needs, and which ops it exercises (``covers``: ``Function`` classes or public
  function names);
- one property test runs ``mt.gradcheck`` over every spec (``registry.property_test(spec)``
  with hypothesis, or ``registry.check(spec, draw)`` with any source of examples);
- ``registry.missing(ops)`` names every op of ``ops`` that no spec covers, and
  ``registry.check_complete(ops)`` fails with those names; ``public_functions(package)``
  collects the ``Function`` subclasses a package defines, so an op added without a spec
  fails the suite instead of going unchecked.

A spec's draw function takes hypothesis' ``draw`` and returns ``(fn, arrays)``: a function of
Tensors and the float64 arrays to call it with. Constants it combines them with (masks,
targets, index arrays) go through ``registry.constant(a)``, so that the same specs can run on
another device (``with registry.placing(to_device): ...``)::

    from minitransformer.testing.op_specs import OpRegistry, public_functions

    OPS = OpRegistry()

    @OPS.spec("cube", covers=[Cube])
    def _(draw):
        return (lambda x: Cube.apply(x)), [draw(float_arrays((2, 3)))]

    @pytest.mark.parametrize("spec", OPS, ids=OPS.names())
    def test_gradient(spec):
        OPS.property_test(spec)()

    def test_every_op_has_a_spec():
        OPS.check_complete(public_functions("mypackage"))

Nothing here imports hypothesis until ``property_test`` is called.
"""
from __future__ import annotations

import contextlib
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator


@dataclass
class OpSpec:
    """How to gradient-check one op (or a few that are checked together)."""

    name: str                       # unique within its registry; the test id
    draw: Callable                  # (draw) -> (fn of Tensors, list of float64 input arrays)
    covers: tuple = ()              # Function classes and public function names exercised
    atol: float = 1e-5              # gradcheck's absolute tolerance
    rtol: float = 1e-3              # gradcheck's relative tolerance
    fast_mode: bool = False         # random directions instead of full Jacobians (large inputs)
    examples: int = 15              # hypothesis examples per run
    extra: dict = field(default_factory=dict)   # anything a suite wants to keep beside a spec


class MissingSpecError(AssertionError):
    """Public ops that no spec covers (an AssertionError, so a test reports it as a failure)."""


def _op_name(op) -> str:
    """A Function class by its qualified name, a function name as it is."""
    return getattr(op, "__qualname__", None) or str(op)


class OpRegistry:
    """Gradient-check specs, in registration order; iterate it to get them."""

    def __init__(self, atol: float = 1e-5, rtol: float = 1e-3, examples: int = 15):
        # Defaults for the specs registered without their own; gradcheck's, unless a suite
        # knows its finite-difference error well enough to ask for tighter ones.
        self.atol, self.rtol, self.examples = atol, rtol, examples
        self._specs: dict[str, OpSpec] = {}
        self._put = None

    # ----------------------------------------------------------------- registering
    def register(self, spec: OpSpec) -> OpSpec:
        """Add ``spec``; a second spec of the same name is refused (test ids must be unique)."""
        if not isinstance(spec, OpSpec):
            raise TypeError(f"register expects an OpSpec, got {type(spec).__name__}; "
                            f"or use the @registry.spec(name, covers=...) decorator")
        if spec.name in self._specs:
            raise ValueError(f"a spec named {spec.name!r} is already registered; give each spec its own name")
        self._specs[spec.name] = spec
        return spec

    def spec(self, name: str, covers: Iterable = (), **options) -> Callable:
        """A decorator registering the draw function below it as the spec ``name``.

        ``options``: ``atol``, ``rtol``, ``fast_mode``, ``examples``, ``extra`` (see ``OpSpec``);
        tolerances and examples not given are the registry's. Returns the draw function.
        """
        options = {"atol": self.atol, "rtol": self.rtol, "examples": self.examples, **options}

        def deco(draw_fn):
            self.register(OpSpec(name=name, draw=draw_fn, covers=tuple(covers), **options))
            return draw_fn
        return deco

    # ----------------------------------------------------------------- looking up
    def __iter__(self) -> Iterator[OpSpec]:
        return iter(list(self._specs.values()))

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, name) -> bool:
        return name in self._specs

    def __getitem__(self, name: str) -> OpSpec:
        if name not in self._specs:
            raise KeyError(f"no spec named {name!r}; registered: {', '.join(self._specs) or 'none'}")
        return self._specs[name]

    def names(self) -> list[str]:
        """The specs' names, in registration order (ids for ``pytest.mark.parametrize``)."""
        return list(self._specs)

    def covered(self) -> set:
        """Every op some spec covers."""
        return {op for s in self._specs.values() for op in s.covers}

    # ----------------------------------------------------------------- completeness
    def missing(self, ops: Iterable) -> list[str]:
        """The names of the ops in ``ops`` that no spec covers, sorted."""
        covered = self.covered()
        return sorted({_op_name(op) for op in ops if op not in covered})

    def check_complete(self, ops: Iterable) -> None:
        """Raise ``MissingSpecError`` naming every op of ``ops`` that no spec covers."""
        missing = self.missing(ops)
        if missing:
            raise MissingSpecError(
                f"{len(missing)} public op{'s' if len(missing) > 1 else ''} without a gradient-check spec: "
                f"{', '.join(missing)}; register one with @registry.spec(name, covers=[op]) "
                f"(see minitransformer.testing.op_specs)")

    # ----------------------------------------------------------------- devices
    def constant(self, a):
        """A constant array (mask, targets, indices) on the device the specs are being run on."""
        return a if self._put is None else self._put(a)

    @contextlib.contextmanager
    def placing(self, put: Callable):
        """While inside, ``constant`` passes arrays through ``put`` (e.g. ``to_strict``)."""
        old, self._put = self._put, put
        try:
            yield self
        finally:
            self._put = old

    # ----------------------------------------------------------------- running
    def check(self, spec: OpSpec | str, draw: Callable, **gradcheck_options):
        """Draw one example of ``spec`` and gradient-check it; True, or ``GradcheckError``.

        The drawn arrays become Tensors that require grad; ``gradcheck_options`` go to
        ``mt.gradcheck`` over the spec's own (e.g. ``fast_mode=True``).
        """
        import minitransformer as mt

        spec = self[spec] if isinstance(spec, str) else spec
        fn, arrays = spec.draw(draw)
        inputs = [mt.tensor(a, requires_grad=True) for a in arrays]
        options = {"atol": spec.atol, "rtol": spec.rtol, "fast_mode": spec.fast_mode, **gradcheck_options}
        return mt.gradcheck(fn, inputs, **options)

    def property_test(self, spec: OpSpec | str, examples: int | None = None, **gradcheck_options) -> Callable:
        """A hypothesis test of ``spec`` (``examples`` of them, by default the spec's); call it to run."""
        from hypothesis import given, settings
        from hypothesis import strategies as st

        spec = self[spec] if isinstance(spec, str) else spec

        @settings(max_examples=examples or spec.examples)
        @given(st.data())
        def test(data):
            self.check(spec, data.draw, **gradcheck_options)
        return test


def public_functions(package: str, also: Iterable[str] = (), optional: Iterable[str] = ()) -> set:
    """Every ``mt.Function`` subclass defined in ``package`` (and the packages in ``also``).

    Imports every module below them first, so that an op is found wherever it is defined. A
    module that fails to import for want of one of the ``optional`` top-level packages (say
    ``"cupy"``) is skipped; any other import error is raised.
    """
    from minitransformer.autograd.function import Function

    optional = tuple(optional)
    roots = [package, *also]
    for root in roots:
        pkg = importlib.import_module(root)
        for info in pkgutil.walk_packages(getattr(pkg, "__path__", []), prefix=root + "."):
            if info.name.endswith("__main__"):
                continue
            try:
                importlib.import_module(info.name)
            except ImportError as e:
                if not (optional and (e.name or "").startswith(optional)):
                    raise
    seen, todo = set(), list(Function.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls not in seen:
            seen.add(cls)
            todo.extend(cls.__subclasses__())
    return {c for c in seen if any(c.__module__ == r or c.__module__.startswith(r + ".") for r in roots)}
