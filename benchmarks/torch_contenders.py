"""PyTorch written for speed: GPT-2, BERT and T5 as a user who wants a fast step would write them.

The ``transformers`` twin is the model a user would *pick*; these are the models a user who
cares about speed would *write*, in the style of nanoGPT:

- one fused q/k/v projection per self-attention (one GEMM instead of three), and one fused
  k/v projection for cross-attention;
- ``torch.nn.functional.scaled_dot_product_attention`` (SDPA), PyTorch's fused attention,
  with ``is_causal`` instead of a mask where the model is causal, and no padding mask where
  the batch has no padding (a packed pre-training batch has none);
- the library's fused norms and activations: ``F.layer_norm``, ``F.rms_norm``,
  ``F.gelu(approximate="tanh")`` for GPT-2, exact ``F.gelu`` for BERT;
- a tied output layer (``F.linear`` against the embedding table), and a loss that reads
  the logits in place (GPT: the shifted targets are padded with the ignore index instead of
  slicing the logits; BERT: the vocabulary projection only at the labelled positions);
- ``torch.optim.AdamW(fused=True)`` where the build has it (``make_optimizer``).

Each model's ``forward(**batch)`` returns the mean cross-entropy of the family's objective,
so ``torch.compile(model)`` compiles the whole loss, and it holds *our* weights
(``load_ours``): the benchmark checks that loss and every gradient agree with ours before
it times anything.

Parameter names follow ours (``minitransformer.models``) wherever the layout is the same, so
that the map between the two is by name; the fused projections are the exceptions, named
``qkv`` (our ``q``, ``k``, ``v`` stacked by rows, in that order) and ``kv`` (``k`` over ``v``).
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100


def split_heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """(B, T, H*D) -> (B, H, T, D)."""
    b, t, c = x.shape
    return x.view(b, t, n_head, c // n_head).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, D) -> (B, T, H*D)."""
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


# =======================================================================================
# GPT-2: pre-LN decoder, learned positions, tanh-GELU, tied head
# =======================================================================================

