"""Optimisers, learning-rate schedules and gradient clipping.

An optimiser holds a list of named parameters and, for each, the state its update rule
needs (Adam's moment estimates, SGD's velocity). ``step()`` reads each ``.grad`` and updates
``.data`` in place; ``zero_grad()`` clears the gradients. ``state_dict()`` gives every state
array by a stable name, so a checkpoint can save and restore it exactly.

Learning-rate schedules are plain callables ``schedule(step) -> lr``.
"""
from __future__ import annotations

import math

import numpy

from minitransformer import backend, kernels
from minitransformer.nn import Embedding, LayerNorm, RMSNorm


def _named(params):
    """Accept parameters, (name, parameter) pairs, or a Module; return (name, parameter) pairs."""
    if hasattr(params, "named_parameters"):
        return list(params.named_parameters())
    out = []
    for i, p in enumerate(params):
        out.append(p if isinstance(p, tuple) else (f"param{i}", p))
    return out


def no_decay_names(model) -> set:
    """Names of parameters that weight decay should leave alone (the usual GPT/BERT recipe):
    biases, normalisation gains, and embedding tables (including position embeddings)."""
    skip = set()
    for mod_name, module in model.named_modules():
        exempt_module = isinstance(module, (Embedding, LayerNorm, RMSNorm))
        for p_name, p in module.__dict__.get("_parameters", {}).items():
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if exempt_module or p.ndim < 2:
                skip.add(full)
    for name, p in model.named_parameters():
        if p.ndim < 2 or "relative_attention_bias" in name:
            skip.add(name)
    return skip


class Optimizer:
    """Shared plumbing: named parameters, per-parameter weight decay, state by name.

    ``SLOTS`` names the per-parameter state tables (attributes of the same names, each
    {parameter name: array}); ``hyperparameters()`` the keyword arguments, besides the
    parameters and ``lr``, that build an optimizer following the same rule (a sharded
    optimizer builds one over its slice this way).
    """

    SLOTS: tuple = ()

    def __init__(self, params, lr: float, weight_decay: float = 0.0, no_decay=()):
        self.params = _named(params)
        if not self.params:
            raise ValueError("optimizer got no parameters; pass model.named_parameters() or a Module")
        self.lr = lr
        self.weight_decay = weight_decay
        self.no_decay = set(no_decay)
        self.step_count = 0

    def zero_grad(self) -> None:
        for _, p in self.params:
            p.grad = None

    def hyperparameters(self) -> dict:
        return {"weight_decay": self.weight_decay, "no_decay": self.no_decay}

    def _decay(self, name) -> float:
        return 0.0 if name in self.no_decay else self.weight_decay

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError

    def _load_slots(self, state, slots):
        """Restore per-parameter arrays saved as '{slot}.{param name}'."""
        expected = {f"{slot}.{name}" for slot in slots for name, _ in self.params}
        missing = sorted(expected - set(state))
        if missing:
            raise ValueError(f"optimizer state is missing {len(missing)} entries, e.g. {missing[:3]}; "
                             "was it saved for another model?")
        for slot in slots:
            table = getattr(self, slot)
            for name, p in self.params:
                arr = state[f"{slot}.{name}"]
                if tuple(arr.shape) != tuple(p.shape):
                    raise ValueError(f"optimizer state {slot}.{name} has shape {tuple(arr.shape)}, "
                                     f"the parameter has {tuple(p.shape)}")
                table[name] = backend.xp(p.data).asarray(arr, dtype=p.dtype)
        self.step_count = int(numpy.asarray(state["step_count"]).reshape(-1)[0])


