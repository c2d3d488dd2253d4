"""What a model costs, and how its loss falls with size: accounting and scaling laws.

**Parameters.** Counted by formula from the config, without building the model. Following
Kaplan et al. (2020), the *embedding* parameters are the tables whose size follows the
vocabulary or the positions (token, position and token-type tables, T5's relative-position
buckets, an untied output matrix, BERT's output bias); the rest are *non-embedding*
parameters N, the quantity scaling laws are stated in.

**Compute.** A matrix product of an (m, k) by a (k, n) matrix costs 2 m k n FLOPs. A weight
matrix with P entries that every token goes through costs 2P per token forward, and 4P
backward (one product for the input's gradient, one for the weight's), hence

    C = 6 N D   (+ attention)  FLOPs to train on D tokens,

where N counts the parameters that take part in matrix products (the tied output layer is
one product, although its table is also the input embedding; biases, norms and lookups are
not products). Attention adds two products of T x T scores per layer, QK^T and PV, each
2 T d_attn per token forward: 4 T d_attn forward, 8 backward, 12 n_layer d_attn T per token.

**Memory.** Training in float32 with AdamW keeps, per parameter, the weight (4 bytes), its
gradient (4) and Adam's two moments (8): 16 bytes. On top come the activations: every
array the autograd graph holds between the forward and the backward pass. They are counted
here op by op as this library's autograd stores them (each op's output that is the input
of another op, and what an op saves for its backward), so they grow with batch x sequence
x width, plus the attention scores (B H T^2) where attention is not tiled. The peak comes
during the backward pass, which adds its largest temporary: the gradient of the logits, or
the intermediate arrays of the activation function's derivative.

**Scaling laws.** ``fit_power_law`` fits L(N) = E + A / N^alpha (Chinchilla's form: E is
the loss no model size removes) by least squares, with confidence intervals;
``fit_pure_power_law`` fits Kaplan's L(N) = (N_c / N)^alpha. ``run_sweep`` trains a ladder
of model sizes on the same data and token budget and collects the points to fit;
``minitransformer scale`` drives it and writes the report.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy

# Published reference values (see the references in the module docstring).
KAPLAN_ALPHA_N = 0.076          # L(N) = (N_c / N)^alpha_N, non-embedding parameters
KAPLAN_ALPHA_C = 0.050          # L(C_min) along the compute-optimal frontier
CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
CHINCHILLA_TOKENS_PER_PARAMETER = 20


def _family(config) -> str:
    family = getattr(config, "family", None)
    if family not in ("gpt", "bert", "t5"):
        raise TypeError(f"expected a GPTConfig, BERTConfig or T5Config, got {type(config).__name__}; "
                        "get one with mt.models.preset(name)")
    return family


def _itemsize(dtype) -> int:
    try:
        return numpy.dtype(dtype).itemsize
    except TypeError:
        raise ValueError(f"dtype {dtype!r} is not a NumPy dtype; pass e.g. 'float32'") from None


# =======================================================================================
# Parameters
# =======================================================================================

def _gpt_parameters(c):
    d, f, L = c.n_embd, c.d_ff, c.n_layer
    embedding = c.vocab_size * d + c.n_positions * d                 # wte, wpe
    # Per block: ln_1 and ln_2 (2d each), c_attn (3d^2 + 3d), c_proj (d^2 + d),
    # c_fc (d f + f), mlp c_proj (f d + d).
    block = 4 * d * d + 2 * d * f + 9 * d + f
    return embedding, L * block + 2 * d                              # + ln_f


def _bert_parameters(c):
    h, f, L = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    embedding = (c.vocab_size + c.max_position_embeddings + c.type_vocab_size) * h
    embedding += c.vocab_size                                        # the MLM output bias
    # Per block: q, k, v, o (h^2 + h each), two LayerNorms (2h each), intermediate
    # (h f + f), output (f h + h).
    block = 4 * h * h + 2 * h * f + 9 * h + f
    head = (h * h + h) + 2 * h                                       # MLM transform + LayerNorm
    pooler = h * h + h
    return embedding, 2 * h + L * block + pooler + head              # embeddings' LayerNorm first


def _t5_ff_matrices(c) -> int:
    """Weight matrices of one T5 feed-forward: wi, wo (ReLU) or wi_0, wi_1, wo (gated)."""
    return 3 if c.is_gated else 2


def _t5_parameters(c):
    d, a, f = c.d_model, c.num_heads * c.d_kv, c.d_ff
    ff = _t5_ff_matrices(c) * d * f
    embedding = c.vocab_size * d + 2 * c.relative_attention_num_buckets * c.num_heads
    if not c.tie_word_embeddings:
        embedding += c.vocab_size * d                                # lm_head
    encoder_block = 2 * d + 4 * d * a + ff                           # 2 RMSNorms, q k v o, FFN
    decoder_block = 3 * d + 8 * d * a + ff                           # + cross-attention
    non_embedding = c.num_layers * encoder_block + c.decoder_layers * decoder_block + 2 * d
    return embedding, non_embedding


def count_parameters(config) -> dict:
    """{"total", "embedding", "non_embedding"} parameter counts of ``config``, by formula.

    A tied output layer is counted once (it is the token table). Equals
    ``mt.models.build(config).num_parameters()`` for "total".
    """
    family = _family(config)
    embedding, non_embedding = {"gpt": _gpt_parameters, "bert": _bert_parameters,
                                "t5": _t5_parameters}[family](config)
    return {"total": embedding + non_embedding, "embedding": embedding,
            "non_embedding": non_embedding}


# =======================================================================================
# Compute
# =======================================================================================

def _check_shape(batch_size, seq_len, decoder_len=None):
    for name, v in (("batch_size", batch_size), ("seq_len", seq_len), ("decoder_len", decoder_len)):
        if v is None and name == "decoder_len":
            continue
        if not isinstance(v, (int, numpy.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def matmul_parameters(config, mlm_fraction: float = 0.15) -> float:
    """Weights that one training token goes through in matrix products (the N of 6 N D).

    The tied output layer counts once; biases, norms, lookups and the (unused in
    pre-training) BERT pooler do not. BERT's head runs only on the masked tokens, a
    ``mlm_fraction`` of them. For T5 this is per decoder token plus per encoder token:
    use ``training_flops``, which knows both lengths.
    """
    family = _family(config)
    c = config
    if family == "gpt":
        return c.n_layer * (4 * c.n_embd ** 2 + 2 * c.n_embd * c.d_ff) + c.vocab_size * c.n_embd
    if family == "bert":
        h = c.hidden_size
        body = c.num_hidden_layers * (4 * h * h + 2 * h * c.intermediate_size)
        return body + mlm_fraction * (h * h + c.vocab_size * h)
    d, a = c.d_model, c.num_heads * c.d_kv
    ff = _t5_ff_matrices(c) * d * c.d_ff
    return (c.num_layers * (4 * d * a + ff) + c.decoder_layers * (8 * d * a + ff)
            + c.vocab_size * d)


def training_flops(config, batch_size: int, seq_len: int, decoder_len: int | None = None,
                   mlm_fraction: float = 0.15) -> float:
    """Matrix-product FLOPs of one forward and backward pass over a (batch, seq_len) batch.

    6 x (weights in products) per token + 12 x layers x d_attn x T per token for attention,
    counting every (query, key) pair (a causal kernel that skips masked tiles does about
    half of the attention part). T5: ``seq_len`` encoder and ``decoder_len`` (default
    ``seq_len``) decoder tokens per row; its cross-attention is 12 x d_attn x T_enc per
    decoder token and layer.
    """
    family = _family(config)
    _check_shape(batch_size, seq_len, decoder_len)
    c = config
    if family == "gpt":
        per_token = 6 * matmul_parameters(c) + 12 * c.n_layer * c.n_embd * seq_len
        return float(batch_size * seq_len * per_token)
    if family == "bert":
        per_token = (6 * matmul_parameters(c, mlm_fraction)
                     + 12 * c.num_hidden_layers * c.hidden_size * seq_len)
        return float(batch_size * seq_len * per_token)
    te, td = seq_len, decoder_len or seq_len
    d, a = c.d_model, c.num_heads * c.d_kv
    ff = _t5_ff_matrices(c) * d * c.d_ff
    # Encoder tokens pass the encoder, and the decoder's cross-attention k and v projections.
    encoder_token = 6 * (c.num_layers * (4 * d * a + ff) + c.decoder_layers * 2 * d * a)
    encoder_token += 12 * c.num_layers * a * te
    decoder_token = 6 * (c.decoder_layers * (6 * d * a + ff) + c.vocab_size * d)
    decoder_token += 12 * c.decoder_layers * a * (td + te)           # self- and cross-attention
    return float(batch_size * (te * encoder_token + td * decoder_token))


def training_flops_per_token(config, seq_len: int, decoder_len: int | None = None,
                             mlm_fraction: float = 0.15) -> float:
    """Training FLOPs per token: 6 N + 12 L d T (see ``training_flops``; T5: per encoder token)."""
    return training_flops(config, 1, seq_len, decoder_len, mlm_fraction) / seq_len


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


# =======================================================================================
# Memory
# =======================================================================================
#
# Activations are counted as this library's autograd keeps them: the graph holds every op's
# output that another op consumed (its Tensor stays referenced by the consumer's node) plus
# what each op saved for its backward. Views (reshape, permute, slicing) share memory and
# cost nothing; a reshape of a transposed array is a copy. What an op saves depends on
# whether a fused kernel runs it (``mt.kernels``): the kernels keep less. Counts below are
# in elements per token (times the dtype's size), for one layer unless said otherwise;
# terms of a few elements per token (row statistics, log-sum-exps, ids) are left out.

@dataclasses.dataclass(frozen=True)
class Kernels:
    """Which fused kernels a training step runs; each changes what the step keeps.

    attention: tiled attention keeps no (T, T) scores. norm: fused LayerNorm/RMSNorm keep
    row statistics instead of the normalised input. gelu: fused GELU keeps only its input.
    cross_entropy: the fused backward writes the logits' gradient in one array.
    """

    attention: bool
    norm: bool
    gelu: bool
    cross_entropy: bool

    @classmethod
    def in_use(cls, mode: str | None = None) -> "Kernels":
        """The kernels ``mt.kernels`` runs on float32 CPU arrays in ``mode`` ("auto",
        "reference", "numba"; None: the current mode)."""
        from minitransformer import kernels

        def has(name, ndim=2):
            return kernels.get(name, numpy.zeros((1,) * ndim, "float32")) is not None

        with kernels.using(mode or kernels.mode()):
            return cls(attention=has("attention_forward", 4), norm=has("layer_norm_forward"),
                       gelu=has("gelu_forward"), cross_entropy=has("cross_entropy_backward"))


def _kernels(kernels) -> Kernels:
    if isinstance(kernels, Kernels):
        return kernels
    if kernels is not None and kernels not in ("auto", "reference", "numba"):
        raise ValueError(f"kernels must be 'auto', 'reference', 'numba', a scaling.Kernels or None "
                         f"(the current mt.kernels mode), got {kernels!r}")
    return Kernels.in_use(kernels)


def _norm(width, k: Kernels):
    """A normalisation keeps its output, and without the kernel its normalised input too."""
    return width * (1 if k.norm else 2)


def _scores(k: Kernels, heads, keys, with_bias=False, dropout=False):
    """Elements per query token that attention keeps, beyond its output.

    The tiled kernel keeps nothing of size T (its log-sum-exp is one number per head). The
    reference keeps the raw scores, the scaled scores (+ the biased scores) and the
    probabilities, (B, H, Tq, Tk) each, and with dropout its mask and the dropped probabilities.
    """
    if k.attention:
        return 0
    return heads * keys * (3 + with_bias + 2 * dropout)


def _activation(kind, width, b, k: Kernels):
    """Bytes per token an activation keeps besides its input: its output, and (reference
    code) tanh(u) for GELU-tanh, Phi(x) for exact GELU; for ReLU the boolean x > 0."""
    if kind == "relu":
        return width * b + width
    return width * b * (1 if k.gelu else 2)


def _gpt_activations(c, B, T, b, k):
    n, d, f, H, L = B * T, c.n_embd, c.d_ff, c.n_head, c.n_layer
    # Per block: two LayerNorms, q k v (3d: one array), attention output and its
    # heads-merged copy (2d), two projection outputs (2d), two residual sums (2d); the MLP's
    # pre-activation (f) and activation.
    per_token = 2 * _norm(d, k) + 9 * d + f + 2 * 2 * d * (c.resid_pdrop > 0)  # dropout: mask, out
    blocks = n * L * (b * per_token + _activation("gelu_tanh", f, b, k))
    scores = n * b * L * _scores(k, H, T, dropout=c.attn_pdrop > 0)
    # Token lookup and its sum with positions (2d, + 2d with dropout), the position lookup
    # (T d, shared by the rows); after the blocks, ln_f.
    embeddings = n * b * (2 * d + 2 * d * (c.embd_pdrop > 0) + _norm(d, k)) + T * d * b
    head = B * (T - 1) * c.vocab_size * b               # logits: the last position predicts nothing
    return {"blocks": blocks, "attention_scores": scores, "embeddings": embeddings, "head": head}


def _bert_activations(c, B, T, b, k, mlm_fraction):
    n, h, f, H, L = B * T, c.hidden_size, c.intermediate_size, c.num_attention_heads, c.num_hidden_layers
    # Per block: q, k, v (3h), attention output and merged copy (2h), two projection
    # outputs (2h), two residual sums (2h), two LayerNorms; the FFN's pre-activation (f)
    # and activation.
    per_token = 9 * h + 2 * _norm(h, k) + f + 2 * 2 * h * (c.hidden_dropout_prob > 0)
    blocks = n * L * (b * per_token + _activation(c.hidden_act, f, b, k))
    scores = n * b * L * _scores(k, H, T, dropout=c.attention_probs_dropout_prob > 0)
    # Word and type lookups, two sums, the LayerNorm (+ dropout mask and output); the
    # position lookup (T h).
    embeddings = n * b * (4 * h + _norm(h, k) + 2 * h * (c.hidden_dropout_prob > 0)) + T * h * b
    # The head runs on the masked tokens only: their gathered states, transform output,
    # activation, LayerNorm, then the logits.
    m = mlm_fraction * n
    head = m * (b * (2 * h + _norm(h, k) + c.vocab_size) + _activation(c.hidden_act, h, b, k))
    return {"blocks": blocks, "attention_scores": scores, "embeddings": embeddings, "head": head}


def _t5_ffn(c, b, k):
    """Bytes per token of one T5 feed-forward's inner activations (and its hidden dropout)."""
    f = c.d_ff
    if c.is_gated:   # wi_0 and wi_1 outputs, the GELU, their product
        inner = 3 * f * b + _activation("gelu_tanh", f, b, k)
    else:            # wi output, ReLU output and mask
        inner = f * b + _activation("relu", f, b, k)
    return inner + 2 * f * b * (c.dropout_rate > 0)


