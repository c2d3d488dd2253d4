"""Checking a backward pass against finite differences.

For an op y = f(x), backward computes the vector-Jacobian product dL/dx = J^T dL/dy.
Central differences estimate the Jacobian column by column:

    J[:, j] ~ (f(x + eps e_j) - f(x - eps e_j)) / (2 eps)        error O(eps^2)

``gradcheck`` compares the two. The full mode builds both Jacobians (one backward per output
element, one pair of forwards per input element); ``fast_mode`` compares a single number per
input, u^T J v for random unit directions u (outputs) and v (inputs), which costs two
forwards and one backward and catches a wrong backward with probability 1.

Finite differences need float64: in float32 a step of 1e-6 is below the rounding of most
values, and the estimate is noise. Inputs that are not float64 are refused.

Besides the values it checks what silently breaks training: each gradient has its input's
shape and dtype, a zero output gradient gives zero input gradients, and a second backward
gives the same result (within ``nondet_tol``).
"""
from __future__ import annotations

import numpy

from minitransformer import backend
from minitransformer.autograd.function import no_grad
from minitransformer.autograd.tensor import Tensor


class GradcheckError(AssertionError):
    """A backward pass disagrees with finite differences (or breaks a basic rule)."""


def _flat_output(out):
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, (tuple, list)) and all(isinstance(o, Tensor) for o in out):
        return list(out)
    raise TypeError(f"gradcheck: fn must return a Tensor or a tuple of Tensors, got {type(out).__name__}")


def _evaluate(fn, inputs):
    """fn at the current input values, as one flat host float64 vector of all outputs."""
    with no_grad():
        outs = _flat_output(fn(*inputs))
    return numpy.concatenate([backend.to_numpy(o.data).astype(numpy.float64).reshape(-1) for o in outs])


def _backward_with(fn, inputs, diff, out_grads):
    """Run fn forward, then backward with the given output gradients; returns each input's grad."""
    for t in diff:
        t.grad = None
    outs = _flat_output(fn(*inputs))
    tracked = [(o, g) for o, g in zip(outs, out_grads) if o.requires_grad]
    if not tracked:
        raise GradcheckError("gradcheck: no output of fn requires grad; did fn use the inputs?")
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


def _where(flat_index, shape):
    return tuple(int(i) for i in numpy.unravel_index(flat_index, shape)) if shape else ()


def gradcheck(fn, inputs, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
              fast_mode: bool = False, nondet_tol: float = 0.0, seed: int = 0) -> bool:
    """Check the gradients of ``fn(*inputs)`` for every input Tensor that requires grad.

    Returns True, or raises ``GradcheckError`` naming the input, the worst element, and the
    analytical and numerical values. Inputs that require grad must be float64 Tensors.
    """
    if isinstance(inputs, Tensor) or not isinstance(inputs, (tuple, list)):
        inputs = (inputs,)
    inputs = tuple(inputs)
    diff = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad]
    if not diff:
        raise ValueError("gradcheck: no input requires grad; create inputs with requires_grad=True")
    for pos, t in enumerate(inputs):
        if isinstance(t, Tensor) and t.requires_grad and t.dtype != numpy.float64:
            raise TypeError(
                f"gradcheck: input {pos} has dtype {t.dtype}, but finite differences need float64 "
                f"(a step of {eps} is lost in float32 rounding, so the check would compare noise); "
                "cast with .double() or make it with dtype='float64'"
            )
    names = {id(t): f"input {pos} (shape {t.shape})" for pos, t in enumerate(inputs) if isinstance(t, Tensor)}
    saved_grads = [t.grad for t in diff]
    rng = numpy.random.default_rng(seed)
    try:
        with no_grad():
            outs = _flat_output(fn(*inputs))
        n_out = sum(o.size for o in outs)

        # --- basic rules, with one random output gradient u ---------------------------
        u = rng.standard_normal(n_out)
        u_parts = _split_output_vector(u, outs)
        outs, grads = _backward_with(fn, inputs, diff, u_parts)
        for t, g in zip(diff, grads):
            if g is None:
                continue
            if g.shape != t.shape:
                raise GradcheckError(f"gradcheck: gradient of {names[id(t)]} has shape {g.shape}")
            if g.dtype != t.dtype:
                raise GradcheckError(f"gradcheck: gradient of {names[id(t)]} has dtype {g.dtype}, "
                                     f"input has {t.dtype}")
        _, again = _backward_with(fn, inputs, diff, u_parts)
        for t, g1, g2 in zip(diff, grads, again):
            if g1 is not None and g2 is not None:
                gap = float(numpy.max(numpy.abs(backend.to_numpy(g1) - backend.to_numpy(g2)), initial=0.0))
                if gap > nondet_tol:
                    raise GradcheckError(f"gradcheck: backward is not deterministic for {names[id(t)]}: "
                                         f"two runs differ by {gap:.3g} > nondet_tol={nondet_tol}")
        _, zero = _backward_with(fn, inputs, diff, [numpy.zeros_like(p) for p in u_parts])
        for t, g in zip(diff, zero):
            if g is not None and bool(backend.xp(g).any(g != 0)):
                raise GradcheckError(f"gradcheck: a zero output gradient gave a non-zero gradient "
                                     f"for {names[id(t)]}")

        if fast_mode:
            _check_fast(fn, inputs, diff, names, grads, u, eps, atol, rtol, rng)
        else:
            _check_full(fn, inputs, diff, names, outs, n_out, eps, atol, rtol)
    finally:
        for t, g in zip(diff, saved_grads):
            t.grad = g
    return True


