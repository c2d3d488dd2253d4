"""Parameter counts by formula from the config, without building the model.

Following Kaplan et al. (2020), the *embedding* parameters are the tables whose size
follows the vocabulary or the positions (token, position and token-type tables, T5's
relative-position buckets, an untied output matrix, BERT's output bias); the rest are
*non-embedding* parameters N, the quantity scaling laws are stated in.

One function per family, named in its record of ``minitransformer.families``.
"""
from __future__ import annotations


def gpt_parameters(c) -> tuple:
    """(embedding, non-embedding) parameters of a GPTConfig."""
    d, f, L = c.n_embd, c.d_ff, c.n_layer
    embedding = c.vocab_size * d + c.n_positions * d                 # wte, wpe
    # Per block: ln_1 and ln_2 (2d each), c_attn (3d^2 + 3d), c_proj (d^2 + d),
    # c_fc (d f + f), mlp c_proj (f d + d).
    block = 4 * d * d + 2 * d * f + 9 * d + f
    return embedding, L * block + 2 * d                              # + ln_f


def bert_parameters(c) -> tuple:
    """(embedding, non-embedding) parameters of a BERTConfig (pooler included)."""
    h, f, L = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    embedding = (c.vocab_size + c.max_position_embeddings + c.type_vocab_size) * h
    embedding += c.vocab_size                                        # the MLM output bias
    # Per block: q, k, v, o (h^2 + h each), two LayerNorms (2h each), intermediate
    # (h f + f), output (f h + h).
    block = 4 * h * h + 2 * h * f + 9 * h + f
    head = (h * h + h) + 2 * h                                       # MLM transform + LayerNorm
    pooler = h * h + h
    return embedding, 2 * h + L * block + pooler + head              # embeddings' LayerNorm first


def t5_ff_matrices(c) -> int:
    """Weight matrices of one T5 feed-forward: wi, wo (ReLU) or wi_0, wi_1, wo (gated)."""
    return 3 if c.is_gated else 2


def t5_parameters(c) -> tuple:
    """(embedding, non-embedding) parameters of a T5Config."""
    d, a, f = c.d_model, c.num_heads * c.d_kv, c.d_ff
    ff = t5_ff_matrices(c) * d * f
    embedding = c.vocab_size * d + 2 * c.relative_attention_num_buckets * c.num_heads
    if not c.tie_word_embeddings:
        embedding += c.vocab_size * d                                # lm_head
    encoder_block = 2 * d + 4 * d * a + ff                           # 2 RMSNorms, q k v o, FFN
    decoder_block = 3 * d + 8 * d * a + ff                           # + cross-attention
    non_embedding = c.num_layers * encoder_block + c.decoder_layers * decoder_block + 2 * d
    return embedding, non_embedding


def family_of(config):
    """The ``families`` record of ``config``, or a TypeError naming the config classes."""
    from minitransformer import families     # the registry names the formulas of this package

    return families.of(config)


def count_parameters(config) -> dict:
    """{"total", "embedding", "non_embedding"} parameter counts of ``config``, by formula.

    A tied output layer is counted once (it is the token table). Equals
    ``mt.models.build(config).num_parameters()`` for "total".
    """
    embedding, non_embedding = family_of(config).parameters(config)
    return {"total": embedding + non_embedding, "embedding": embedding,
            "non_embedding": non_embedding}
