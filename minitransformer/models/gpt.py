"""GPT-2: a decoder-only transformer trained to predict the next token.

    h_0 = Dropout(W_te[x_t] + W_pe[t])                       token + learned position embeddings
    h_l = Block_l(h_{l-1}),  l = 1..L                         pre-LN decoder blocks (causal)
    logits = LayerNorm_f(h_L) W_te^T                          the output layer is the token table

Each block (pre-LN): x += Dropout(Attn(LN_1(x)));  x += Dropout(MLP(LN_2(x))), with the MLP
c_proj(gelu_tanh(c_fc(x))) four times wider inside. Attention uses one fused q/k/v
projection (GPT-2's ``c_attn``) and scores scaled by 1/sqrt(head size).

Initialisation (GPT-2): every weight N(0, 0.02^2), biases 0, LayerNorm 1/0, except the two
projections that write into the residual stream in each block (``attn.o`` and ``ff.wo``),
drawn with std 0.02/sqrt(2 L): the stream sums 2L such terms, and this keeps its variance
independent of depth.

Parameter names and their ``transformers`` GPT2LMHeadModel keys (Linear weights here are
(out, in); GPT-2's Conv1D stores (in, out), so a conversion transposes them):

    wte.weight                      transformer.wte.weight      (= lm_head.weight, tied)
    wpe.weight                      transformer.wpe.weight
    blocks.{i}.attn_norm.*          transformer.h.{i}.ln_1.*
    blocks.{i}.attn.qkv.*           transformer.h.{i}.attn.c_attn.*
    blocks.{i}.attn.o.*             transformer.h.{i}.attn.c_proj.*
    blocks.{i}.ff_norm.*            transformer.h.{i}.ln_2.*
    blocks.{i}.ff.wi.*              transformer.h.{i}.mlp.c_fc.*
    blocks.{i}.ff.wo.*              transformer.h.{i}.mlp.c_proj.*
    final_norm.*                    transformer.ln_f.*
"""
from __future__ import annotations

import math

from minitransformer import backend
from minitransformer import functional as F
from minitransformer.models.configs import GPTConfig
from minitransformer.models.inputs import as_ids, as_mask, get_field, positions
from minitransformer.nn import (
    DecoderBlock, Dropout, Embedding, KVCache, LayerNorm, Module, ModuleList, key_padding_mask,
)


class GPT(Module):
    """GPT-2 with its language-modelling head (the token embedding, tied)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"GPT needs a GPTConfig, got {type(config).__name__}")
        self.config = c = config
        std = c.initializer_range
        residual_std = std / math.sqrt(2 * c.n_layer)
        self.wte = Embedding(c.vocab_size, c.n_embd, std=std)
        self.wpe = Embedding(c.n_positions, c.n_embd, std=std)
        self.drop = Dropout(c.embd_pdrop)
        self.blocks = ModuleList(
            DecoderBlock(c.n_embd, c.n_head, c.d_ff, cross_attention=False, norm="layer",
                         norm_first=True, eps=c.layer_norm_epsilon, activation="gelu_tanh",
                         bias=True, fused_qkv=True, dropout=c.resid_pdrop,
                         attention_dropout=c.attn_pdrop, std=std, attn_out_std=residual_std,
                         ff_out_std=residual_std)
            for _ in range(c.n_layer))
        self.final_norm = LayerNorm(c.n_embd, c.layer_norm_epsilon)

    def hidden_states(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None,
                      use_cache: bool = False):
        """The final normalised hidden states (B, T, C), and the cache (or None)."""
        device = self.device
        ids = as_ids(input_ids, "input_ids", device)
        b, t = ids.shape
        cache = past_key_values
        if cache is None and use_cache:
            cache = KVCache(len(self.blocks))
        past = cache.length if cache is not None else 0
        pos = positions(position_ids, b, t, past, self.config.n_positions, device)
        if cache is not None:
            mask = key_padding_mask(cache.extend_mask(attention_mask, t, b, backend.xp(ids)))
        else:
            mask = key_padding_mask(as_mask(attention_mask, "attention_mask", device, (b, t)))

        x = self.drop(self.wte(ids) + self.wpe(pos))            # (B, T) -> (B, T, C)
        for i, block in enumerate(self.blocks):
            slots = (cache.self_attention[i], None) if cache is not None else None
            x = block(x, mask=mask, cache=slots)
        return self.final_norm(x), cache

    def head(self, h):
        """Next-token logits from hidden states: h W_te^T (no bias)."""
        return F.linear(h, self.wte.weight)                        # (B, T, C) -> (B, T, V)

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None,
                use_cache: bool = False):
        """Logits (B, T, V) for ids (B, T); with ``use_cache``, (logits, KVCache).

        attention_mask (B, T): 1 at real tokens, 0 at padding (with a cache it may also
        cover the cached positions). position_ids default to 0..T-1 after any cached
        positions; a left-padded batch passes its own so that each row starts at 0.
        ``past_key_values``: the cache a previous call returned; it is extended in place.
        """
        h, cache = self.hidden_states(input_ids, attention_mask, position_ids, past_key_values,
                                      use_cache)
        logits = self.head(h)
        return (logits, cache) if use_cache else logits

    def loss(self, batch: dict, reduction: str = "mean"):
        """Causal LM loss: the logits at t predict labels[t + 1]; -100 labels are ignored.

        batch: input_ids, labels (both (B, T)), attention_mask and position_ids optional.
        reduction "sum" returns the summed token loss (divide by ``count_targets``).
        """
        ids, labels = get_field(batch, "input_ids", "GPT"), get_field(batch, "labels", "GPT")
        h, _ = self.hidden_states(ids, batch.get("attention_mask"), batch.get("position_ids"))
        labels = as_ids(labels, "labels", self.device, shape=h.shape[:2])
        # The logits at t are scored against labels[t + 1]; the last position has no next
        # token, so it gets the ignore index (cheaper than slicing h, which copies it).
        xp = backend.xp(labels)
        targets = xp.concatenate([labels[:, 1:], xp.full((labels.shape[0], 1), -100, dtype=labels.dtype)], axis=1)
        # cross_entropy(head(h), targets), a block of rows at a time: the (B, T, V) logits
        # and their gradient are never held whole (F.linear_cross_entropy).
        loss = F.linear_cross_entropy(h, self.wte.weight, targets, reduction=reduction)   # (B, T, C) vs (B, T)
        return loss[:, :-1] if reduction == "none" else loss

    def count_targets(self, batch: dict) -> int:
        from minitransformer.models.losses import count_targets
        return count_targets(batch, self.config)
