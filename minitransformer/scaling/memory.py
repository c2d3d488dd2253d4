"""What a training step holds in memory: weights, gradients, Adam's moments, activations.

Training in float32 with AdamW keeps, per parameter, the weight (4 bytes), its gradient (4)
and Adam's two moments (8): 16 bytes. On top come the activations: every array the autograd
graph holds between the forward and the backward pass. They are counted here op by op as
this library's autograd stores them (each op's output that is the input of another op, and
what an op saves for its backward), so they grow with batch x sequence x width, plus the
attention scores (B H T^2) where attention is not tiled. The peak comes during the backward
pass, which adds its largest temporary: the gradient of the logits, or the intermediate
arrays of the activation function's derivative.

One activation formula per family, named in its record of ``minitransformer.families``.
"""
from __future__ import annotations

import dataclasses

import numpy

from minitransformer.scaling.flops import check_shape, logit_rows
from minitransformer.scaling.parameters import count_parameters, family_of


def itemsize(dtype) -> int:
    """Bytes per element of ``dtype``, or a ValueError naming what to pass."""
    try:
        return numpy.dtype(dtype).itemsize
    except TypeError:
        raise ValueError(f"dtype {dtype!r} is not a NumPy dtype; pass e.g. 'float32'") from None

# Activations are counted as this library's autograd keeps them: the graph holds what each
# op saved for its backward, and no other array (a node refers to its inputs' nodes, not to
# their arrays), so an output that only a sum or a reshape consumed is freed at once. Views
# (reshape, permute, slicing) share memory and cost nothing; a reshape of a transposed array
# is a copy. Attention's output is kept once either way: the tiled kernel's output is itself
# the heads-merged array the output projection keeps (a view), the reference's is not kept,
# only its merged copy. What an op saves depends on
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


def resolve_kernels(kernels) -> Kernels:
    """``kernels`` as a ``Kernels``: one already, a mode ("auto", "reference", "numba"), or
    None for the current ``mt.kernels`` mode."""
    if isinstance(kernels, Kernels):
        return kernels
    if kernels is not None and kernels not in ("auto", "reference", "numba"):
        raise ValueError(f"kernels must be 'auto', 'reference', 'numba', a scaling.Kernels or None "
                         f"(the current mt.kernels mode), got {kernels!r}")
    return Kernels.in_use(kernels)


def _norm(width):
    """A normalisation keeps two arrays of its width: its output (which the next op saves),
    and its input (the fused kernel, with the row statistics) or its normalised input (the
    reference). Its input, a residual sum or an embedding, is thereby counted here."""
    return 2 * width


def _scores(k: Kernels, heads, keys, dropout=False):
    """Elements per query token that attention keeps, beyond its output.

    The tiled kernel keeps nothing of size T (its log-sum-exp is one number per head). The
    reference keeps the raw scores (their scaling saves them) and the probabilities,
    (B, H, Tq, Tk) each, and with dropout its mask and the dropped probabilities; a bias
    added in between is not kept.
    """
    if k.attention:
        return 0
    return heads * keys * (2 + 2 * dropout)


def _activation(kind, width, b, k: Kernels):
    """Bytes per token an activation keeps besides its input: its output, and (reference
    code) tanh(u) for GELU-tanh, Phi(x) for exact GELU; for ReLU the boolean x > 0."""
    if kind == "relu":
        return width * b + width
    return width * b * (1 if k.gelu else 2)


def gpt_activations(c, B, T, decoder_len, b, k, mlm_fraction):
    n, d, f, H, L = B * T, c.n_embd, c.d_ff, c.n_head, c.n_layer
    # Per block: two LayerNorms (with the residual sums they normalise), q k v (3d: one
    # array), attention output merged (d); the MLP's pre-activation (f), whose activation is
    # recomputed in backward (F.activation_linear); with dropout, each projection's output
    # and mask (4d).
    per_token = 2 * _norm(d) + 4 * d + f + 2 * 2 * d * (c.resid_pdrop > 0)
    blocks = n * L * b * per_token
    scores = n * b * L * _scores(k, H, T, dropout=c.attn_pdrop > 0)
    # With dropout, the sum of the token and position lookups and its mask (2d; without,
    # the sum is what the first LayerNorm normalises); after the blocks, ln_f.
    embeddings = n * b * (2 * d * (c.embd_pdrop > 0) + _norm(d))
    # The blocked head (F.linear_cross_entropy) keeps no logits: it computes its gradients in
    # forward and hands them to backward, dW with the gradients and dh (d per token) here.
    head = n * d * b
    return {"blocks": blocks, "attention_scores": scores, "embeddings": embeddings, "head": head}


