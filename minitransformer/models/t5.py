"""T5: an encoder-decoder transformer trained to write out corrupted spans.

    encoder:  h = Dropout(E[x]);  h = EncBlock_l(h, bias_enc);  z = Dropout(RMSNorm(h))
    decoder:  g = Dropout(E[y]);  g = DecBlock_l(g, z, bias_dec); g = Dropout(RMSNorm(g))
    logits = (g * d_model^-0.5) E^T      (tied, v1.0)    or    g W_lm^T   (untied, v1.1)

E is one embedding table shared by both stacks. Blocks are pre-norm with RMSNorm, and no
Linear has a bias. Attention scores are *not* divided by sqrt(d_kv) (the query's init std
is smaller by that factor instead), and carry a learned relative position bias: a scalar per
head for each bucket of key_pos - query_pos (``relative_position_bucket``). Each stack
computes it once and every block adds the same bias; the encoder's is bidirectional, the
decoder's one-directional. Cross-attention has none. The feed-forward is ReLU (v1.0) or
gated tanh-GELU (v1.1), with dropout on its hidden activations.

Initialisation (T5, factor f = 1): embedding N(0, f^2); q N(0, f^2 / (d_model d_kv));
k, v N(0, f^2 / d_model); o N(0, f^2 / (H d_kv)); wi N(0, f^2 / d_model);
wo N(0, f^2 / d_ff); relative bias N(0, f^2 / d_model); norm gains f; an untied lm_head N(0, f^2).

Parameter names and their ``transformers`` T5ForConditionalGeneration keys (S = encoder or
decoder; in the decoder the feed-forward is layer.2 and cross-attention layer.1):

    shared.weight                              shared.weight (= {S}.embed_tokens.weight)
    {S}.relative_attention_bias.weight         {S}.block.0.layer.0.SelfAttention.relative_attention_bias.weight
    {S}.blocks.{i}.attn_norm.weight            {S}.block.{i}.layer.0.layer_norm.weight
    {S}.blocks.{i}.attn.{q,k,v,o}.weight       {S}.block.{i}.layer.0.SelfAttention.{q,k,v,o}.weight
    decoder.blocks.{i}.cross_norm.weight       decoder.block.{i}.layer.1.layer_norm.weight
    decoder.blocks.{i}.cross_attn.{q,k,v,o}.weight  decoder.block.{i}.layer.1.EncDecAttention.{q,k,v,o}.weight
    {S}.blocks.{i}.ff_norm.weight              {S}.block.{i}.layer.{1|2}.layer_norm.weight
    {S}.blocks.{i}.ff.{wi|wi_0,wi_1},wo.weight {S}.block.{i}.layer.{1|2}.DenseReluDense.*.weight
    {S}.final_norm.weight                      {S}.final_layer_norm.weight
    lm_head.weight (untied only)               lm_head.weight
"""
from __future__ import annotations

from minitransformer import backend
from minitransformer import functional as F
from minitransformer.models.configs import T5Config
from minitransformer.models.inputs import as_ids, as_mask, get_field
from minitransformer.nn import (
    DecoderBlock, Dropout, Embedding, EncoderBlock, KVCache, Linear, Module, ModuleList,
    RelativePositionBias, RMSNorm, key_padding_mask,
)


class T5Stack(Module):
    """The encoder or the decoder: position bias, blocks, final RMSNorm (on embedded inputs)."""

    def __init__(self, c: T5Config, decoder: bool):
        super().__init__()
        f = c.initializer_factor
        self.is_decoder = decoder
        self.relative_attention_bias = RelativePositionBias(
            c.relative_attention_num_buckets, c.num_heads, c.relative_attention_max_distance,
            bidirectional=not decoder, std=f * c.d_model ** -0.5)
        options = dict(d_head=c.d_kv, norm="rms", norm_first=True, eps=c.layer_norm_epsilon,
                       activation=c.activation, gated=c.is_gated, bias=False, scale=1.0,
                       dropout=c.dropout_rate, attention_dropout=c.dropout_rate,
                       ff_dropout=c.dropout_rate, std=f * c.d_model ** -0.5,
                       q_std=f * (c.d_model * c.d_kv) ** -0.5,
                       attn_out_std=f * (c.num_heads * c.d_kv) ** -0.5,
                       ff_out_std=f * c.d_ff ** -0.5)
        if decoder:
            blocks = (DecoderBlock(c.d_model, c.num_heads, c.d_ff, cross_attention=True, **options)
                      for _ in range(c.decoder_layers))
        else:
            blocks = (EncoderBlock(c.d_model, c.num_heads, c.d_ff, **options)
                      for _ in range(c.num_layers))
        self.blocks = ModuleList(blocks)
        self.final_norm = RMSNorm(c.d_model, c.layer_norm_epsilon)
        self.dropout = Dropout(c.dropout_rate)
        for _, module in self.named_modules():     # transformers starts every norm gain at f, not 1
            if isinstance(module, RMSNorm):
                module.weight.data[...] = f

    def forward(self, x, mask=None, memory=None, memory_mask=None, cache: KVCache | None = None):
        """x (B, T, C) embedded tokens -> (B, T, C).

        mask: the self-attention padding mask (B, 1, 1, Tk); memory/memory_mask: the encoder
        output and its padding mask (decoder only); cache: extended in place when decoding.
        """
        t = x.shape[1]
        past = cache.length if cache is not None else 0
        bias = self.relative_attention_bias(t, past + t, offset=past)       # (1, H, T, past + T)
        x = self.dropout(x)
        for i, block in enumerate(self.blocks):
            slots = None
            if cache is not None:
                slots = (cache.self_attention[i], cache.cross_attention[i])
            x = block(x, mask=mask, position_bias=bias, memory=memory, memory_mask=memory_mask,
                      cache=slots)
        return self.dropout(self.final_norm(x))


