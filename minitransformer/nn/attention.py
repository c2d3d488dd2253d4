"""Multi-head attention, its KV cache, padding masks, and T5's relative position bias.

Multi-head attention (Vaswani et al. 2017) projects the queries' and the keys' sources
into H heads of size D, attends in each head, and projects the concatenated heads back:

    head_h = softmax(scale * Q_h K_h^T + bias_h, over allowed keys) V_h
    MHA(x, m) = concat(head_1 .. head_H) W_o^T,   Q = x W_q^T, K = m W_k^T, V = m W_v^T

Self-attention takes keys from x itself (m = x); cross-attention from another sequence
(the encoder's output). The variants the three families need are options:

    bias       projections with biases (GPT-2, BERT) or without (T5)
    fused_qkv  one (3 H D, C) projection ``qkv`` for q, k, v together (GPT-2's c_attn)
               instead of ``q``, ``k``, ``v`` (BERT, T5); one matmul instead of three
    scale      1/sqrt(D) by default; T5 uses 1 (its init absorbs the scale)
    causal     query i sees only keys j <= i (decoders)

Masks are boolean, True where a query may attend to a key. A padding mask comes from the
(B, Tk) attention mask of the inputs (1 = real token) via ``key_padding_mask``.

**Incremental decoding.** A decoder generating token t needs the keys and values of tokens
0..t-1, which do not change. A ``KVCache`` keeps them: each call of a self-attention layer
appends its new keys and values to its slot and attends over the whole; a cross-attention
layer computes its keys and values from the encoder output once and reuses them.
"""
from __future__ import annotations

import math

import numpy

from minitransformer import backend
from minitransformer import functional as F
from minitransformer.autograd.ops import as_array, concatenate
from minitransformer.nn.layers import Linear, normal
from minitransformer.nn.module import Module


# =======================================================================================
# Masks
# =======================================================================================

def key_padding_mask(attention_mask, xp=None):
    """(B, Tk) 0/1 or bool attention mask -> (B, 1, 1, Tk) bool, True at real tokens.

    Returns None when there is no mask or, for a mask on the host, every token is real, so
    attention skips masking. A mask on a device is kept as it is: finding out whether it is
    all ones would wait for the device, and an all-True mask masks nothing.
    """
    if attention_mask is None:
        return None
    m = as_array(attention_mask)
    if not hasattr(m, "dtype"):
        m = numpy.asarray(m)
    if xp is not None and backend.xp(m) is not xp:
        m = xp.asarray(backend.to_numpy(m)) if xp is not numpy else backend.to_numpy(m)
    if m.ndim != 2:
        raise ValueError(f"attention mask must have shape (batch, length) with 1 at real tokens "
                         f"and 0 at padding, got shape {tuple(m.shape)}")
    m = m.astype(bool) if m.dtype != bool else m
    if backend.device_of(m) == "cpu" and m.all():
        return None
    return m[:, None, None, :]                                      # (B, Tk) -> (B, 1, 1, Tk)


# =======================================================================================
# KV cache
# =======================================================================================

class KVSlot:
    """Keys and values one attention layer has seen: (B, H, T, D) Tensors, or None."""

    __slots__ = ("k", "v")

    def __init__(self):
        self.k = self.v = None

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[2]


class KVCache:
    """Everything a decoder must remember between incremental calls.

    ``self_attention[i]`` holds layer i's keys and values so far; ``cross_attention[i]``
    (encoder-decoder models) holds the keys and values of the encoder output, computed on
    the first call. ``key_mask`` is the (B, T) padding mask of every position cached so far
    (None while all are real tokens); a model extends it with each call's attention mask.
    """

    def __init__(self, n_layers: int, cross_attention: bool = False):
        self.self_attention = [KVSlot() for _ in range(n_layers)]
        self.cross_attention = [KVSlot() for _ in range(n_layers)] if cross_attention else None
        self.key_mask = None

    @property
    def length(self) -> int:
        """How many positions the cache holds (the position of the next token)."""
        return self.self_attention[0].length if self.self_attention else 0

    def extend_mask(self, attention_mask, new_length: int, batch: int, xp):
        """The (B, past + new) key mask after a call with ``new_length`` tokens.

        ``attention_mask`` may cover only the new tokens, or the past and the new ones
        (as ``transformers`` expects); None means the new tokens are all real.
        """
        past = self.length
        m = None if attention_mask is None else as_array(attention_mask)
        if m is not None:
            if not hasattr(m, "dtype"):
                m = numpy.asarray(m)
            if backend.xp(m) is not xp:
                m = xp.asarray(backend.to_numpy(m))
            m = m.astype(bool)
            if m.ndim != 2 or m.shape[1] not in (new_length, past + new_length):
                raise ValueError(
                    f"attention_mask shape {tuple(m.shape)} fits neither the {new_length} new "
                    f"tokens nor the {past} cached plus new ones; pass (batch, {new_length}) "
                    f"or (batch, {past + new_length})")
            if m.shape[1] == past + new_length:
                self.key_mask = m
                return m
        old = self.key_mask if self.key_mask is not None else xp.ones((batch, past), dtype=bool)
        new = m if m is not None else xp.ones((batch, new_length), dtype=bool)
        self.key_mask = xp.concatenate([old, new], axis=1)
        return self.key_mask

    def reorder(self, index) -> None:
        """Keep batch rows ``index`` (in that order) everywhere: for beam search."""
        index = as_array(index)
        slots = self.self_attention + (self.cross_attention or [])
        for s in slots:
            if s.k is not None:
                s.k, s.v = s.k[index], s.v[index]
        if self.key_mask is not None:
            self.key_mask = self.key_mask[index]