def bert_activations(c, B, T, decoder_len, b, k, mlm_fraction):
    n, h, f, H, L = B * T, c.hidden_size, c.intermediate_size, c.num_attention_heads, c.num_hidden_layers
    # Per block: q, k, v (3h), attention output merged (h), two LayerNorms (with the
    # residual sums they normalise); the FFN's pre-activation (f), whose activation is
    # recomputed in backward (F.activation_linear); with dropout, each projection's output
    # and mask (4h).
    per_token = 4 * h + 2 * _norm(h) + f + 2 * 2 * h * (c.hidden_dropout_prob > 0)
    # The last block's output is kept only at the masked rows the head gathers.
    blocks = n * L * b * per_token - n * b * h
    scores = n * b * L * _scores(k, H, T, dropout=c.attention_probs_dropout_prob > 0)
    # The LayerNorm of the sum of the word, position and type lookups (+ dropout mask and
    # output).
    embeddings = n * b * (_norm(h) + 2 * h * (c.hidden_dropout_prob > 0))
    # The head runs on the masked tokens only: their gathered states, transform output,
    # activation (its output is the LayerNorm's input, counted there), LayerNorm, logits.
    m = mlm_fraction * n
    head = m * (b * (2 * h + _norm(h) + c.vocab_size) + _activation(c.hidden_act, h, b, k) - h * b)
    return {"blocks": blocks, "attention_scores": scores, "embeddings": embeddings, "head": head}


def _t5_ffn(c, b, k):
    """Bytes per token of one T5 feed-forward's inner activations (and its hidden dropout)."""
    f = c.d_ff
    if c.is_gated:   # wi_0 and wi_1 outputs, the GELU, their product
        inner = 3 * f * b + _activation("gelu_tanh", f, b, k)
    elif c.dropout_rate > 0:      # ReLU's output and its x > 0 (ReLU keeps no input)
        inner = _activation("relu", f, b, k)
    else:            # wi output; the ReLU recomputed in backward (F.activation_linear)
        inner = f * b
    return inner + 2 * f * b * (c.dropout_rate > 0)


def t5_activations(c, B, te, decoder_len, b, k, mlm_fraction):
    td = decoder_len or te
    d, a, H = c.d_model, c.num_heads * c.d_kv, c.num_heads
    ne, nd = B * te, B * td
    drop = c.dropout_rate > 0
    # Each sublayer: its RMSNorm (with the residual sum it normalises), + 2d with dropout
    # (the output projection's output and mask); self-attention q k v and output merged (4a);
    # cross-attention q and output merged (2a), and k, v of every encoder token (2a).
    sub = _norm(d) + 2 * d * drop
    encoder = ne * c.num_layers * (b * (2 * sub + 4 * a) + _t5_ffn(c, b, k))
    decoder = nd * c.decoder_layers * (b * (3 * sub + 6 * a) + _t5_ffn(c, b, k))
    decoder += ne * c.decoder_layers * b * 2 * a
    scores = b * (ne * c.num_layers * _scores(k, H, te, dropout=drop)
                  + nd * c.decoder_layers * (_scores(k, H, td, dropout=drop)
                                             + _scores(k, H, te, dropout=drop)))
    # The relative-position bias of each stack, shared by the batch rows and the blocks: its
    # (T, T) int64 buckets, and its (H, T, T) values where the tiled kernel keeps them (the
    # reference adds them to the scores, which keeps neither).
    position_bias = H * (te * te + td * td) * b * k.attention + 8 * (te * te + td * td)
    # Each stack: final RMSNorm, + 4d with dropout (the token lookup and its mask, the final
    # dropout's mask and output; without it, the lookup is what the first RMSNorm normalises).
    embeddings = (ne + nd) * b * (_norm(d) + 4 * d * drop) + position_bias
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
    cross-entropy holds two such arrays, the kernel one; GPT's blocked head, one block of
    rows of them, during forward); the activation's derivative
    (``_BACKWARD_TEMPORARIES`` arrays of the feed-forward width, one with the GELU kernel);
    with reference attention, the gradient of the (B, H, T, T) probabilities and the two
    temporaries of the softmax backward.
    """
    family = family_of(config)
    check_shape(batch_size, seq_len, decoder_len)
    b, k = itemsize(dtype), resolve_kernels(kernels)
    c = config
    td = decoder_len or seq_len
    rows = logit_rows(c, batch_size, seq_len, decoder_len, mlm_fraction)
    if family.blocked_head:
        # The blocked head holds one block of rows of logits at a time (in forward), the
        # kernel writing their gradient over them.
        from minitransformer.functional import head_blocks

        bounds = head_blocks(int(rows), c.vocab_size)
        rows = max((hi - lo for lo, hi in zip(bounds, bounds[1:])), default=0)
    logits = rows * c.vocab_size * b * (1 if k.cross_entropy else 2)
    act, rows = family.ffn_activation(c), batch_size * max(seq_len, td)
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
    family = family_of(config)
    check_shape(batch_size, seq_len, decoder_len)
    b, k = itemsize(dtype), resolve_kernels(kernels)
    parts = family.activations(config, batch_size, seq_len, decoder_len, b, k, mlm_fraction)
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
    b = itemsize(dtype)
    p = count_parameters(config)["total"]
    shape = (config, batch_size, seq_len, dtype, decoder_len, resolve_kernels(kernels), mlm_fraction)
    out = {"weights": p * b, "gradients": p * b, "adam_states": 2 * p * b,
           "activations": sum(activation_memory(*shape).values()),
           "workspace": backward_workspace(*shape)}
    out["total"] = sum(out.values())
    return out