def _perturbed(fn, inputs, t, direction, eps):
    """(f(x + eps d) - f(x - eps d)) / (2 eps) for input ``t`` moved along ``direction``."""
    orig = t.data
    xp = backend.xp(orig)
    d = xp.asarray(direction.reshape(orig.shape))
    try:
        t.data = orig + eps * d
        plus = _evaluate(fn, inputs)
        t.data = orig - eps * d
        minus = _evaluate(fn, inputs)
    finally:
        t.data = orig
    return (plus - minus) / (2 * eps)


def _check_full(fn, inputs, diff, names, outs, n_out, eps, atol, rtol):
    for index, t in enumerate(diff):
        n_in = t.size
        numerical = numpy.empty((n_out, n_in))
        for j in range(n_in):
            e = numpy.zeros(n_in)
            e[j] = 1.0
            numerical[:, j] = _perturbed(fn, inputs, t, e, eps)
        analytical = numpy.zeros((n_out, n_in))
        for k in range(n_out):
            onehot = numpy.zeros(n_out)
            onehot[k] = 1.0
            _, grads = _backward_with(fn, inputs, diff, _split_output_vector(onehot, outs))
            g = grads[index]
            if g is not None:
                analytical[k] = backend.to_numpy(g).reshape(-1)
        err = numpy.abs(analytical - numerical) - (atol + rtol * numpy.abs(numerical))
        if (err > 0).any() or not numpy.isfinite(analytical).all():
            k, j = numpy.unravel_index(int(numpy.nanargmax(numpy.where(numpy.isfinite(err), err, numpy.inf))), err.shape)
            raise GradcheckError(
                f"gradcheck: Jacobian mismatch for {names[id(t)]} at input element "
                f"{_where(j, t.shape)}, output element {int(k)}: analytical {analytical[k, j]:.10g}, "
                f"numerical {numerical[k, j]:.10g} (atol={atol}, rtol={rtol})"
            )


def _check_fast(fn, inputs, diff, names, grads, u, eps, atol, rtol, rng):
    for t, g in zip(diff, grads):
        v = rng.standard_normal(t.size)
        v /= numpy.linalg.norm(v) or 1.0
        numerical = float(u @ _perturbed(fn, inputs, t, v, eps))
        analytical = 0.0 if g is None else float(backend.to_numpy(g).reshape(-1) @ v)
        if not abs(analytical - numerical) <= atol + rtol * abs(numerical):
            raise GradcheckError(
                f"gradcheck (fast mode): u^T J v mismatch for {names[id(t)]}: analytical "
                f"{analytical:.10g}, numerical {numerical:.10g} (atol={atol}, rtol={rtol})"
            )