def _t5_activations(c, B, te, td, b, k):
    d, a, H = c.d_model, c.num_heads * c.d_kv, c.num_heads
    ne, nd = B * te, B * td
    drop = c.dropout_rate > 0
    # Each sublayer: its RMSNorm, output projection (d), residual sum (d), + 2d with
    # dropout; self-attention q k v, output and merged copy (5a); cross-attention q, output,
    # copy (3a) and k, v of every encoder token (2a).
    sub = _norm(d, k) + 2 * d + 2 * d * drop
    encoder = ne * c.num_layers * (b * (2 * sub + 5 * a) + _t5_ffn(c, b, k))
    decoder = nd * c.decoder_layers * (b * (3 * sub + 8 * a) + _t5_ffn(c, b, k))
    decoder += ne * c.decoder_layers * b * 2 * a
    scores = b * (ne * c.num_layers * _scores(k, H, te, with_bias=True, dropout=drop)
                  + nd * c.decoder_layers * (_scores(k, H, td, with_bias=True, dropout=drop)
                                             + _scores(k, H, te, dropout=drop)))
    # The relative-position bias of each stack, (H, T, T) values and (T, T) int64 buckets,
    # shared by the batch rows and the blocks.
    position_bias = H * (te * te + td * td) * b + 8 * (te * te + td * td)
    # Each stack: token lookup (d), final RMSNorm, + 4d with dropout (input and output).
    embeddings = (ne + nd) * b * (d + _norm(d, k) + 4 * d * drop) + position_bias
    head = nd * b * (c.vocab_size + d * c.tie_word_embeddings)      # logits (+ the d^-0.5 rescale)
    return {"blocks": encoder + decoder, "attention_scores": scores, "embeddings": embeddings,
            "head": head}


