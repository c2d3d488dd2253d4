"""Transformer blocks: residual sublayers of attention and feed-forward.

A block is a stack of sublayers, each wrapped in a residual connection and a normalisation.
Where the normalisation sits is the one real difference between the families:

    post-LN (Vaswani et al. 2017, BERT):   x = Norm(x + Dropout(Sublayer(x)))
    pre-LN  (GPT-2, T5):                   x = x + Dropout(Sublayer(Norm(x)))

Pre-LN keeps an unnormalised residual stream from input to output, which trains stably
without warm-up tricks; such models then need one final norm after the last block.

An encoder block has self-attention and a feed-forward sublayer. A decoder block's
self-attention is causal and, in an encoder-decoder model, a cross-attention sublayer over
the encoder output sits between the two. GPT-2's block is a decoder block without
cross-attention.

Submodule names: ``attn_norm``, ``attn``, ``cross_norm``, ``cross_attn``, ``ff_norm``, ``ff``.
"""
from __future__ import annotations

from minitransformer.nn.attention import MultiHeadAttention
from minitransformer.nn.layers import Dropout, FeedForward, LayerNorm, RMSNorm
from minitransformer.nn.module import Module


class TransformerBlock(Module):
    """One encoder or decoder layer; ``EncoderBlock`` and ``DecoderBlock`` set the defaults.

    norm: "layer" (LayerNorm) or "rms" (RMSNorm); norm_first: pre-LN (True) or post-LN.
    activation / gated: the feed-forward's (see ``FeedForward``). bias: in every projection.
    dropout: after each sublayer; attention_dropout: on attention probabilities;
    ff_dropout: on the feed-forward's hidden activations (T5).
    Init stds: ``std`` for every projection unless overridden by ``q_std`` (the query),
    ``attn_out_std`` (attention output), ``ff_std`` (feed-forward input) or ``ff_out_std``
    (feed-forward output).
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, *, d_head: int | None = None,
                 causal: bool = False, cross_attention: bool = False, norm: str = "layer",
                 norm_first: bool = True, eps: float = 1e-5, activation: str = "gelu",
                 gated: bool = False, bias: bool = True, fused_qkv: bool = False,
                 scale: float | None = None, dropout: float = 0.0, attention_dropout: float = 0.0,
                 ff_dropout: float = 0.0, std: float = 0.02, q_std: float | None = None,
                 attn_out_std: float | None = None, ff_std: float | None = None,
                 ff_out_std: float | None = None):
        super().__init__()
        if norm not in ("layer", "rms"):
            raise ValueError(f"TransformerBlock: norm must be 'layer' or 'rms', got {norm!r}")
        self.norm_first, self.has_cross = norm_first, cross_attention

        def make_norm():
            return LayerNorm(d_model, eps, bias=bias) if norm == "layer" else RMSNorm(d_model, eps)

        self.attn_norm = make_norm()
        self.attn = MultiHeadAttention(d_model, n_heads, d_head, bias=bias, fused_qkv=fused_qkv,
                                       causal=causal, scale=scale, dropout=attention_dropout,
                                       std=std, q_std=q_std, out_std=attn_out_std)
        if cross_attention:
            self.cross_norm = make_norm()
            self.cross_attn = MultiHeadAttention(d_model, n_heads, d_head, bias=bias, causal=False,
                                                 scale=scale, dropout=attention_dropout, std=std,
                                                 q_std=q_std, out_std=attn_out_std)
        self.ff_norm = make_norm()
        ff_std = std if ff_std is None else ff_std
        self.ff = FeedForward(d_model, d_ff, activation, gated=gated, bias=bias, dropout=ff_dropout,
                              std=ff_std, out_std=ff_out_std)
        self.dropout = Dropout(dropout)

    def _residual(self, x, norm, sublayer):
        if self.norm_first:
            return x + self.dropout(sublayer(norm(x)))
        return norm(x + self.dropout(sublayer(x)))

    def forward(self, x, mask=None, position_bias=None, memory=None, memory_mask=None, cache=None):
        """x (B, T, C) -> (B, T, C).

        mask: the self-attention mask (bool, True = allowed; causality is added by the layer);
        position_bias: added to the self-attention scores; memory (B, Tm, C) and memory_mask
        for cross-attention; cache: (self slot, cross slot) of a ``KVCache`` when decoding.
        """
        self_slot, cross_slot = cache if cache is not None else (None, None)
        x = self._residual(x, self.attn_norm,
                           lambda h: self.attn(h, mask=mask, bias=position_bias, cache=self_slot))
        if self.has_cross:
            if memory is None:
                raise ValueError("a decoder block with cross-attention needs memory= the encoder output")
            x = self._residual(x, self.cross_norm,
                               lambda h: self.cross_attn(h, memory, mask=memory_mask, cache=cross_slot))
        return self._residual(x, self.ff_norm, self.ff)


class EncoderBlock(TransformerBlock):
    """Bidirectional self-attention + feed-forward (BERT, the T5 encoder)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, **options):
        options.setdefault("causal", False)
        super().__init__(d_model, n_heads, d_ff, cross_attention=False, **options)


class DecoderBlock(TransformerBlock):
    """Causal self-attention (+ cross-attention over the encoder output) + feed-forward.

    ``cross_attention=False`` gives the decoder-only block of GPT-2.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, cross_attention: bool = True,
                 **options):
        super().__init__(d_model, n_heads, d_ff, causal=True, cross_attention=cross_attention,
                         **options)
