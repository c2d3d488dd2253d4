"""Checking a backward pass against finite differences.

For an op y = f(x), backward computes the vector-Jacobian product dL/dx = J^T dL/dy.
Central differences estimate the Jacobian column by column:

    J[:, j] ~ (f(x + eps e_j) - f(x - eps e_j)) / (2 eps)        error O(eps^2)

``gradcheck`` compares the two for a function of Tensors; ``check_vjp`` does the same for a
plain array function and the hand-written VJP beside it, with no Tensor in sight. The full
mode builds both Jacobians (one backward per output element, one pair of forwards per input
element); given an output gradient g, it compares J^T g instead (one backward, still one pair
of forwards per input element); ``fast_mode`` compares a single number per input, u^T J v
for random directions u (outputs) and v (inputs), which costs two forwards and one backward
and catches a wrong backward with probability 1.

Finite differences need float64: in float32 a step of 1e-6 is below the rounding of most
values, and the estimate is noise. Inputs that are not float64 are refused.

Besides the values it checks what silently breaks training: each gradient has its input's
shape and dtype, a zero output gradient gives zero input gradients, a second backward gives
the same result (within ``nondet_tol``), and (``check_vjp``) neither function writes into
its inputs.

**Non-differentiable points.** At a kink (ReLU at 0, a tie in max) the central difference
averages two one-sided slopes and matches no backward. When a check fails, the failing
element's one-sided differences (f(x + eps e_j) - f(x)) / eps and (f(x) - f(x - eps e_j)) / eps
are compared; if they disagree, the function has a kink there and the failure is raised as
``NondifferentiableError`` (a ``GradcheckError``), so a property test can steer its inputs
away (``hypothesis.assume``) instead of reporting a wrong backward.

``numerical_jacobian`` and ``numerical_vjp`` are the finite-difference halves on their own.
With ``raise_exception=False`` both checks return a ``GradcheckReport`` instead of raising.
"""
from __future__ import annotations

import dataclasses

import numpy

from minitransformer import backend
from minitransformer.autograd.function import no_grad
from minitransformer.autograd.tensor import Tensor


class GradcheckError(AssertionError):
    """A backward pass disagrees with finite differences (or breaks a basic rule)."""


class NondifferentiableError(GradcheckError):
    """The check failed at a point where the function has no derivative (a kink)."""


@dataclasses.dataclass
class GradcheckReport:
    """What a check found: ``ok``, the failure (if any), and the worst error of each input.

    ``worst`` maps an input's name to {"abs_error", "analytical", "numerical", "element"} at
    its worst element (for the comparisons that ran). Truthy exactly when the check passed.
    """
    ok: bool = True
    failure: str | None = None
    kind: str | None = None            # "mismatch", "nondifferentiable" or "rule"
    worst: dict = dataclasses.field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.ok


# =======================================================================================
# Finite differences on plain array functions
# =======================================================================================

def _flat_host(out) -> numpy.ndarray:
    """An array, or a tuple/list of arrays, as one flat host float64 vector."""
    parts = out if isinstance(out, (tuple, list)) else (out,)
    return numpy.concatenate([numpy.asarray(backend.to_numpy(p), dtype=numpy.float64).reshape(-1)
                              for p in parts])


def _moved(point, i, direction, step):
    """``point`` with argument ``i`` moved by ``step`` along ``direction`` (a host vector)."""
    x = point[i]
    d = backend.xp(x).asarray(direction.reshape(x.shape), dtype=x.dtype)
    return [x + step * d if k == i else p for k, p in enumerate(point)]


def _central(evaluate, point, i, direction, eps):
    """(F(x + eps d) - F(x - eps d)) / (2 eps), moving argument ``i`` only."""
    return (evaluate(_moved(point, i, direction, eps)) - evaluate(_moved(point, i, direction, -eps))) / (2 * eps)