class GPTBlock(nn.Module):
    """x += o(attn(LN_1(x)));  x += wo(gelu_tanh(wi(LN_2(x))))."""

    def __init__(self, d: int, n_head: int, d_ff: int, eps: float):
        super().__init__()
        self.n_head, self.eps = n_head, eps
        self.attn_norm = nn.LayerNorm(d, eps=eps)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(d, 3 * d)
        self.attn.o = nn.Linear(d, d)
        self.ff_norm = nn.LayerNorm(d, eps=eps)
        self.ff = nn.Module()
        self.ff.wi = nn.Linear(d, d_ff)
        self.ff.wo = nn.Linear(d_ff, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.attn.qkv(self.attn_norm(x)).chunk(3, dim=-1)         # (B, T, C) -> 3 x (B, T, C)
        q, k, v = (split_heads(t, self.n_head) for t in (q, k, v))         # -> (B, H, T, D)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn.o(merge_heads(y))                                 # (B, H, T, D) -> (B, T, C)
        return x + self.ff.wo(F.gelu(self.ff.wi(self.ff_norm(x)), approximate="tanh"))


class GPT(nn.Module):
    """GPT-2 with its tied language-modelling head; ``forward`` returns the causal-LM loss."""

    def __init__(self, cfg):
        super().__init__()
        d = cfg.n_embd
        self.wte = nn.Embedding(cfg.vocab_size, d)
        self.wpe = nn.Embedding(cfg.n_positions, d)
        self.blocks = nn.ModuleList(GPTBlock(d, cfg.n_head, cfg.d_ff, cfg.layer_norm_epsilon)
                                    for _ in range(cfg.n_layer))
        self.final_norm = nn.LayerNorm(d, eps=cfg.layer_norm_epsilon)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the logits at t against labels[t + 1] (-100 ignored)."""
        b, t = input_ids.shape
        pos = torch.arange(t, device=input_ids.device)
        x = self.wte(input_ids) + self.wpe(pos)                             # (B, T) -> (B, T, C)
        for block in self.blocks:
            x = block(x)
        logits = F.linear(self.final_norm(x), self.wte.weight)             # (B, T, C) -> (B, T, V)
        # the last position has no next token: its target is the ignore index, so the
        # logits are read whole (a view) instead of sliced (a copy)
        targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
        return F.cross_entropy(logits.view(b * t, -1), targets.reshape(b * t), ignore_index=IGNORE_INDEX)


# =======================================================================================
# BERT: post-LN encoder, token types, erf-GELU, MLM head on the labelled positions only
# =======================================================================================

class BertBlock(nn.Module):
    """x = LN(x + o(attn(x)));  x = LN(x + wo(gelu(wi(x))))."""

    def __init__(self, d: int, n_head: int, d_ff: int, eps: float):
        super().__init__()
        self.n_head = n_head
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(d, 3 * d)
        self.attn.o = nn.Linear(d, d)
        self.attn_norm = nn.LayerNorm(d, eps=eps)
        self.ff = nn.Module()
        self.ff.wi = nn.Linear(d, d_ff)
        self.ff.wo = nn.Linear(d_ff, d)
        self.ff_norm = nn.LayerNorm(d, eps=eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        q, k, v = (split_heads(t, self.n_head) for t in self.attn.qkv(x).chunk(3, dim=-1))  # -> (B, H, T, D)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = self.attn_norm(x + self.attn.o(merge_heads(y)))
        return self.ff_norm(x + self.ff.wo(F.gelu(self.ff.wi(x))))


class BERT(nn.Module):
    """BERT with its masked-LM head; ``forward`` returns the masked-LM loss."""

    def __init__(self, cfg):
        super().__init__()
        d, eps = cfg.hidden_size, cfg.layer_norm_eps
        self.bert = nn.Module()
        self.bert.embeddings = nn.Module()
        self.bert.embeddings.word_embeddings = nn.Embedding(cfg.vocab_size, d)
        self.bert.embeddings.position_embeddings = nn.Embedding(cfg.max_position_embeddings, d)
        self.bert.embeddings.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, d)
        self.bert.embeddings.norm = nn.LayerNorm(d, eps=eps)
        self.bert.blocks = nn.ModuleList(BertBlock(d, cfg.num_attention_heads, cfg.intermediate_size, eps)
                                         for _ in range(cfg.num_hidden_layers))
        self.mlm = nn.Module()
        self.mlm.transform = nn.Linear(d, d)
        self.mlm.norm = nn.LayerNorm(d, eps=eps)
        self.mlm.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, token_type_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy at the labelled positions (labels != -100)."""
        emb = self.bert.embeddings
        b, t = input_ids.shape
        pos = torch.arange(t, device=input_ids.device)
        x = emb.word_embeddings(input_ids) + emb.token_type_embeddings(token_type_ids)   # (B, T) -> (B, T, C)
        x = emb.norm(x + emb.position_embeddings(pos))
        # padding keys masked out (True = attend); None when the batch has no padding
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]   # (B, 1, 1, T)
        for block in self.bert.blocks:
            x = block(x, mask)
        flat = labels.reshape(-1)
        picked = (flat != IGNORE_INDEX).nonzero().squeeze(1)               # indices of the targets
        h = x.reshape(b * t, -1).index_select(0, picked)                   # (B*T, C) -> (N, C)
        h = self.mlm.norm(F.gelu(self.mlm.transform(h)))
        logits = F.linear(h, emb.word_embeddings.weight, self.mlm.bias)    # (N, C) -> (N, V)
        return F.cross_entropy(logits, flat.index_select(0, picked))


# =======================================================================================
# T5: pre-RMSNorm encoder-decoder, relative position bias, no biases, unscaled scores
# =======================================================================================

