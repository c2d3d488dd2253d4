"""A kit for testing code built on minitransformer, or any array code with a hand-written backward.

    pip install "minitransformer[testing]"      # hypothesis and pytest; nothing heavy

Checking gradients:

- ``check_vjp(f, f_vjp, args)``: a plain NumPy/CuPy function and its hand-written
  vector-Jacobian product, against finite differences; no Tensor needed.
- ``mt.gradcheck(fn, inputs, ...)``: a function of Tensors through the autograd engine (with
  ``grad_output=``, ``module=``, ``detect_kinks=``, ``raise_exception=False`` for a report).
- ``numerical_jacobian``, ``numerical_vjp``: the finite-difference halves on their own.

Comparing: ``assert_close`` (a bound per element, a message naming the worst one) and
``relative_error``. Generating inputs (needs hypothesis): ``shapes``, ``broadcastable_shapes``,
``float_arrays``, ``tensors``, ``token_ids``. The strict device (``minitransformer.testing.strict``)
catches NumPy-on-CuPy mistakes without a GPU. The op-spec registry (``OpRegistry``, from
``minitransformer.testing.op_specs``) checks every op of a suite the same way, and its
``check_complete(public_functions("mypackage"))`` fails naming every op that has no spec.
The pytest plugin (``minitransformer.testing.plugin``, loaded automatically once the package
is installed) gives the ``gpu`` marker and the fixtures ``array_module``, ``kernel_mode`` and
``strict_device``.
"""
from __future__ import annotations

from minitransformer.autograd.gradcheck import (
    GradcheckError, GradcheckReport, NondifferentiableError, check_vjp, gradcheck, numerical_jacobian,
    numerical_vjp,
)
from minitransformer.testing.compare import assert_close, relative_error
from minitransformer.testing.op_specs import MissingSpecError, OpRegistry, OpSpec, public_functions

_STRATEGIES = ("shapes", "broadcastable_shapes", "float_arrays", "tensors", "token_ids")


def __getattr__(name):
    # The strategies need hypothesis; importing them lazily lets check_vjp and assert_close
    # work in a suite that does not use hypothesis at all.
    if name in _STRATEGIES:
        from minitransformer.testing import strategies

        return getattr(strategies, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["check_vjp", "gradcheck", "numerical_jacobian", "numerical_vjp", "GradcheckError",
           "NondifferentiableError", "GradcheckReport", "assert_close", "relative_error", "OpRegistry", "OpSpec",
           "MissingSpecError", "public_functions", *_STRATEGIES]