def _one_sided(evaluate, point, i, direction, eps):
    """(right, left) difference quotients of F along ``direction`` at argument ``i``."""
    here = evaluate(point)
    right = (evaluate(_moved(point, i, direction, eps)) - here) / eps
    left = (here - evaluate(_moved(point, i, direction, -eps))) / eps
    return right, left


def _unit(n, j):
    e = numpy.zeros(n)
    e[j] = 1.0
    return e


def _float_argnums(args, argnums):
    if argnums is None:
        return [i for i, a in enumerate(args)
                if hasattr(a, "dtype") and numpy.issubdtype(numpy.dtype(a.dtype), numpy.floating)]
    return [argnums] if isinstance(argnums, int) else list(argnums)


def numerical_jacobian(f, args, eps: float = 1e-6, argnums=None) -> list:
    """Central-difference Jacobians of ``f(*args)`` (arrays in, an array or tuple out).

    Returns one host float64 matrix (n_out, n_in) per argument in ``argnums`` (default:
    every floating-point argument), rows in the output's C order, columns in the input's.
    """
    args = list(args)
    evaluate = lambda point: _flat_host(f(*point))  # noqa: E731
    return [numpy.stack([_central(evaluate, args, i, _unit(args[i].size, j), eps)
                         for j in range(args[i].size)], axis=1).reshape(-1, args[i].size)
            for i in _float_argnums(args, argnums)]


def numerical_vjp(f, args, grad_output, eps: float = 1e-6, argnums=None) -> tuple:
    """Central-difference J^T g for ``f(*args)`` and the output gradient ``grad_output``.

    One host float64 array per argument in ``argnums`` (default: every floating-point
    argument), shaped like it: element j is g . (f(x + eps e_j) - f(x - eps e_j)) / (2 eps).
    """
    args = list(args)
    g = _flat_host(grad_output)
    evaluate = lambda point: _flat_host(f(*point))  # noqa: E731
    return tuple(numpy.array([g @ _central(evaluate, args, i, _unit(args[i].size, j), eps)
                              for j in range(args[i].size)]).reshape(args[i].shape)
                 for i in _float_argnums(args, argnums))


# =======================================================================================
# Comparing analytical with numerical, with kink detection
# =======================================================================================

def _where(flat_index, shape):
    return tuple(int(i) for i in numpy.unravel_index(flat_index, shape)) if shape else ()


def _compare(name, analytical, numerical, atol, rtol, worst, what):
    """The failing position (flat index into the arrays) or None; records the worst error."""
    analytical, numerical = numpy.asarray(analytical, numpy.float64), numpy.asarray(numerical, numpy.float64)
    gap = numpy.abs(analytical - numerical)
    excess = numpy.where(numpy.isfinite(gap), gap - (atol + rtol * numpy.abs(numerical)), numpy.inf)
    k = int(numpy.argmax(excess)) if excess.size else 0
    if excess.size:
        worst[name] = {"abs_error": float(gap.reshape(-1)[k]), "analytical": float(analytical.reshape(-1)[k]),
                       "numerical": float(numerical.reshape(-1)[k]), "element": k, "what": what}
    return k if excess.size and excess.reshape(-1)[k] > 0 else None


def _kink(evaluate, point, i, j, project, atol, rtol, eps):
    """Whether F is non-differentiable at element j of argument i (one-sided slopes differ)."""
    right, left = _one_sided(evaluate, point, i, _unit(point[i].size, j), eps)
    r, l_ = float(project(right)), float(project(left))
    # one-sided quotients carry an O(eps) error a central one does not; allow ten times the tolerance
    return abs(r - l_) > 10 * (atol + rtol * max(abs(r), abs(l_))), r, l_


class _Failure(Exception):
    def __init__(self, message, kind):
        super().__init__(message)
        self.kind = kind