def relative_position_bucket(relative_position: torch.Tensor, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> torch.Tensor:
    """key_pos - query_pos -> one of ``num_buckets`` buckets, as T5 maps them (the logarithm
    in float32): exact buckets for small distances, log-spaced ones up to max_distance."""
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).long() * num_buckets
        n = relative_position.abs()
    else:
        n = -torch.clamp(relative_position, max=0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    ratio = torch.clamp(n, min=max_exact).float() / max_exact       # clamped only so log never sees 0
    scaled = torch.log(ratio) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    large = torch.clamp(max_exact + scaled.long(), max=num_buckets - 1)
    return buckets + torch.where(is_small, n, large)


class T5Attention(nn.Module):
    """Self-attention with one fused q/k/v projection, or cross-attention with q and a fused k/v."""

    def __init__(self, d: int, n_head: int, d_kv: int, cross: bool):
        super().__init__()
        self.n_head, inner = n_head, n_head * d_kv
        if cross:
            self.q = nn.Linear(d, inner, bias=False)
            self.kv = nn.Linear(d, 2 * inner, bias=False)
        else:
            self.qkv = nn.Linear(d, 3 * inner, bias=False)
        self.o = nn.Linear(inner, d, bias=False)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None, memory: torch.Tensor | None = None,
                is_causal: bool = False) -> torch.Tensor:
        if memory is None:
            q, k, v = self.qkv(x).chunk(3, dim=-1)                          # (B, T, C) -> 3 x (B, T, H*D)
        else:
            q = self.q(x)
            k, v = self.kv(memory).chunk(2, dim=-1)                         # (B, Te, C) -> 2 x (B, Te, H*D)
        q, k, v = (split_heads(t, self.n_head) for t in (q, k, v))
        # T5 does not divide the scores by sqrt(D): its initialisation absorbs the scale
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=is_causal, scale=1.0)
        return self.o(merge_heads(y))                                       # (B, H, T, D) -> (B, T, C)


class T5Block(nn.Module):
    """x += attn(rms(x), bias);  [x += cross(rms(x), memory)];  x += ff(rms(x))."""

    def __init__(self, c, cross: bool):
        super().__init__()
        self.eps, self.activation, self.gated = c.layer_norm_epsilon, c.activation, c.is_gated
        self.attn_norm = nn.RMSNorm(c.d_model, eps=self.eps)
        self.attn = T5Attention(c.d_model, c.num_heads, c.d_kv, cross=False)
        if cross:
            self.cross_norm = nn.RMSNorm(c.d_model, eps=self.eps)
            self.cross_attn = T5Attention(c.d_model, c.num_heads, c.d_kv, cross=True)
        self.ff_norm = nn.RMSNorm(c.d_model, eps=self.eps)
        self.ff = nn.Module()
        if self.gated:
            self.ff.wi_0 = nn.Linear(c.d_model, c.d_ff, bias=False)
            self.ff.wi_1 = nn.Linear(c.d_model, c.d_ff, bias=False)
        else:
            self.ff.wi = nn.Linear(c.d_model, c.d_ff, bias=False)
        self.ff.wo = nn.Linear(c.d_ff, c.d_model, bias=False)

    def feed_forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.gated:                                                      # v1.1: gelu_tanh(wi_0 h) * wi_1 h
            return self.ff.wo(F.gelu(self.ff.wi_0(h), approximate="tanh") * self.ff.wi_1(h))
        return self.ff.wo(F.relu(self.ff.wi(h)))

    def forward(self, x, bias, memory=None, memory_mask=None):
        x = x + self.attn(self.attn_norm(x), bias)
        if memory is not None:
            x = x + self.cross_attn(self.cross_norm(x), memory_mask, memory=memory)
        return x + self.feed_forward(self.ff_norm(x))