# Backward temporaries of the reference code, in arrays of the op's output size: NumPy
# evaluates a formula one operation at a time, so GELU's derivative holds several
# intermediate arrays at once. A fused kernel writes its gradient in one pass.
_BACKWARD_TEMPORARIES = {"gelu_tanh": 5, "gelu": 4, "relu": 1}


def backward_workspace(config, batch_size: int, seq_len: int, dtype="float32",
                       decoder_len: int | None = None, kernels=None,
                       mlm_fraction: float = 0.15) -> int:
    """Bytes of the largest transient of the backward pass, beyond what the graph holds.

    The candidates: the gradient of the logits (as large as the logits; the NumPy reference
    cross-entropy holds two such arrays, the kernel one); the activation's derivative
    (``_BACKWARD_TEMPORARIES`` arrays of the feed-forward width, one with the GELU kernel);
    with reference attention, the gradient of the (B, H, T, T) probabilities and the two
    temporaries of the softmax backward.
    """
    family = _family(config)
    _check_shape(batch_size, seq_len, decoder_len)
    b, k = _itemsize(dtype), _kernels(kernels)
    c = config
    td = decoder_len or seq_len
    logit_rows = {"gpt": batch_size * (seq_len - 1), "bert": mlm_fraction * batch_size * seq_len,
                  "t5": batch_size * td}[family]
    logits = logit_rows * c.vocab_size * b * (1 if k.cross_entropy else 2)
    if family == "t5":
        act, rows = ("gelu_tanh" if c.is_gated else "relu"), batch_size * max(seq_len, td)
    else:
        act, rows = ("gelu_tanh" if family == "gpt" else c.hidden_act), batch_size * seq_len
    temporaries = 1 if (k.gelu and act != "relu") else _BACKWARD_TEMPORARIES[act]
    ffn = temporaries * rows * c.d_ff * b
    scores = 0 if k.attention else 3 * batch_size * c.n_heads * max(seq_len, td) ** 2 * b
    return int(round(max(logits, ffn, scores)))