def _raise_mismatch(label, evaluate, point, i, j, project, atol, rtol, eps, detect_kinks, detail):
    """Raise the right failure for a mismatch at element j of argument i."""
    if detect_kinks:
        kink, right, left = _kink(evaluate, point, i, j, project, atol, rtol, eps)
        if kink:
            raise _Failure(f"{label}: not differentiable at {detail}: one-sided derivatives {left:.6g} "
                           f"(left) and {right:.6g} (right) differ; move the input away from the kink "
                           "(e.g. hypothesis.assume) or pass detect_kinks=False", "nondifferentiable")
    raise _Failure(f"{label}: {detail} (atol={atol}, rtol={rtol})", "mismatch")


def _finish(report, failure, raise_exception):
    if failure is not None:
        report.ok, report.failure, report.kind = False, str(failure), failure.kind
        if raise_exception:
            cls = NondifferentiableError if failure.kind == "nondifferentiable" else GradcheckError
            raise cls(str(failure)) from None
    return report if not raise_exception else True


# =======================================================================================
# check_vjp: a plain array function and its hand-written vector-Jacobian product
# =======================================================================================

def _snapshot(args):
    return [backend.to_numpy(a).copy() if hasattr(a, "shape") else None for a in args]


def _unchanged(label, args, before, who):
    for pos, (a, b) in enumerate(zip(args, before)):
        if b is not None and not numpy.array_equal(backend.to_numpy(a), b, equal_nan=True):
            raise _Failure(f"{label}: {who} wrote into argument {pos}; it must leave its inputs as they were",
                           "rule")


def check_vjp(f, f_vjp, args, grad_output=None, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
              fast_mode: bool = False, detect_kinks: bool = True, seed: int = 0, raise_exception: bool = True):
    """Check ``f_vjp`` against finite differences of ``f``, on plain arrays.

    ``f(*args)`` returns an array; ``f_vjp(g, *args)`` returns one gradient per argument (a
    tuple; None for an argument that has none, such as integer targets) for the output
    gradient g. ``grad_output`` fixes g (default: seeded standard normal). Every
    floating-point argument is checked and must be float64. Arrays may be NumPy, CuPy or any
    registered array type; the finite differences run on the arguments' own array module.

    Returns True (or the report, with ``raise_exception=False``); raises ``GradcheckError``
    on a wrong gradient, ``NondifferentiableError`` at a kink.
    """
    label = "check_vjp"
    args = list(args) if isinstance(args, (tuple, list)) else [args]
    report = GradcheckReport()
    checked = _float_argnums(args, None)
    for i in checked:
        if numpy.dtype(args[i].dtype) != numpy.float64:
            raise TypeError(f"{label}: argument {i} has dtype {args[i].dtype}, but finite differences need "
                            f"float64 (a step of {eps} is lost in float32 rounding); cast it with .astype('float64')")
    failure = None
    try:
        before = _snapshot(args)
        y = f(*args)
        _unchanged(label, args, before, "f")
        if not hasattr(y, "shape"):
            raise TypeError(f"{label}: f must return an array, got {type(y).__name__}")
        xp = backend.xp(y)
        if grad_output is None:
            g_host = numpy.random.default_rng(seed).standard_normal(y.shape)
        else:
            g_host = numpy.asarray(backend.to_numpy(grad_output), dtype=numpy.float64)
            if g_host.shape != tuple(y.shape):
                raise ValueError(f"{label}: grad_output has shape {g_host.shape}, f's output has {tuple(y.shape)}")
        g = xp.asarray(g_host, dtype=y.dtype)
        grads = f_vjp(g, *args)
        _unchanged(label, args, before, "f_vjp")
        grads = tuple(grads) if isinstance(grads, (tuple, list)) else (grads,)
        if len(grads) != len(args):
            raise _Failure(f"{label}: f_vjp returned {len(grads)} gradients for {len(args)} arguments; "
                           "return one per argument (None where there is none)", "rule")
        for i in checked:
            if grads[i] is None:
                continue
            if tuple(grads[i].shape) != tuple(args[i].shape) or grads[i].dtype != args[i].dtype:
                raise _Failure(f"{label}: the gradient of argument {i} has shape {tuple(grads[i].shape)} and "
                               f"dtype {grads[i].dtype}; argument {i} has {tuple(args[i].shape)} and "
                               f"{args[i].dtype}", "rule")
        zero = f_vjp(xp.zeros_like(g), *args)
        for i in checked:
            if zero[i] is not None and bool(numpy.any(backend.to_numpy(zero[i]) != 0)):
                raise _Failure(f"{label}: a zero output gradient gave a non-zero gradient for argument {i}", "rule")

        evaluate = lambda point: _flat_host(f(*point))  # noqa: E731
        g_flat = g_host.reshape(-1)
        project = lambda column: g_flat @ column  # noqa: E731
        rng = numpy.random.default_rng(seed + 1)
        for i in checked:
            name = f"argument {i} (shape {tuple(args[i].shape)})"
            analytical = (numpy.zeros(args[i].shape) if grads[i] is None
                          else numpy.asarray(backend.to_numpy(grads[i]), numpy.float64))
            if fast_mode:
                v = rng.standard_normal(args[i].size)
                v /= numpy.linalg.norm(v) or 1.0
                numerical = project(_central(evaluate, args, i, v, eps))
                if _compare(name, analytical.reshape(-1) @ v, numerical, atol, rtol, report.worst, "g^T J v") \
                        is not None:
                    raise _Failure(f"{label} (fast mode): g^T J v mismatch for {name}: analytical "
                                   f"{analytical.reshape(-1) @ v:.10g}, numerical {numerical:.10g} "
                                   f"(atol={atol}, rtol={rtol})", "mismatch")
                continue
            numerical = numpy.array([project(_central(evaluate, args, i, _unit(args[i].size, j), eps))
                                     for j in range(args[i].size)]).reshape(args[i].shape)
            j = _compare(name, analytical, numerical, atol, rtol, report.worst, "J^T g")
            if j is not None:
                _raise_mismatch(label, evaluate, args, i, j, project, atol, rtol, eps, detect_kinks,
                                f"J^T g mismatch for {name} at element {_where(j, args[i].shape)}: analytical "
                                f"{analytical.reshape(-1)[j]:.10g}, numerical {numerical.reshape(-1)[j]:.10g}")
    except _Failure as e:
        failure = e
    return _finish(report, failure, raise_exception)