class T5Stack(nn.Module):
    """Blocks sharing one relative position bias (computed once per step), then the final RMSNorm."""

    def __init__(self, c, decoder: bool):
        super().__init__()
        self.decoder = decoder
        self.num_buckets, self.max_distance = c.relative_attention_num_buckets, c.relative_attention_max_distance
        self.relative_attention_bias = nn.Embedding(self.num_buckets, c.num_heads)
        layers = c.decoder_layers if decoder else c.num_layers
        self.blocks = nn.ModuleList(T5Block(c, cross=decoder) for _ in range(layers))
        self.final_norm = nn.RMSNorm(c.d_model, eps=c.layer_norm_epsilon)
        self._buckets: dict = {}        # (T, device) -> the bucket of every (query, key) pair

    def position_bias(self, t: int, device) -> torch.Tensor:
        """(1, H, T, T): the learned bias of each head for each (query, key) pair; the decoder's
        also holds -inf above the diagonal (the causal mask, folded in: SDPA takes one mask)."""
        key = (t, str(device))
        if key not in self._buckets:    # integer work that depends on T alone: once per length
            pos = torch.arange(t, device=device)
            buckets = relative_position_bucket(pos[None, :] - pos[:, None], not self.decoder, self.num_buckets,
                                               self.max_distance)
            causal = None
            if self.decoder:
                causal = torch.full((t, t), float("-inf"), device=device).triu(1)
            self._buckets[key] = (buckets, causal)
        buckets, causal = self._buckets[key]
        bias = self.relative_attention_bias(buckets).permute(2, 0, 1)[None]   # (T, T, H) -> (1, H, T, T)
        return bias if causal is None else bias + causal.to(bias.dtype)

    def forward(self, x, memory=None, mask=None, memory_mask=None):
        bias = self.position_bias(x.shape[1], x.device)
        if mask is not None:
            bias = bias + mask                                              # (1, H, T, T) + (B, 1, 1, T)
        for block in self.blocks:
            x = block(x, bias, memory, memory_mask)
        return self.final_norm(x)


def additive_mask(attention_mask: torch.Tensor | None, dtype) -> torch.Tensor | None:
    """(B, T) 1/0 -> (B, 1, 1, T) 0/-inf, added to scores; None when there is no padding mask."""
    if attention_mask is None:
        return None
    zero = torch.zeros((), dtype=dtype, device=attention_mask.device)
    return torch.where(attention_mask.bool(), zero, float("-inf"))[:, None, None, :]


class T5(nn.Module):
    """T5 with its language-modelling head; ``forward`` returns the decoder's cross-entropy."""

    def __init__(self, cfg):
        super().__init__()
        self.d_model = cfg.d_model
        self.shared = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.encoder = T5Stack(cfg, decoder=False)
        self.decoder = T5Stack(cfg, decoder=True)
        self.lm_head = None if cfg.tie_word_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

    def forward(self, input_ids, decoder_input_ids, labels, attention_mask=None, decoder_attention_mask=None):
        dtype = self.shared.weight.dtype
        memory_mask = additive_mask(attention_mask, dtype)
        z = self.encoder(self.shared(input_ids), mask=memory_mask)         # (B, Te) -> (B, Te, C)
        g = self.decoder(self.shared(decoder_input_ids), memory=z, mask=additive_mask(decoder_attention_mask, dtype),
                         memory_mask=memory_mask)                           # (B, Td) -> (B, Td, C)
        if self.lm_head is None:                                            # tied: rescaled by d_model^-0.5
            logits = F.linear(g * self.d_model ** -0.5, self.shared.weight)
        else:
            logits = self.lm_head(g)                                        # (B, Td, C) -> (B, Td, V)
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)


# =======================================================================================
# Building one, giving it our weights, its batch and its optimizer
# =======================================================================================

MODELS = {"gpt": GPT, "bert": BERT, "t5": T5}
# The batch keys each forward takes; padding masks only where they mask something.
KEYS = {"gpt": ("input_ids", "labels"),
        "bert": ("input_ids", "labels", "token_type_ids", "attention_mask"),
        "t5": ("input_ids", "decoder_input_ids", "labels", "attention_mask", "decoder_attention_mask")}


def build(family: str, cfg) -> nn.Module:
    """The fast model of ``family`` for our config ``cfg``, in float32, in training mode (no
    dropout: every benchmark shape turns it off, and a model with dropout is refused)."""
    rates = [getattr(cfg, f) for f in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "hidden_dropout_prob",
                                       "attention_probs_dropout_prob", "dropout_rate") if hasattr(cfg, f)]
    if any(rates):
        raise ValueError(f"torch_contenders.build: the fast {family} has no dropout, but the config has rates "
                         f"{rates}; benchmark a config with dropout 0 (cfg.with_dropout(0.0))")
    return MODELS[family](cfg).train()