def activation_memory(config, batch_size: int, seq_len: int, dtype="float32",
                      decoder_len: int | None = None, kernels=None,
                      mlm_fraction: float = 0.15) -> dict:
    """Bytes of activations one training step keeps for backward, by part.

    Parts: "blocks" (the transformer layers), "attention_scores" (only where attention
    keeps its T x T scores, without the tiled kernel), "embeddings" (inputs and the final
    norm), "head" (logits). ``kernels``: "auto" or "reference" (which implementations run,
    as in ``mt.kernels.use``), a ``Kernels``, or None for the current ``mt.kernels`` mode.
    """
    family = _family(config)
    _check_shape(batch_size, seq_len, decoder_len)
    b, k = _itemsize(dtype), _kernels(kernels)
    if family == "gpt":
        parts = _gpt_activations(config, batch_size, seq_len, b, k)
    elif family == "bert":
        parts = _bert_activations(config, batch_size, seq_len, b, k, mlm_fraction)
    else:
        parts = _t5_activations(config, batch_size, seq_len, decoder_len or seq_len, b, k)
    return {key: int(round(v)) for key, v in parts.items()}


def training_memory(config, batch_size: int, seq_len: int, dtype="float32",
                    decoder_len: int | None = None, kernels=None,
                    mlm_fraction: float = 0.15) -> dict:
    """Bytes one AdamW training step needs at its peak, by part: weights, gradients, Adam's
    two moments, activations, the backward pass's workspace, and their total.

    Weights, gradients and moments: 4 + 4 + 8 = 16 bytes per parameter in float32. The
    activations (``activation_memory``) are what the autograd graph holds for a batch of
    ``batch_size`` rows of ``seq_len`` tokens (T5: ``decoder_len`` decoder tokens); the
    workspace (``backward_workspace``) is the largest temporary the backward pass adds.
    """
    b = _itemsize(dtype)
    p = count_parameters(config)["total"]
    shape = (config, batch_size, seq_len, dtype, decoder_len, _kernels(kernels), mlm_fraction)
    out = {"weights": p * b, "gradients": p * b, "adam_states": 2 * p * b,
           "activations": sum(activation_memory(*shape).values()),
           "workspace": backward_workspace(*shape)}
    out["total"] = sum(out.values())
    return out


# =======================================================================================
# Summary (for ``minitransformer info``)
# =======================================================================================

def _si(x: float, unit: str = "") -> str:
    for scale, prefix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {prefix}{unit}".rstrip()
    return f"{x:.3g} {unit}".rstrip()


def _mib(x: float) -> str:
    return f"{x / 2 ** 20:,.1f} MiB" if x < 2 ** 30 else f"{x / 2 ** 30:,.2f} GiB"


def account(config, batch_size: int = 16, seq_len: int | None = None, dtype="float32",
            decoder_len: int | None = None, kernels=None) -> dict:
    """Every number of the accounting at once: parameters, FLOPs, memory, Chinchilla tokens.

    ``seq_len`` defaults to the config's position limit (512 for T5, which has none).
    """
    seq_len = seq_len or config.max_positions or 512
    k = _kernels(kernels)
    params = count_parameters(config)
    per_token = training_flops_per_token(config, seq_len, decoder_len)
    return {
        "family": _family(config),
        "batch_size": batch_size, "seq_len": seq_len, "dtype": str(numpy.dtype(dtype)),
        "parameters": params,
        "matmul_parameters": matmul_parameters(config) if config.family != "t5" else None,
        "flops_per_token": per_token,
        "flops_per_step": per_token * batch_size * seq_len,
        "memory": training_memory(config, batch_size, seq_len, dtype, decoder_len, k),
        "activations": activation_memory(config, batch_size, seq_len, dtype, decoder_len, k),
        "kernels": dataclasses.asdict(k),
        "chinchilla_tokens": chinchilla_tokens(params["total"]),
    }


def summary(config, batch_size: int = 16, seq_len: int | None = None, dtype="float32") -> list[str]:
    """Printable lines: parameter counts, training FLOPs, memory by part, Chinchilla tokens."""
    a = account(config, batch_size, seq_len, dtype)
    p, m = a["parameters"], a["memory"]
    tokens = a["chinchilla_tokens"]
    t = a["seq_len"]
    where = "per encoder token, decoder as long" if a["family"] == "t5" else "per token"
    attention = "tiled" if a["kernels"]["attention"] else "reference"
    return [
        f"parameters: {p['total']:,} ({p['non_embedding']:,} non-embedding, "
        f"{p['embedding']:,} embedding)",
        f"training FLOPs ({where}, T = {t}): {_si(a['flops_per_token'], 'FLOP')} "
        f"(6 N + 12 L d T); one step of {batch_size} x {t} tokens: {_si(a['flops_per_step'], 'FLOP')}",
        f"training memory ({a['dtype']}, AdamW, batch {batch_size} x {t}, {attention} attention): "
        f"{_mib(m['total'])} = weights {_mib(m['weights'])} + gradients {_mib(m['gradients'])} "
        f"+ Adam moments {_mib(m['adam_states'])} + activations {_mib(m['activations'])} "
        f"+ backward workspace {_mib(m['workspace'])}",
        f"Chinchilla-optimal training: {_si(tokens)} tokens (20 per parameter), "
        f"{_si(6 * p['total'] * tokens, 'FLOP')} at 6 N D",
    ]


# =======================================================================================
# Counting the FLOPs actually executed
# =======================================================================================

class FlopCount:
    """Matrix-product FLOPs counted by ``count_matmul_flops``, in total and per op and pass."""

    def __init__(self):
        self.by_op: dict[str, int] = {}

    def add(self, key: str, flops: int) -> None:
        self.by_op[key] = self.by_op.get(key, 0) + int(flops)

    @property
    def total(self) -> int:
        return sum(self.by_op.values())

    @property
    def forward(self) -> int:
        return sum(v for k, v in self.by_op.items() if k.endswith(".forward"))

    @property
    def backward(self) -> int:
        return sum(v for k, v in self.by_op.items() if k.endswith(".backward"))

    def __repr__(self):
        return f"FlopCount(total={self.total:,}, by_op={self.by_op})"


def _product_flops(a_shape, b_shape) -> int:
    """2 m k n for each matrix of the broadcast batch of an (..., m, k) @ (..., k, n) product."""
    batch = numpy.broadcast_shapes(tuple(a_shape[:-2]), tuple(b_shape[:-2]))
    return 2 * math.prod(batch) * a_shape[-2] * a_shape[-1] * b_shape[-1]