# =======================================================================================
# gradcheck: a function of Tensors and the autograd engine's backward
# =======================================================================================

def _flat_output(out):
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, (tuple, list)) and all(isinstance(o, Tensor) for o in out):
        return list(out)
    raise TypeError(f"gradcheck: fn must return a Tensor or a tuple of Tensors, got {type(out).__name__}; "
                    "for a function of plain arrays with its own VJP, use minitransformer.testing.check_vjp")


def _backward_with(fn, inputs, diff, out_grads):
    """Run fn forward, then backward with the given output gradients; returns each input's grad."""
    for t in diff:
        t.grad = None
    outs = _flat_output(fn(*inputs))
    tracked = [(o, g) for o, g in zip(outs, out_grads) if o.requires_grad]
    if not tracked:
        raise _Failure("gradcheck: no output of fn requires grad; did fn use the inputs?", "rule")
    for i, (o, g) in enumerate(tracked):
        o.backward(backend.xp(o.data).asarray(g.reshape(o.shape), dtype=o.dtype),
                   retain_graph=i < len(tracked) - 1)
    return outs, [t.grad for t in diff]


def _split_output_vector(vec, outs):
    pieces, start = [], 0
    for o in outs:
        pieces.append(vec[start:start + o.size])
        start += o.size
    return pieces


def _tensor_evaluator(fn, inputs, diff):
    """F(values): fn's outputs, as one host vector, with the checked tensors set to ``values``."""
    def evaluate(values):
        saved = [t.data for t in diff]
        try:
            for t, v in zip(diff, values):
                t.data = v
            with no_grad():
                return _flat_host([o.data for o in _flat_output(fn(*inputs))])
        finally:
            for t, v in zip(diff, saved):
                t.data = v
    return evaluate