class T5(Module):
    """T5 with its language-modelling head: ``forward`` returns decoder logits (B, Td, V)."""

    def __init__(self, config: T5Config):
        super().__init__()
        if not isinstance(config, T5Config):
            raise TypeError(f"T5 needs a T5Config, got {type(config).__name__}")
        self.config = c = config
        f = c.initializer_factor
        self.shared = Embedding(c.vocab_size, c.d_model, std=f * 1.0)
        self.encoder = T5Stack(c, decoder=False)
        self.decoder = T5Stack(c, decoder=True)
        self.lm_head = None if c.tie_word_embeddings else Linear(c.d_model, c.vocab_size, bias=False,
                                                                  std=f * 1.0)

    def encode(self, input_ids, attention_mask=None):
        """Encoder output (B, Te, C) for ids (B, Te)."""
        device = self.device
        ids = as_ids(input_ids, "input_ids", device)
        mask = key_padding_mask(as_mask(attention_mask, "attention_mask", device, ids.shape))
        return self.encoder(self.shared(ids), mask=mask)

    def decode(self, decoder_input_ids, encoder_hidden, attention_mask=None,
               decoder_attention_mask=None, past_key_values=None, use_cache: bool = False):
        """Logits (B, Td, V) of the decoder over ``encoder_hidden`` (B, Te, C).

        attention_mask: the encoder's padding mask (B, Te); decoder_attention_mask: the
        decoder's (B, Td), or with a cache (B, Td) or (B, past + Td). With ``use_cache``
        returns (logits, KVCache); pass it back as ``past_key_values`` with the next ids.
        """
        device = self.device
        ids = as_ids(decoder_input_ids, "decoder_input_ids", device)
        b, t = ids.shape
        if encoder_hidden.shape[0] != b:
            raise ValueError(f"encoder_hidden has batch {encoder_hidden.shape[0]} but "
                             f"decoder_input_ids has {b}")
        memory_mask = key_padding_mask(as_mask(attention_mask, "attention_mask", device,
                                               encoder_hidden.shape[:2]))
        cache = past_key_values
        if cache is None and use_cache:
            cache = KVCache(len(self.decoder.blocks), cross_attention=True)
        if cache is not None:
            mask = key_padding_mask(cache.extend_mask(decoder_attention_mask, t, b, backend.xp(ids)))
        else:
            mask = key_padding_mask(as_mask(decoder_attention_mask, "decoder_attention_mask",
                                            device, (b, t)))
        g = self.decoder(self.shared(ids), mask=mask, memory=encoder_hidden,
                         memory_mask=memory_mask, cache=cache)
        logits = self.head(g)
        return (logits, cache) if use_cache else logits

    def head(self, g):
        """Logits from decoder states: tied with the d_model**-0.5 rescale, or lm_head."""
        if self.lm_head is not None:
            return self.lm_head(g)
        return F.linear(g * self.config.d_model ** -0.5, self.shared.weight)   # (B, T, C) -> (B, T, V)

    def forward(self, input_ids, decoder_input_ids, attention_mask=None, decoder_attention_mask=None):
        encoder_hidden = self.encode(input_ids, attention_mask)
        return self.decode(decoder_input_ids, encoder_hidden, attention_mask, decoder_attention_mask)

    def loss(self, batch: dict, reduction: str = "mean"):
        """Cross-entropy of the decoder logits against ``labels`` (B, Td), -100 ignored.

        batch: input_ids, decoder_input_ids, labels; attention_mask and
        decoder_attention_mask optional.
        """
        ids = get_field(batch, "input_ids", "T5")
        dec = get_field(batch, "decoder_input_ids", "T5")
        labels = get_field(batch, "labels", "T5")
        logits = self(ids, dec, batch.get("attention_mask"), batch.get("decoder_attention_mask"))
        labels = as_ids(labels, "labels", self.device, shape=logits.shape[:2])
        return F.cross_entropy(logits, labels, reduction=reduction)

    def count_targets(self, batch: dict) -> int:
        from minitransformer.models.losses import count_targets
        return count_targets(batch, self.config)
