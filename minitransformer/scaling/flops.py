"""What a training step computes: the FLOPs of its matrix products, one account for every user.

A matrix product of an (m, k) by a (k, n) matrix costs 2 m k n FLOPs. A weight matrix with
P entries that every token goes through costs 2P per token forward, and 4P backward (one
product for the input's gradient, one for the weight's), hence

    C = 6 N D   (+ attention)  FLOPs to train on D tokens,

where N counts the parameters that take part in matrix products (the tied output layer is
one product, although its table is also the input embedding; biases, norms and lookups are
not products). Attention adds two products of T x T scores per layer, QK^T and PV, each
2 T d_attn per token forward: 4 T d_attn forward, 8 backward, 12 n_layer d_attn T per token,
counting every (query, key) pair even under a causal mask (the PaLM convention).

The output layer runs on the *logit rows*: every position for GPT (its loss computes the
logits at all T positions and ignores the last target), the masked positions for BERT (its
head gathers them first), every decoder position for T5. ``step_flops`` is the account
``minitransformer info``, the scaling study and the benchmarks share; the counter
(``scaling.counter``) measures the same products on a real step, and the tests hold the two
equal for every family.
"""
from __future__ import annotations

import math

import numpy

from minitransformer.scaling.parameters import family_of, t5_ff_matrices

CHINCHILLA_TOKENS_PER_PARAMETER = 20