def _checked_tensors(inputs, module):
    """The tensors to check, with a name each: inputs that require grad, then module parameters."""
    named = [(t, f"input {pos} (shape {t.shape})") for pos, t in enumerate(inputs)
             if isinstance(t, Tensor) and t.requires_grad]
    if module is not None:
        seen = {id(t) for t, _ in named}
        named += [(p, f"parameter {n} (shape {p.shape})") for n, p in module.named_parameters()
                  if p.requires_grad and id(p) not in seen]
    return named


def gradcheck(fn, inputs, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
              fast_mode: bool = False, nondet_tol: float = 0.0, seed: int = 0, *, grad_output=None,
              module=None, detect_kinks: bool = True, raise_exception: bool = True):
    """Check the gradients of ``fn(*inputs)`` for every input Tensor that requires grad.

    ``module``: also check the gradients of its parameters (which ``fn`` uses); the module
    must be float64 (``module.astype("float64")``). ``grad_output``: the output gradient to
    check J^T g against (an array, or a tuple for several outputs), instead of the whole
    Jacobian. ``detect_kinks``: report a failure at a non-differentiable point as
    ``NondifferentiableError``. ``raise_exception=False``: return a ``GradcheckReport``.

    Returns True, or raises ``GradcheckError`` naming the input, the worst element, and the
    analytical and numerical values. Inputs that require grad must be float64 Tensors.
    """
    if isinstance(inputs, Tensor) or not isinstance(inputs, (tuple, list)):
        inputs = (inputs,)
    inputs = tuple(inputs)
    named = _checked_tensors(inputs, module)
    if not named:
        raise ValueError("gradcheck: no input requires grad; create inputs with requires_grad=True "
                         "(for plain arrays with a hand-written VJP, use minitransformer.testing.check_vjp)")
    for t, name in named:
        if t.dtype != numpy.float64:
            raise TypeError(
                f"gradcheck: {name} has dtype {t.dtype}, but finite differences need float64 "
                f"(a step of {eps} is lost in float32 rounding, so the check would compare noise); "
                "cast with .double() or make it with dtype='float64' (a module: module.astype('float64'))"
            )
    diff = [t for t, _ in named]
    names = {id(t): name for t, name in named}
    saved_grads = [t.grad for t in diff]
    rng = numpy.random.default_rng(seed)
    report, failure = GradcheckReport(), None
    try:
        with no_grad():
            outs = _flat_output(fn(*inputs))
        n_out = sum(o.size for o in outs)

        # --- basic rules, with one output gradient u (given, or random) -----------------
        if grad_output is None:
            u = rng.standard_normal(n_out)
        else:
            u = _flat_host(grad_output)
            if u.size != n_out:
                raise ValueError(f"gradcheck: grad_output has {u.size} elements, fn's outputs have {n_out}")
        u_parts = _split_output_vector(u, outs)
        outs, grads = _backward_with(fn, inputs, diff, u_parts)
        for t, g in zip(diff, grads):
            if g is None:
                continue
            if g.shape != t.shape:
                raise _Failure(f"gradcheck: gradient of {names[id(t)]} has shape {g.shape}", "rule")
            if g.dtype != t.dtype:
                raise _Failure(f"gradcheck: gradient of {names[id(t)]} has dtype {g.dtype}, input has {t.dtype}",
                               "rule")
        _, again = _backward_with(fn, inputs, diff, u_parts)
        for t, g1, g2 in zip(diff, grads, again):
            if g1 is not None and g2 is not None:
                gap = float(numpy.max(numpy.abs(backend.to_numpy(g1) - backend.to_numpy(g2)), initial=0.0))
                if gap > nondet_tol:
                    raise _Failure(f"gradcheck: backward is not deterministic for {names[id(t)]}: "
                                   f"two runs differ by {gap:.3g} > nondet_tol={nondet_tol}", "rule")
        _, zero = _backward_with(fn, inputs, diff, [numpy.zeros_like(p) for p in u_parts])
        for t, g in zip(diff, zero):
            if g is not None and bool(backend.xp(g).any(g != 0)):
                raise _Failure(f"gradcheck: a zero output gradient gave a non-zero gradient for {names[id(t)]}",
                               "rule")

        evaluate = _tensor_evaluator(fn, inputs, diff)
        point = [t.data for t in diff]
        if fast_mode:
            _check_fast(evaluate, point, diff, names, grads, u, eps, atol, rtol, rng, report)
        elif grad_output is not None:
            _check_vjp_of(evaluate, point, diff, names, grads, u, eps, atol, rtol, detect_kinks, report)
        else:
            _check_full(fn, inputs, evaluate, point, diff, names, outs, n_out, eps, atol, rtol, detect_kinks,
                        report)
    except _Failure as e:
        failure = e
    finally:
        for t, g in zip(diff, saved_grads):
            t.grad = g
    return _finish(report, failure, raise_exception)