# =======================================================================================
# Multi-head attention
# =======================================================================================

class MultiHeadAttention(Module):
    """Self- or cross-attention with H heads; see the module docstring for the options.

    Submodules: ``q``, ``k``, ``v`` (or ``qkv`` when fused) and ``o``.
    Init: weights N(0, std^2); ``q_std`` and ``out_std`` override the std of ``q`` and ``o``
    (T5 scales each by its fan-in; GPT-2 shrinks ``o`` with depth).
    """

    def __init__(self, d_model: int, n_heads: int, d_head: int | None = None, bias: bool = True,
                 fused_qkv: bool = False, causal: bool = False, scale: float | None = None,
                 dropout: float = 0.0, std: float = 0.02, q_std: float | None = None,
                 out_std: float | None = None):
        super().__init__()
        if d_head is None:
            if d_model % n_heads:
                raise ValueError(f"MultiHeadAttention: d_model {d_model} is not divisible by "
                                 f"n_heads {n_heads}; choose a divisor or pass d_head")
            d_head = d_model // n_heads
        self.d_model, self.n_heads, self.d_head = d_model, n_heads, d_head
        self.causal, self.fused_qkv = causal, fused_qkv
        self.scale = 1.0 / math.sqrt(d_head) if scale is None else float(scale)
        inner = n_heads * d_head
        if fused_qkv:
            self.qkv = Linear(d_model, 3 * inner, bias=bias, std=std)
        else:
            self.q = Linear(d_model, inner, bias=bias, std=std if q_std is None else q_std)
            self.k = Linear(d_model, inner, bias=bias, std=std)
            self.v = Linear(d_model, inner, bias=bias, std=std)
        self.o = Linear(inner, d_model, bias=bias, std=std if out_std is None else out_std)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MultiHeadAttention: dropout must be in [0, 1), got {dropout}")
        self.dropout = dropout                        # on the attention probabilities, in training

    def _heads(self, x):
        b, t, _ = x.shape
        return x.reshape(b, t, self.n_heads, self.d_head).transpose(1, 2)  # (B, T, HD) -> (B, H, T, D)

    def _merged(self, heads):
        b, _, t, _ = heads.shape
        return heads.transpose(1, 2).reshape(b, t, self.n_heads * self.d_head)  # (B, H, T, D) -> (B, T, HD)

    def forward(self, x, memory=None, mask=None, bias=None, cache: KVSlot | None = None):
        """x (B, Tq, C); memory (B, Tk, C) for cross-attention, None for self-attention.

        mask: bool, broadcastable to (B, H, Tq, Tk), True where allowed (the causal mask is
        added when the layer is causal). bias: added to the scores, e.g. (1, H, Tq, Tk).
        cache: this layer's ``KVSlot`` when decoding incrementally. Returns (B, Tq, C).
        """
        b, tq, _ = x.shape
        cross = memory is not None
        if self.fused_qkv:
            if cross:
                raise ValueError("MultiHeadAttention: a fused qkv projection is for "
                                 "self-attention; build cross-attention with fused_qkv=False")
            qkv = self.qkv(x).reshape(b, tq, 3, self.n_heads, self.d_head)   # (B, T, 3HD) -> (B, T, 3, H, D)
            if cache is None:
                # One op over the packed projection: no split, and one gradient back.
                out = F.packed_self_attention(qkv, mask=mask, is_causal=self.causal, bias=bias,
                                              scale=self.scale,
                                              dropout_p=self.dropout if self.training else 0.0)
                return self.o(self._merged(out))
            qkv = qkv.permute(2, 0, 3, 1, 4)                   # (B, T, 3, H, D) -> (3, B, H, T, D)
            q, k, v = qkv[0], qkv[1], qkv[2]
        else:
            q = self._heads(self.q(x))
            if cross and cache is not None and cache.k is not None:
                k, v = cache.k, cache.v                        # encoder keys: computed once
            else:
                source = memory if cross else x
                k, v = self._heads(self.k(source)), self._heads(self.v(source))
        if cache is not None:
            if not cross and cache.k is not None:
                k = concatenate([cache.k, k], axis=2)          # (B, H, past, D) + new -> all
                v = concatenate([cache.v, v], axis=2)
            cache.k, cache.v = k, v

        out = F.scaled_dot_product_attention(q, k, v, mask=mask, is_causal=self.causal and not cross,
                                             bias=bias, scale=self.scale,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.o(self._merged(out))

    def extra_repr(self):
        return (f"d_model={self.d_model}, n_heads={self.n_heads}, d_head={self.d_head}, "
                f"causal={self.causal}, scale={self.scale:.4g}, dropout={self.dropout}")


# =======================================================================================
# T5's relative position bias
# =======================================================================================

def relative_position_bucket(relative_position, bidirectional: bool = True, num_buckets: int = 32,
                             max_distance: int = 128):
    """Map key_pos - query_pos to one of ``num_buckets`` buckets (T5, Raffel et al. 2020).

    Bidirectional (encoder): half the buckets for keys before the query (offset <= 0) and
    half, shifted by num_buckets/2, for keys after it. One-directional (decoder): keys after
    the query all fall in bucket 0 (the causal mask hides them anyway). Within a side of n
    buckets, distances below n/2 get a bucket each; larger ones share log-spaced buckets up
    to ``max_distance``, and everything farther lands in the last bucket. The logarithm is
    taken in float32, as T5 does, so the boundaries match its buckets exactly.
    """
    xp = backend.xp(relative_position)
    rel = xp.asarray(relative_position).astype(numpy.int64)
    buckets = xp.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (rel > 0).astype(numpy.int64) * num_buckets
        n = xp.abs(rel)
    else:
        n = -xp.minimum(rel, 0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    # Clamped below by max_exact only so that log never sees 0; those entries are small.
    ratio = xp.maximum(n, max_exact).astype(numpy.float32) / numpy.float32(max_exact)
    scaled = (xp.log(ratio) / numpy.float32(math.log(max_distance / max_exact))
              * numpy.float32(num_buckets - max_exact))
    large = xp.minimum(max_exact + scaled.astype(numpy.int64), num_buckets - 1)
    return buckets + xp.where(is_small, n, large)


class RelativePositionBias(Module):
    """A learned scalar per (bucket, head), added to the attention scores of every layer.

    T5 computes it once per stack (in the first block) and every block reuses it; here the
    stack owns it. ``forward(q_len, k_len, offset)`` returns the (1, H, q_len, k_len) bias
    for queries at positions offset .. offset + q_len - 1 against keys 0 .. k_len - 1.
    """

    def __init__(self, num_buckets: int, n_heads: int, max_distance: int, bidirectional: bool,
                 std: float = 1.0):
        super().__init__()
        self.num_buckets, self.n_heads = num_buckets, n_heads
        self.max_distance, self.bidirectional = max_distance, bidirectional
        self.weight = normal((num_buckets, n_heads), std)                # (buckets, H)

    def forward(self, q_len: int, k_len: int, offset: int = 0):
        xp = backend.xp(self.weight.data)
        query = numpy.arange(offset, offset + q_len)[:, None]
        key = numpy.arange(k_len)[None, :]
        buckets = relative_position_bucket(key - query, self.bidirectional, self.num_buckets,
                                           self.max_distance)                 # (Tq, Tk)
        if xp is not numpy:
            buckets = xp.asarray(buckets)
        values = F.embedding(buckets, self.weight)                            # (Tq, Tk) -> (Tq, Tk, H)
        return values.permute(2, 0, 1).unsqueeze(0)                           # -> (1, H, Tq, Tk)

    def extra_repr(self):
        return (f"buckets={self.num_buckets}, heads={self.n_heads}, "
                f"max_distance={self.max_distance}, bidirectional={self.bidirectional}")