def batch_for(family: str, batch: dict, device: str = "cpu") -> dict:
    """The forward's keyword arguments for a batch of NumPy arrays, as torch tensors. A padding
    mask of all ones masks nothing, so it is left out, as a user who packs sequences would."""
    for k in batch:
        if k.endswith("attention_mask") and k not in KEYS[family] and not batch[k].all():
            raise ValueError(f"torch_contenders: the fast {family} takes no {k}, but this batch pads "
                             f"({int((batch[k] == 0).sum())} padded positions); use a packed batch")
    out = {}
    for k in KEYS[family]:
        if k not in batch or (k.endswith("attention_mask") and batch[k].all()):
            continue
        out[k] = torch.from_numpy(batch[k]).to(device)
    return out


def _fused_name(our_name: str, own: dict) -> tuple[str, int] | None:
    """Our q/k/v projection name -> (the fused parameter holding it, its block index), or None."""
    m = re.fullmatch(r"(.*(?:attn|cross_attn))\.([qkv])\.(weight|bias)", our_name)
    if m is None:
        return None
    prefix, part, kind = m.groups()
    for fused in ("qkv", "kv"):
        name = f"{prefix}.{fused}.{kind}"
        if name in own and part in fused:
            return name, fused.index(part)
    return None


def parameter_map(model: nn.Module, ours) -> list[tuple]:
    """[(our name, our Parameter, torch Parameter, rows)]: ``rows`` is None where the two are
    the same tensor, or the slice of rows of a fused torch parameter that holds ours."""
    own = dict(model.named_parameters())
    rows, used = [], set()
    for name, p in ours.named_parameters():
        if name in own:
            rows.append((name, p, own[name], None))
            used.add(name)
            continue
        fused = _fused_name(name, own)
        if fused is None:
            raise KeyError(f"torch_contenders: our parameter {name} has no counterpart in the fast "
                           f"{type(model).__name__}; add it there (by name, or to a fused qkv/kv)")
        key, index = fused
        n = p.shape[0]
        rows.append((name, p, own[key], slice(index * n, (index + 1) * n)))
        used.add(key)
    left = sorted(set(own) - used)
    if left:
        raise KeyError(f"torch_contenders: the fast {type(model).__name__} has parameters ours lacks: {left[:5]}")
    return rows


def load_ours(mapping: list[tuple]) -> None:
    """Copy our weights into the torch model, each into its tensor or its rows of a fused one."""
    with torch.no_grad():
        for _, p, q, rows in mapping:
            source = torch.from_numpy(p.numpy()).to(q.device, q.dtype)
            if source.shape != (q if rows is None else q[rows]).shape:
                raise ValueError(f"torch_contenders: shape {tuple(source.shape)} of ours does not fit "
                                 f"{tuple(q.shape)} (rows {rows})")
            (q if rows is None else q[rows]).copy_(source)


def decay_groups(mapping: list[tuple], no_decay: set, weight_decay: float) -> list[dict]:
    """AdamW's two groups, the same parameters exempt as ours; a fused parameter's parts must
    agree (q/k/v weights all decay, their biases all do not)."""
    exempt: dict = {}
    for name, _, q, _ in mapping:
        flag = name in no_decay
        if exempt.setdefault(id(q), flag) != flag:
            raise ValueError(f"torch_contenders: {name} is fused with parameters of another weight-decay "
                             "group; AdamW would treat the fused tensor as one")
    params = {id(q): q for _, _, q, _ in mapping}
    return [{"params": [q for k, q in params.items() if not exempt[k]], "weight_decay": weight_decay},
            {"params": [q for k, q in params.items() if exempt[k]], "weight_decay": 0.0}]


def make_optimizer(groups: list[dict], **hyper) -> tuple[torch.optim.Optimizer, str]:
    """``torch.optim.AdamW`` with ``fused=True`` where this build has a fused kernel for the
    parameters' device (recent builds do on the CPU), else ``foreach=True`` (one multi-tensor
    pass per update term). Returns (optimizer, "fused" or "foreach")."""
    device = groups[0]["params"][0].device
    try:
        probe = nn.Parameter(torch.zeros(2, device=device))
        probe.grad = torch.ones(2, device=device)
        torch.optim.AdamW([probe], fused=True).step()
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, foreach=True, **hyper), "foreach"
    return torch.optim.AdamW(groups, fused=True, **hyper), "fused"