def _check_full(fn, inputs, evaluate, point, diff, names, outs, n_out, eps, atol, rtol, detect_kinks, report):
    for index, t in enumerate(diff):
        n_in = t.size
        numerical = numpy.stack([_central(evaluate, point, index, _unit(n_in, j), eps) for j in range(n_in)],
                                axis=1).reshape(n_out, n_in)
        analytical = numpy.zeros((n_out, n_in))
        for k in range(n_out):
            _, grads = _backward_with(fn, inputs, diff, _split_output_vector(_unit(n_out, k), outs))
            g = grads[index]
            if g is not None:
                analytical[k] = backend.to_numpy(g).reshape(-1)
        flat = _compare(names[id(t)], analytical, numerical, atol, rtol, report.worst, "Jacobian")
        if flat is not None:
            k, j = divmod(flat, n_in)
            _raise_mismatch("gradcheck", evaluate, point, index, j, lambda column, k=k: column[k], atol, rtol,
                            eps, detect_kinks,
                            f"Jacobian mismatch for {names[id(t)]} at input element {_where(j, t.shape)}, output "
                            f"element {int(k)}: analytical {analytical[k, j]:.10g}, numerical {numerical[k, j]:.10g}")


def _check_vjp_of(evaluate, point, diff, names, grads, u, eps, atol, rtol, detect_kinks, report):
    project = lambda column: u @ column  # noqa: E731
    for index, (t, g) in enumerate(zip(diff, grads)):
        numerical = numpy.array([project(_central(evaluate, point, index, _unit(t.size, j), eps))
                                 for j in range(t.size)])
        analytical = numpy.zeros(t.size) if g is None else numpy.asarray(backend.to_numpy(g), numpy.float64)
        j = _compare(names[id(t)], analytical.reshape(-1), numerical, atol, rtol, report.worst, "J^T g")
        if j is not None:
            _raise_mismatch("gradcheck", evaluate, point, index, j, project, atol, rtol, eps, detect_kinks,
                            f"J^T g mismatch for {names[id(t)]} at input element {_where(j, t.shape)}: analytical "
                            f"{analytical.reshape(-1)[j]:.10g}, numerical {numerical[j]:.10g}")


def _check_fast(evaluate, point, diff, names, grads, u, eps, atol, rtol, rng, report):
    for index, (t, g) in enumerate(zip(diff, grads)):
        v = rng.standard_normal(t.size)
        v /= numpy.linalg.norm(v) or 1.0
        numerical = float(u @ _central(evaluate, point, index, v, eps))
        analytical = 0.0 if g is None else float(backend.to_numpy(g).reshape(-1) @ v)
        if _compare(names[id(t)], analytical, numerical, atol, rtol, report.worst, "u^T J v") is not None:
            raise _Failure(
                f"gradcheck (fast mode): u^T J v mismatch for {names[id(t)]}: analytical "
                f"{analytical:.10g}, numerical {numerical:.10g} (atol={atol}, rtol={rtol})", "mismatch")
