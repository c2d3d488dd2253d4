"""The basic layers: Linear, Embedding, LayerNorm, RMSNorm, Dropout, FeedForward.

Each layer holds its weights and calls the matching op of ``minitransformer.functional``
(which may run a fast kernel). Weights are drawn from the library's generator
(``backend.rng()``), so ``mt.manual_seed(s)`` before building a model reproduces it exactly.
Every layer takes the standard deviation of its initial weights, because the three model
families initialise differently (GPT-2 and BERT: N(0, 0.02); T5: scaled by fan-in) and
drawing each weight once, with the right scale, keeps building a 124M-parameter model quick.
"""
from __future__ import annotations

import numpy

from minitransformer import backend
from minitransformer import functional as F
from minitransformer.autograd.ops import as_array, where
from minitransformer.nn.module import Module, Parameter


def normal(shape, std: float) -> Parameter:
    """A Parameter of ``shape`` drawn from N(0, std^2) in float32."""
    data = backend.rng().standard_normal(shape, dtype=numpy.float32)
    data *= numpy.float32(std)
    return Parameter(data)


def constant(shape, value: float) -> Parameter:
    return Parameter(numpy.full(shape, value, dtype=numpy.float32))


class Linear(Module):
    """y = x W^T + b, with W of shape (out_features, in_features) as in ``torch.nn.Linear``.

    (GPT-2 checkpoints store the transpose, a "Conv1D" of shape (in, out); converting a
    checkpoint transposes it.)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, std: float = 0.02):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = normal((out_features, in_features), std)
        self.bias = constant((out_features,), 0.0) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)                 # (..., in) -> (..., out)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A table of ``num_embeddings`` learned vectors; ``forward(ids)`` looks rows up.

    ``padding_idx`` (BERT's pad id) starts as a zero row and receives no gradient from the
    lookup, as in ``torch.nn.Embedding``; a tied output layer may still train it.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, std: float = 0.02,
                 padding_idx: int | None = None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = padding_idx
        self.weight = normal((num_embeddings, embedding_dim), std)
        if padding_idx is not None:
            if not 0 <= padding_idx < num_embeddings:
                raise ValueError(f"Embedding: padding_idx {padding_idx} must be in [0, {num_embeddings})")
            self.weight.data[padding_idx] = 0.0

    def forward(self, ids):
        out = F.embedding(ids, self.weight)                         # (...) -> (..., C)
        if self.padding_idx is not None and out.requires_grad:
            # Same values, but rows looked up by the pad id come from a detached copy, so
            # their gradient never reaches the table. (Asking first whether any id is the pad
            # id would save the where on the host and stall a device: ask only on the host.)
            is_pad = (as_array(ids) == self.padding_idx)[..., None]
            if backend.device_of(is_pad) != "cpu" or is_pad.any():
                out = where(is_pad, out.detach(), out)
        return out

    def extra_repr(self):
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


class LayerNorm(Module):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis; weight 1, bias 0 at init."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = constant((dim,), 1.0)
        self.bias = constant((dim,), 0.0) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps}"


class RMSNorm(Module):
    """weight * x / sqrt(mean(x^2) + eps): T5's "LayerNorm", without centring or bias."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = constant((dim,), 1.0)

    def forward(self, x):
        return F.rms_norm(x, self.weight, self.eps)

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps}"


class Dropout(Module):
    """Inverted dropout in training mode, identity in eval mode.

    Each call draws a fresh seed from the library's generator, so a run is reproducible
    after ``mt.manual_seed``.
    """

    def __init__(self, p: float = 0.1):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


ACTIVATIONS = ("relu", "gelu", "gelu_tanh")


def activate(x, name: str):
    """relu; gelu (exact, with erf: BERT); gelu_tanh (the tanh approximation: GPT-2, T5 v1.1)."""
    if name == "relu":
        return F.relu(x)
    if name == "gelu":
        return F.gelu(x, approximate="none")
    return F.gelu(x, approximate="tanh")


class FeedForward(Module):
    """The position-wise feed-forward sublayer.

    Plain:  FFN(x) = act(x W_i^T) W_o^T             (wi: d_model -> d_ff, wo: d_ff -> d_model)
    Gated (Shazeer 2020, T5 v1.1 "gated-gelu"):
            FFN(x) = (act(x W_i0^T) * (x W_i1^T)) W_o^T

    ``dropout`` here is T5's dropout on the hidden activations (before ``wo``); the residual
    dropout after the sublayer belongs to the block. ``out_std`` lets GPT-2 shrink the output
    projection by 1/sqrt(2 n_layer) and T5 scale it by d_ff^-0.5.
    """

    def __init__(self, d_model: int, d_ff: int, activation: str = "gelu", gated: bool = False,
                 bias: bool = True, dropout: float = 0.0, std: float = 0.02,
                 out_std: float | None = None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"FeedForward: activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.activation, self.gated = activation, gated
        if gated:
            self.wi_0 = Linear(d_model, d_ff, bias=bias, std=std)
            self.wi_1 = Linear(d_model, d_ff, bias=bias, std=std)
        else:
            self.wi = Linear(d_model, d_ff, bias=bias, std=std)
        self.wo = Linear(d_ff, d_model, bias=bias, std=std if out_std is None else out_std)
        self.dropout = Dropout(dropout)

    def forward(self, x):
        if self.gated:
            h = activate(self.wi_0(x), self.activation) * self.wi_1(x)   # (B, T, C) -> (B, T, d_ff)
        elif type(self.wo) is Linear and not (self.training and self.dropout.p > 0.0):
            # act and wo as one op that keeps wi's output but not act's: the same values and
            # gradients, a (B, T, d_ff) array less kept for backward (F.activation_linear).
            return F.activation_linear(self.wi(x), self.wo.weight, self.wo.bias,
                                       self.activation)                 # (B, T, C) -> (B, T, C)
        else:
            h = activate(self.wi(x), self.activation)                   # (B, T, C) -> (B, T, d_ff)
        return self.wo(self.dropout(h))                                  # (B, T, d_ff) -> (B, T, C)

    def extra_repr(self):
        return f"activation={self.activation!r}, gated={self.gated}"