def check_shape(batch_size, seq_len, decoder_len=None) -> None:
    """Refuse a batch shape that is not positive integers, naming the argument."""
    for name, v in (("batch_size", batch_size), ("seq_len", seq_len), ("decoder_len", decoder_len)):
        if v is None and name == "decoder_len":
            continue
        if not isinstance(v, (int, numpy.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


# ---------------------------------------------------------------------------------------
# Per family: the logit rows, and the products of one step
# ---------------------------------------------------------------------------------------

def gpt_logit_rows(c, batch_size, seq_len, decoder_len=None, mlm_fraction=0.15) -> float:
    return batch_size * seq_len                  # all T positions (the last one's target is ignored)


def bert_logit_rows(c, batch_size, seq_len, decoder_len=None, mlm_fraction=0.15) -> float:
    return mlm_fraction * batch_size * seq_len   # the masked positions only


def t5_logit_rows(c, batch_size, seq_len, decoder_len=None, mlm_fraction=0.15) -> float:
    return batch_size * (decoder_len or seq_len)


def gpt_step_flops(c, batch_size, seq_len, decoder_len, head_rows) -> dict:
    """Per token 6 (4 d^2 + 2 d f) per block; the tied head 6 V d per logit row; attention."""
    d, layers, n = c.n_embd, c.n_layer, batch_size * seq_len
    weights = 6 * layers * (4 * d * d + 2 * d * c.d_ff) * n + 6 * c.vocab_size * d * head_rows
    return {"weights": weights, "attention": 12 * layers * d * seq_len * n}


def bert_step_flops(c, batch_size, seq_len, decoder_len, head_rows) -> dict:
    """As GPT's body; the MLM head (transform h^2 and vocabulary V h) on the masked rows only.
    The pooler is not run in pre-training."""
    h, layers, n = c.hidden_size, c.num_hidden_layers, batch_size * seq_len
    weights = 6 * layers * (4 * h * h + 2 * h * c.intermediate_size) * n
    weights += 6 * (h * h + c.vocab_size * h) * head_rows
    return {"weights": weights, "attention": 12 * layers * h * seq_len * n}


def t5_step_flops(c, batch_size, seq_len, decoder_len, head_rows) -> dict:
    """Encoder tokens pass the encoder and the decoder's cross-attention k, v projections;
    decoder tokens pass self-attention (q k v o), cross-attention q and o, the feed-forward,
    and attend to the decoder and the encoder tokens."""
    te, td = seq_len, decoder_len or seq_len
    d, a = c.d_model, c.num_heads * c.d_kv
    ff = t5_ff_matrices(c) * d * c.d_ff
    encoder = c.num_layers * (4 * d * a + ff) + c.decoder_layers * 2 * d * a
    decoder = c.decoder_layers * (6 * d * a + ff)
    weights = 6 * batch_size * (te * encoder + td * decoder) + 6 * c.vocab_size * d * head_rows
    attention = 12 * a * batch_size * (c.num_layers * te * te + c.decoder_layers * td * (td + te))
    return {"weights": weights, "attention": attention}


# ---------------------------------------------------------------------------------------
# Any family
# ---------------------------------------------------------------------------------------

def logit_rows(config, batch_size: int, seq_len: int, decoder_len: int | None = None,
               mlm_fraction: float = 0.15) -> float:
    """Rows the output layer runs on in one step: GPT B T, BERT the masked mlm_fraction of
    B T, T5 B T_dec."""
    return family_of(config).logit_rows(config, batch_size, seq_len, decoder_len, mlm_fraction)


def step_flops(config, batch_size: int, seq_len: int, decoder_len: int | None = None,
               mlm_fraction: float = 0.15, head_rows: float | None = None) -> dict:
    """{"weights", "attention", "total"}: matrix-product FLOPs of one forward and backward
    pass over a (batch_size, seq_len) batch (T5: ``decoder_len`` decoder tokens, default
    ``seq_len``). ``head_rows`` overrides the logit rows (e.g. a batch's exact count of
    masked tokens); by default they follow ``logit_rows``."""
    family = family_of(config)
    check_shape(batch_size, seq_len, decoder_len)
    if head_rows is None:
        head_rows = family.logit_rows(config, batch_size, seq_len, decoder_len, mlm_fraction)
    out = family.step_flops(config, batch_size, seq_len, decoder_len, head_rows)
    out = {k: float(v) for k, v in out.items()}
    out["total"] = out["weights"] + out["attention"]
    return out


def training_flops(config, batch_size: int, seq_len: int, decoder_len: int | None = None,
                   mlm_fraction: float = 0.15) -> float:
    """Matrix-product FLOPs of one forward and backward pass over a (batch, seq_len) batch.

    6 x (weights in products) per token + 12 x layers x d_attn x T per token for attention,
    counting every (query, key) pair (a causal kernel that skips masked tiles does about
    half of the attention part). T5: ``seq_len`` encoder and ``decoder_len`` (default
    ``seq_len``) decoder tokens per row; its cross-attention is 12 x d_attn x T_enc per
    decoder token and layer.
    """
    return step_flops(config, batch_size, seq_len, decoder_len, mlm_fraction)["total"]


def training_flops_per_token(config, seq_len: int, decoder_len: int | None = None,
                             mlm_fraction: float = 0.15) -> float:
    """Training FLOPs per token: 6 N + 12 L d T (see ``training_flops``; T5: per encoder token)."""
    return training_flops(config, 1, seq_len, decoder_len, mlm_fraction) / seq_len


def matmul_parameters(config, mlm_fraction: float = 0.15) -> float:
    """Weights that one training token goes through in matrix products (the N of 6 N D).

    The tied output layer counts once; biases, norms, lookups and the (unused in
    pre-training) BERT pooler do not. BERT's head runs only on the masked tokens, a
    ``mlm_fraction`` of them. For T5 this is per decoder token plus per encoder token:
    use ``training_flops``, which knows both lengths.
    """
    return step_flops(config, 1, 1, None, mlm_fraction)["weights"] / 6


def chinchilla_tokens(n_params: float) -> int:
    """Compute-optimal training tokens for a model of ``n_params`` (Hoffmann et al.: about 20 per
    parameter, counting all parameters)."""
    if not n_params > 0:
        raise ValueError(f"chinchilla_tokens: n_params must be positive, got {n_params!r}")
    return int(round(CHINCHILLA_TOKENS_PER_PARAMETER * n_params))


def chinchilla_optimal(compute: float) -> dict:
    """The compute-optimal split of ``compute`` FLOPs: C = 6 N D with D = 20 N, so N = sqrt(C / 120)."""
    if not compute > 0:
        raise ValueError(f"chinchilla_optimal: compute must be positive FLOPs, got {compute!r}")
    n = math.sqrt(compute / (6 * CHINCHILLA_TOKENS_PER_PARAMETER))
    return {"params": n, "tokens": CHINCHILLA_TOKENS_PER_PARAMETER * n}