@contextlib.contextmanager
def count_matmul_flops():
    """Count the matrix-product FLOPs of the ops run inside the block::

        with count_matmul_flops() as count:
            model.loss(batch).backward()
        count.total, count.by_op

    Wraps, for the duration, the forward and backward of ``MatMul``, ``functional.Linear``
    and ``functional.FlashAttention``. A product (m, k) x (k, n) counts 2 m k n; a backward
    counts only the gradients it computes. The tiled attention kernel is counted as the
    products the reference attention runs (QK^T and PV forward; dV, dP, dQ, dK backward)
    over every (query, key) pair; the kernel itself also recomputes QK^T in backward and
    skips tiles a causal mask hides entirely.
    """
    from minitransformer import functional
    from minitransformer.autograd import ops

    count = FlopCount()
    saved = []

    def patch(cls, name, wrapper):
        saved.append((cls, name, cls.__dict__[name]))
        setattr(cls, name, staticmethod(wrapper))

    matmul_fwd, matmul_bwd = ops.MatMul.forward, ops.MatMul.backward
    linear_fwd, linear_bwd = functional.Linear.forward, functional.Linear.backward
    flash_fwd, flash_bwd = functional.FlashAttention.forward, functional.FlashAttention.backward

    def matmul_forward(ctx, a, b):
        count.add("matmul.forward", _product_flops(a.shape, b.shape))
        return matmul_fwd(ctx, a, b)

    def matmul_backward(ctx, g):
        f = _product_flops(ctx.a.shape, ctx.b.shape)
        count.add("matmul.backward", f * sum(ctx.needs_input_grad[:2]))
        return matmul_bwd(ctx, g)

    def linear_forward(ctx, x, weight, bias):
        count.add("linear.forward", 2 * (x.size // x.shape[-1]) * weight.shape[0] * weight.shape[1])
        return linear_fwd(ctx, x, weight, bias)

    def linear_backward(ctx, g):
        f = 2 * (ctx.x.size // ctx.x.shape[-1]) * ctx.weight.size
        count.add("linear.backward", f * sum(ctx.needs_input_grad[:2]))
        return linear_bwd(ctx, g)

    def flash_forward(ctx, q, k, v, *args, **kwargs):
        qk = _product_flops(q.shape, k.shape[:-2] + (k.shape[-1], k.shape[-2]))
        pv = _product_flops(q.shape[:-1] + (k.shape[-2],), v.shape)
        count.add("attention.forward", qk + pv)
        return flash_fwd(ctx, q, k, v, *args, **kwargs)

    def flash_backward(ctx, g):
        q, k, v = ctx.q, ctx.k, ctx.v
        qk = _product_flops(q.shape, k.shape[:-2] + (k.shape[-1], k.shape[-2]))
        pv = _product_flops(q.shape[:-1] + (k.shape[-2],), v.shape)
        count.add("attention.backward", 2 * (qk + pv))              # dV, dP; dQ, dK
        return flash_bwd(ctx, g)

    patch(ops.MatMul, "forward", matmul_forward)
    patch(ops.MatMul, "backward", matmul_backward)
    patch(functional.Linear, "forward", linear_forward)
    patch(functional.Linear, "backward", linear_backward)
    patch(functional.FlashAttention, "forward", flash_forward)
    patch(functional.FlashAttention, "backward", flash_backward)
    try:
        yield count
    finally:
        for cls, name, original in reversed(saved):
            setattr(cls, name, original)


# =======================================================================================
# Fitting scaling laws
# =======================================================================================

@dataclasses.dataclass(frozen=True)
class PowerLawFit:
    """L(N) = E + A / N^alpha fitted to points (N_i, L_i), with confidence intervals.

    ``ci`` maps "E", "A", "alpha" to (low, high) at ``confidence`` (nan when there are no
    spare degrees of freedom, i.e. 3 points); ``stderr`` to their standard errors (A's is
    that of log A). ``rmse`` is the root-mean-square residual.
    """

    E: float
    A: float
    alpha: float
    ci: dict
    stderr: dict
    rmse: float
    n_points: int
    confidence: float

    def predict(self, n):
        return self.E + self.A * numpy.asarray(n, dtype=float) ** -self.alpha

    def as_dict(self) -> dict:
        return {"E": self.E, "A": self.A, "alpha": self.alpha,
                "ci": {k: list(v) for k, v in self.ci.items()}, "stderr": self.stderr,
                "rmse": self.rmse, "n_points": self.n_points, "confidence": self.confidence}


def _check_points(n, loss, name):
    n, loss = numpy.asarray(n, dtype=float), numpy.asarray(loss, dtype=float)
    if n.ndim != 1 or n.shape != loss.shape:
        raise ValueError(f"{name}: N and L must be 1-D and of the same length, got shapes "
                         f"{n.shape} and {loss.shape}")
    if len(n) < 3:
        raise ValueError(f"{name}: needs at least 3 points (3 unknowns), got {len(n)}; "
                         "train more model sizes")
    if not (numpy.all(numpy.isfinite(n)) and numpy.all(n > 0) and numpy.all(numpy.isfinite(loss))):
        raise ValueError(f"{name}: N must be positive and finite and L finite, got N={n.tolist()}, "
                         f"L={loss.tolist()}")
    if len(numpy.unique(n)) < 3:
        raise ValueError(f"{name}: needs at least 3 distinct sizes N, got {sorted(set(n.tolist()))}")
    return n, loss


def _profile(x, loss, alpha):
    """For a fixed alpha the model is linear in (E, A): solve it; return (E, A, squared error)."""
    design = numpy.stack([numpy.ones_like(x), x ** -alpha], axis=1)
    (e, a), *_ = numpy.linalg.lstsq(design, loss, rcond=None)
    r = loss - design @ numpy.array([e, a])
    return e, a, float(r @ r)


def fit_power_law(n, loss, confidence: float = 0.95, alpha_bounds=(1e-3, 3.0)) -> PowerLawFit:
    """Least-squares fit of L(N) = E + A / N^alpha (Hoffmann et al. 2022's L(N) term).

    N is rescaled by its geometric mean N_0 (so A' = A / N_0^alpha is of the order of the
    losses and the problem is well conditioned). For each alpha, E and A' follow by linear
    least squares; alpha minimises the remaining squared error (a grid, then a bounded
    scalar search around its best point). The intervals come from the Jacobian at the
    optimum, cov = s^2 (J^T J)^-1 with s^2 = SSE / (n - 3), and Student's t with n - 3
    degrees of freedom; A's interval is that of log A, so it stays positive.
    """
    from scipy import optimize, stats

    n, loss = _check_points(n, loss, "fit_power_law")
    n0 = float(numpy.exp(numpy.mean(numpy.log(n))))
    x = n / n0
    lo, hi = alpha_bounds
    grid = numpy.geomspace(lo, hi, 400)
    errors = [_profile(x, loss, a)[2] for a in grid]
    i = int(numpy.argmin(errors))
    bracket = (grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)])
    best = optimize.minimize_scalar(lambda a: _profile(x, loss, a)[2], bounds=bracket,
                                    method="bounded", options={"xatol": 1e-10})
    alpha = float(best.x) if best.fun <= errors[i] else float(grid[i])
    e, a_scaled, sse = _profile(x, loss, alpha)

    # Jacobian of the model E + A' x^-alpha in (E, log A', alpha), for the covariance.
    p = len(n)
    dof = p - 3
    term = a_scaled * x ** -alpha
    jac = numpy.stack([numpy.ones_like(x), term, -term * numpy.log(x)], axis=1)
    a = a_scaled * n0 ** alpha
    names = ("E", "A", "alpha")
    if dof > 0 and a_scaled > 0:
        s2 = sse / dof
        cov = s2 * numpy.linalg.pinv(jac.T @ jac)
        # log A = log A' + alpha log N_0: carry the covariance over.
        to_log_a = numpy.array([[1, 0, 0], [0, 1, math.log(n0)], [0, 0, 1]])
        cov = to_log_a @ cov @ to_log_a.T
        se = numpy.sqrt(numpy.maximum(numpy.diag(cov), 0.0))
        t = float(stats.t.ppf(0.5 + confidence / 2, dof))
        ci = {"E": (e - t * se[0], e + t * se[0]),
              "A": (a * math.exp(-t * se[1]), a * math.exp(t * se[1])),
              "alpha": (alpha - t * se[2], alpha + t * se[2])}
        stderr = dict(zip(names, (float(v) for v in se)))
    else:
        ci = {k: (math.nan, math.nan) for k in names}
        stderr = {k: math.nan for k in names}
    return PowerLawFit(E=float(e), A=float(a), alpha=alpha,
                       ci={k: (float(v[0]), float(v[1])) for k, v in ci.items()}, stderr=stderr,
                       rmse=math.sqrt(sse / p), n_points=p, confidence=confidence)


def fit_pure_power_law(n, loss, confidence: float = 0.95) -> dict:
    """Kaplan et al.'s form L(N) = (N_c / N)^alpha: a straight line in log-log coordinates,
    log L = alpha log N_c - alpha log N, fitted by least squares. Returns alpha, N_c and
    alpha's confidence interval (Student's t, n - 2 degrees of freedom)."""
    from scipy import stats

    n, loss = _check_points(n, loss, "fit_pure_power_law")
    if numpy.any(loss <= 0):
        raise ValueError("fit_pure_power_law: losses must be positive to take their logarithm")
    reg = stats.linregress(numpy.log(n), numpy.log(loss))
    alpha = -float(reg.slope)
    t = float(stats.t.ppf(0.5 + confidence / 2, len(n) - 2))
    return {"alpha": alpha, "N_c": float(math.exp(reg.intercept / alpha)) if alpha else math.inf,
            "ci": [alpha - t * float(reg.stderr), alpha + t * float(reg.stderr)],
            "stderr": float(reg.stderr),
            "confidence": confidence}


# =======================================================================================
# A sweep of model sizes
# =======================================================================================

@dataclasses.dataclass(frozen=True)
class ModelSize:
    """One rung of a size ladder: width, depth and heads (feed-forward 4 x width)."""

    d_model: int
    n_layers: int
    n_heads: int

    @property
    def name(self) -> str:
        return f"d{self.d_model}-L{self.n_layers}-H{self.n_heads}"


def parse_size(text: str) -> ModelSize:
    """"WIDTHxLAYERS" or "WIDTHxLAYERSxHEADS" (heads default: the most, up to one per 32 of
    width, that divide the width)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (2, 3) or min(parts) < 1:
        raise ValueError(f"model size {text!r} is not WIDTHxLAYERS or WIDTHxLAYERSxHEADS with "
                         "positive integers; e.g. 64x3 or 64x3x2")
    d, layers = parts[:2]
    heads = parts[2] if len(parts) == 3 else max(h for h in range(1, max(d // 32, 1) + 1) if d % h == 0)
    if d % heads:
        raise ValueError(f"model size {text!r}: width {d} is not divisible by {heads} heads")
    return ModelSize(d, layers, heads)


# Ladders of width at a fixed depth: with a budget this short, a deeper model of the same
# size is still slower to train, and mixing depths would mix that into the trend. Non-embedding
# parameters (GPT): 25 thousand to 1.6 million (quick, 62x), 0.2 to 12.6 million (full, 64x).
# Heads of 32 dimensions where the width allows.
QUICK_SIZES = tuple(parse_size(f"{d}x2") for d in (32, 48, 64, 96, 128, 192, 256))
FULL_SIZES = tuple(parse_size(f"{d}x4") for d in (64, 96, 128, 192, 256, 384, 512))

FAMILY_PRESET = {"gpt": "gpt-tiny", "bert": "bert-tiny", "t5": "t5-tiny"}
FAMILY_OBJECTIVE = {"gpt": "clm", "bert": "mlm", "t5": "span"}
BASE_LR = {"gpt": 3e-3, "bert": 1e-3, "t5": 3e-3}      # at width 128, as `pretrain` uses


def sweep_config(family: str, size: ModelSize, tokenizer, seq_len: int):
    """The config of ``family`` at ``size``, with the tokenizer's vocabulary and special ids
    and room for ``seq_len`` positions; no dropout (short runs underfit).

    GPT and BERT initialise with std 0.02 whatever the width, a value chosen for width 768.
    A width-32 model drawn that way starts with signals 5x smaller than one of width 768,
    and spends much of a short run escaping that start; so every width here draws with std
    0.02 sqrt(768 / width), which gives them all the start of the published models. (T5
    already scales its init by the fan-in.)
    """
    from minitransformer import recipes

    if family not in FAMILY_PRESET:
        raise ValueError(f"unknown family {family!r}; choose gpt, bert or t5")
    d, layers, heads = size.d_model, size.n_layers, size.n_heads
    std = 0.02 * math.sqrt(768 / d)
    shape = {
        "gpt": dict(n_embd=d, n_layer=layers, n_head=heads, n_inner=None, n_positions=seq_len,
                    initializer_range=std),
        "bert": dict(hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=4 * d, max_position_embeddings=seq_len,
                     initializer_range=std),
        "t5": dict(d_model=d, d_kv=d // heads, d_ff=4 * d, num_layers=layers, num_heads=heads),
    }[family]
    return recipes.model_config(FAMILY_PRESET[family], tokenizer, seq_len, **shape)


def default_lr(config) -> float:
    """Peak learning rate for a sweep run: the family's rate at width 128, times
    sqrt(128 / width) (narrower models take larger steps), kept within [1e-3, 6e-3]
    (BERT: a third of that)."""
    scale = math.sqrt(128 / config.d_model)
    lr = min(max(BASE_LR["gpt"] * scale, 1e-3), 6e-3)
    return lr * BASE_LR[config.family] / BASE_LR["gpt"]


def _batch_shape(data):
    """(seq_len, decoder_len or None, mlm_fraction) of the objective's batches."""
    b = data.batch(0, 1)
    dec = b.get("decoder_input_ids")
    return (b["input_ids"].shape[1], None if dec is None else dec.shape[1],
            float(getattr(data, "mlm_probability", 0.15)))


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def _train_loss_tail(run_dir: Path, fraction: float = 0.1):
    """Mean training loss over the last ``fraction`` of the logged steps (a smoother end point)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    losses = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line) if line.strip() else {}
        if "loss" in rec:
            losses[rec["step"]] = rec["loss"]      # a resumed run may log a step twice
    if not losses:
        return None
    steps = sorted(losses)
    tail = steps[-max(1, int(len(steps) * fraction)):]
    return float(numpy.mean([losses[s] for s in tail]))


def run_sweep(runs, train_data, val_data, out_dir, *, tokens: int, batch_size: int = 16,
              lr: float | None = None, warmup_fraction: float = 0.05, seed: int = 0,
              device: str = "cpu", max_eval_batches: int = 16, data_key: str = "",
              progress=None) -> list[dict]:
    """Train each (name, config) of ``runs`` on the same data for the same ``tokens``; return
    one result dict per run, in order.

    Each run lives in ``out_dir/runs/NAME`` and writes ``result.json`` when it finishes;
    calling again with the same settings skips finished runs and resumes an interrupted one
    from its checkpoint. ``out_dir/sweep.json`` records the settings (plus ``data_key``,
    naming the data) and a later call with other settings is refused. Every run has the
    same token budget, a cosine schedule over its own steps with ``warmup_fraction`` warmup,
    and ``default_lr`` unless ``lr`` is given; it is evaluated once, at the end, on up to
    ``max_eval_batches`` validation batches. ``progress(event)`` receives dicts with
    "event": "start" | "step" | "done" | "skip" and "index", "name", and the step's metrics
    or the run's result.
    """
    from minitransformer import backend, models
    from minitransformer.train import TrainConfig, Trainer

    runs = list(runs)
    if not runs:
        raise ValueError("run_sweep: no runs given; pass (name, config) pairs")
    names = [name for name, _ in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"run_sweep: run names must be distinct, got {names}")
    if not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"run_sweep: tokens must be a positive integer budget, got {tokens!r}")
    family = _family(runs[0][1])
    if any(_family(c) != family for _, c in runs):
        raise ValueError("run_sweep: every run of a sweep must be of one family, got "
                         f"{sorted({_family(c) for _, c in runs})}")
    seq_len, decoder_len, mlm_fraction = _batch_shape(train_data)
    steps = -(-tokens // (batch_size * seq_len))
    out_dir = Path(out_dir)
    settings = {"family": family, "tokens": tokens, "batch_size": batch_size, "seq_len": seq_len,
                "steps": steps, "lr": lr, "warmup_fraction": warmup_fraction, "seed": seed,
                "data": data_key}
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / "sweep.json").is_file():
        old = json.loads((out_dir / "sweep.json").read_text())
        changed = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
        if changed:
            what = ", ".join(f"{k} was {a!r}, now {b!r}" for k, (a, b) in changed.items())
            raise ValueError(f"{out_dir} holds a sweep with other settings ({what}); use the "
                             "same settings to resume it, or another output folder")
    _write_json(out_dir / "sweep.json", settings)
    eval_batches = max(1, min(max_eval_batches, getattr(val_data, "num_blocks", batch_size) // batch_size))

    def emit(**event):
        if progress is not None:
            progress(event)

    results = []
    for index, (name, config) in enumerate(runs):
        run_dir = out_dir / "runs" / name
        result_path = run_dir / "result.json"
        config_dict = dataclasses.asdict(config)
        if result_path.is_file():
            done = json.loads(result_path.read_text())
            if done.get("config") != config_dict:
                raise ValueError(f"{run_dir} holds a finished run of another config; remove it or "
                                 "use another output folder")
            results.append(done)
            emit(event="skip", index=index, name=name, result=done)
            continue
        params = count_parameters(config)
        flops = training_flops(config, batch_size, seq_len, decoder_len, mlm_fraction)
        flops /= batch_size * seq_len                                # per token
        run_lr = lr or default_lr(config)
        cfg = TrainConfig(objective=FAMILY_OBJECTIVE[family], steps=steps, batch_size=batch_size,
                          lr=run_lr, warmup=max(1, round(warmup_fraction * steps)),
                          schedule="cosine", eval_every=0, eval_batches=eval_batches,
                          save_every=0, keep_checkpoints=1, seed=seed, device=device)
        backend.manual_seed(seed)
        trainer = Trainer(models.build(config), train_data, val_data, cfg, run_dir,
                          card_info={"name": f"{name}: {family} scaling sweep run"})
        resumed = trainer.resume()
        emit(event="start", index=index, name=name, steps=steps, step=trainer.step, resumed=resumed,
             params=params, lr=run_lr)
        t0 = time.perf_counter()
        final = trainer.fit(progress=lambda m: emit(event="step", index=index, name=name, **m))
        seconds = time.perf_counter() - t0
        result = {
            "name": name, "index": index, "family": family, "config": config_dict,
            "d_model": config.d_model, "n_layers": config.n_layers, "n_heads": config.n_heads,
            "params": params["total"], "non_embedding_params": params["non_embedding"],
            "embedding_params": params["embedding"],
            "flops_per_token": flops, "tokens": trainer.tokens_seen,
            "compute": flops * trainer.tokens_seen, "steps": trainer.step, "lr": run_lr,
            "val_loss": final.get("val_loss"), "train_loss": _train_loss_tail(run_dir),
            "seconds": seconds, "resumed": resumed,
            "chinchilla_tokens": chinchilla_tokens(params["total"]),
        }
        _write_json(result_path, result)
        results.append(result)
        emit(event="done", index=index, name=name, result=result)
    return results


# =======================================================================================
# The report
# =======================================================================================

def analyse(results) -> dict:
    """Fits of the sweep's final validation losses: L(N) = E + A / N^alpha on non-embedding
    parameters, Kaplan's pure power law on the same points, and L(C) = E + A / C^alpha on
    training compute; with the published exponents beside them."""
    n = [r["non_embedding_params"] for r in results]
    loss = [r["val_loss"] for r in results]
    compute = [r["compute"] for r in results]
    out = {"references": {"kaplan_alpha_N": KAPLAN_ALPHA_N, "chinchilla_alpha": CHINCHILLA["alpha"],
                          "kaplan_alpha_C": KAPLAN_ALPHA_C}}
    if len(set(n)) < 3:
        out["note"] = f"{len(set(n))} model sizes: a fit needs at least 3"
        return out
    out["fit_N"] = fit_power_law(n, loss).as_dict()
    out["kaplan_form_N"] = fit_pure_power_law(n, loss)
    out["fit_C"] = fit_power_law(compute, loss).as_dict()
    out["span"] = max(n) / min(n)
    return out


def format_table(results) -> list[str]:
    """The sweep as a text table, one line per run."""
    head = (f"{'run':<14} {'non-emb N':>10} {'total N':>10} {'FLOP/token':>10} {'tokens':>8} "
            f"{'compute':>9} {'lr':>7} {'train':>6} {'val loss':>8} {'time':>7}")
    lines = [head, "-" * len(head)]
    for r in results:
        train = f"{r['train_loss']:.3f}" if r.get("train_loss") is not None else "-"
        lines.append(
            f"{r['name']:<14} {r['non_embedding_params']:>10,} {r['params']:>10,} "
            f"{_si(r['flops_per_token']):>10} {_si(r['tokens']):>8} {_si(r['compute'], 'FLOP'):>9} "
            f"{r['lr']:>7.1e} {train:>6} {r['val_loss']:>8.4f} {r['seconds'] / 60:>6.1f}m")
    return lines


def format_fits(analysis) -> list[str]:
    """The fitted exponents beside the published ones, as text lines."""
    if "fit_N" not in analysis:
        return [f"no fit: {analysis.get('note', 'too few points')}"]
    f, k, c = analysis["fit_N"], analysis["kaplan_form_N"], analysis["fit_C"]
    pct = round(100 * f["confidence"])

    def ci(fit, key):
        lo, hi = fit["ci"][key] if isinstance(fit["ci"], dict) else fit["ci"]
        return f"[{lo:.3g}, {hi:.3g}]"

    return [
        f"L(N) = E + A / N^alpha (N = non-embedding parameters, {f['n_points']} sizes spanning "
        f"{analysis['span']:.0f}x): alpha = {f['alpha']:.3f} {ci(f, 'alpha')}, "
        f"E = {f['E']:.3f} {ci(f, 'E')}, A = {f['A']:.3g} {ci(f, 'A')} ({pct}% intervals), "
        f"rms residual {f['rmse']:.4f}",
        f"  Chinchilla (same form, all parameters, compute-optimal data): alpha = "
        f"{CHINCHILLA['alpha']}, E = {CHINCHILLA['E']}, A = {CHINCHILLA['A']}",
        f"L(N) = (N_c / N)^alpha (Kaplan's form, no E): alpha = {k['alpha']:.3f} {ci(k, 'alpha')}",
        f"  Kaplan et al. 2020 (models trained to convergence): alpha_N = {KAPLAN_ALPHA_N}",
        f"L(C) = E + A / C^alpha (C = training FLOPs, same tokens for every size): "
        f"alpha = {c['alpha']:.3f} {ci(c, 'alpha')}; Kaplan's compute-optimal frontier: "
        f"alpha_C = {KAPLAN_ALPHA_C}",
    ]


def _plots(results, analysis, out_dir: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return []
    written = []
    loss = numpy.array([r["val_loss"] for r in results])
    for key, fit_key, xlabel, filename in (
            ("non_embedding_params", "fit_N", "non-embedding parameters N", "loss_vs_params.png"),
            ("compute", "fit_C", "training compute C (FLOPs)", "loss_vs_compute.png")):
        x = numpy.array([r[key] for r in results], dtype=float)
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        ax.scatter(x, loss, zorder=3, label="runs (final validation loss)")
        for xi, li, r in zip(x, loss, results):
            ax.annotate(r["name"], (xi, li), textcoords="offset points", xytext=(4, 4), fontsize=7)
        fit = analysis.get(fit_key)
        if fit:
            grid = numpy.geomspace(x.min() / 1.5, x.max() * 1.5, 200)
            lo, hi = fit["ci"]["alpha"]
            ax.plot(grid, fit["E"] + fit["A"] * grid ** -fit["alpha"], "-",
                    label=f"E + A / x^alpha: alpha = {fit['alpha']:.3f} [{lo:.3f}, {hi:.3f}], "
                          f"E = {fit['E']:.2f}")
            ax.axhline(fit["E"], ls=":", color="gray", lw=1)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())   # labels would overlap
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation loss (nats per token)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / filename, dpi=120)
        plt.close(fig)
        written.append(out_dir / filename)
    return written


def write_report(results, analysis, out_dir) -> list[Path]:
    """report.json (runs, fits, references), report.txt (table and fits) and, where
    matplotlib is installed, loss_vs_params.png and loss_vs_compute.png; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(out_dir / "report.json", {"runs": list(results), "analysis": analysis})
    lines = format_table(results) + [""] + format_fits(analysis)
    (out_dir / "report.txt").write_text("\n".join(lines) + "\n")
    return [out_dir / "report.json", out_dir / "report.txt"] + _plots(results, analysis, out_dir)