class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov and Hutter 2019).

    m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2;
    p <- p - lr wd p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

    On the CPU a fused kernel (kernels/adamw.py) does the same arithmetic in one pass.
    """

    SLOTS = ("m", "v")

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, no_decay=()):
        super().__init__(params, lr, weight_decay, no_decay)
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.m = {n: backend.xp(p.data).zeros_like(p.data) for n, p in self.params}
        self.v = {n: backend.xp(p.data).zeros_like(p.data) for n, p in self.params}

    def hyperparameters(self) -> dict:
        return dict(super().hyperparameters(), betas=(self.beta1, self.beta2), eps=self.eps)

    def step(self) -> None:
        self.step_count += 1
        t = self.step_count
        b1, b2, lr = self.beta1, self.beta2, self.lr
        bias1, bias2 = 1.0 - b1 ** t, 1.0 - b2 ** t
        step_size = lr / bias1
        for name, p in self.params:
            g = p.grad
            if g is None:
                continue
            m, v = self.m[name], self.v[name]
            wd = self._decay(name)
            update = kernels.get("adamw_update", p.data)
            if update and _fused_fits(p.data, g, m, v):
                update(p.data, g, m, v, lr, b1, b2, self.eps, wd, bias1, bias2)
                continue
            xp = backend.xp(p.data)
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * (g * g)
            if wd:
                p.data *= 1.0 - lr * wd
            denom = xp.sqrt(v / bias2)
            denom += self.eps
            p.data -= step_size * (m / denom)

    def state_dict(self) -> dict:
        state = {"step_count": numpy.asarray(self.step_count, dtype=numpy.int64)}
        for name, _ in self.params:
            state[f"m.{name}"] = self.m[name]
            state[f"v.{name}"] = self.v[name]
        return state

    def load_state_dict(self, state: dict) -> None:
        self._load_slots(state, ("m", "v"))


def _fused_fits(p, g, m, v) -> bool:
    """The fused update takes arrays of one float dtype and shape, C-contiguous, as they are."""
    return (p.dtype in (numpy.float32, numpy.float64) and g.dtype == p.dtype
            and g.shape == p.shape and all(a.flags.c_contiguous for a in (p, g, m, v)))


class SGD(Optimizer):
    """Stochastic gradient descent with (heavy-ball) momentum and decoupled weight decay.

    u <- mu u + g;   p <- p - lr wd p - lr u
    """

    SLOTS = ("u",)

    def __init__(self, params, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 0.0,
                 no_decay=()):
        super().__init__(params, lr, weight_decay, no_decay)
        self.momentum = momentum
        self.u = {n: backend.xp(p.data).zeros_like(p.data) for n, p in self.params}

    def hyperparameters(self) -> dict:
        return dict(super().hyperparameters(), momentum=self.momentum)

    def step(self) -> None:
        self.step_count += 1
        for name, p in self.params:
            if p.grad is None:
                continue
            u = self.u[name]
            u *= self.momentum
            u += p.grad
            wd = self._decay(name)
            if wd:
                p.data *= 1.0 - self.lr * wd
            p.data -= self.lr * u

    def state_dict(self) -> dict:
        state = {"step_count": numpy.asarray(self.step_count, dtype=numpy.int64)}
        state.update({f"u.{n}": self.u[n] for n, _ in self.params})
        return state

    def load_state_dict(self, state: dict) -> None:
        self._load_slots(state, ("u",))


def clip_grad_norm(params, max_norm: float):
    """Scale all gradients together so their global L2 norm is at most ``max_norm``.

    norm = sqrt(sum over every gradient g of sum(g^2)), accumulated in float64;
    every g <- g * c with c = max_norm / (norm + 1e-6) when norm > max_norm (and is finite),
    else c = 1.

    Returns the norm before clipping as a 0-d array on the gradients' device (float() it to
    log it; inf or nan means the step is bad). Nothing is read back to the host: the sums,
    the norm and the factor c stay on the device, so clipping a model costs no wait for it.
    """
    grads = [p.grad for _, p in _named(params) if p.grad is not None]
    if not grads:
        return numpy.zeros((), numpy.float64)
    xp = backend.xp(grads[0])
    norm = xp.sqrt(xp.stack([(g.astype("float64") ** 2).sum() for g in grads]).sum())    # ()
    if max_norm:
        clip = xp.isfinite(norm) & (norm > max_norm)
        if xp is numpy and not clip:
            return norm                      # on the host the answer is free: skip the pass
        factor = xp.where(clip, max_norm / (norm + 1e-6), 1.0)
        for g in grads:
            g *= factor.astype(g.dtype)      # in g's precision, as a Python float would be
    return norm


# ---------------------------------------------------------------------------------------
# Learning-rate schedules: callables step -> learning rate (step counts from 0)
# ---------------------------------------------------------------------------------------

class WarmupCosine:
    """Linear warmup from 0 to ``lr`` over ``warmup`` steps, then a cosine decay to
    ``min_ratio * lr`` at ``total`` steps (and flat after)."""

    def __init__(self, lr: float, warmup: int, total: int, min_ratio: float = 0.1):
        self.lr, self.warmup, self.total, self.min_ratio = lr, warmup, max(total, 1), min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        floor = self.min_ratio * self.lr
        return floor + (self.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupLinear:
    """Linear warmup, then a linear decay to 0 at ``total`` steps."""

    def __init__(self, lr: float, warmup: int, total: int):
        self.lr, self.warmup, self.total = lr, warmup, max(total, 1)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        return self.lr * max(0.0, (self.total - step) / max(1, self.total - self.warmup))


class InverseSqrt:
    """Linear warmup, then lr * sqrt(warmup / step) (the original Transformer and T5 recipe)."""

    def __init__(self, lr: float, warmup: int):
        self.lr, self.warmup = lr, max(warmup, 1)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        return self.lr * math.sqrt(self.warmup / (step + 1))


SCHEDULES = {"cosine": WarmupCosine, "linear": WarmupLinear, "inverse-sqrt": InverseSqrt}


def make_schedule(name: str, lr: float, warmup: int, total: int):
    if name == "cosine":
        return WarmupCosine(lr, warmup, total)
    if name == "linear":
        return WarmupLinear(lr, warmup, total)
    if name == "inverse-sqrt":
        return InverseSqrt(lr, warmup)
    raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}")
