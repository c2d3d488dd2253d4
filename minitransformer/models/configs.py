"""Model configurations: one frozen dataclass per family, and named presets.

Field names follow the ``transformers`` configs of GPT-2, BERT and T5, so a config reads
the same here and there and converting one is a matter of copying fields. Each config also
answers a few family-neutral questions (``family``, ``d_model``, ``n_layers``, ``n_heads``,
``d_ff``, ``max_positions``) for code that handles every family alike.

Configs are frozen: change one with ``dataclasses.replace(cfg, vocab_size=...)`` (which
checks the new values again) or ``cfg.with_dropout(0.0)``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


# What each annotation of a config field admits. A config is often read from a file someone
# else wrote (config.json), so every field is checked against its type before its value is.
_ADMITS = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def _check_types(cfg) -> None:
    name = type(cfg).__name__
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        kinds = [k.strip() for k in str(f.type).split("|")]
        if v is None and "None" in kinds:
            continue
        allowed = tuple(t for k in kinds for t in _ADMITS.get(k, ()))
        # bool is an int subclass: True is no layer count, and 1 is no switch
        ok = isinstance(v, allowed) and (isinstance(v, bool) == (bool in allowed))
        if not ok:
            raise ValueError(f"{name}: {f.name} must be {' or '.join(kinds)}, got {v!r} ({type(v).__name__})")
        if isinstance(v, float) and not v == v:
            raise ValueError(f"{name}: {f.name} must be a number, got NaN")


def _check(cfg, ints=(), dropouts=(), positive=()):
    name = type(cfg).__name__
    _check_types(cfg)
    for f in ints:
        v = getattr(cfg, f)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{name}: {f} must be a positive integer, got {v!r}")
    for f in dropouts:
        v = getattr(cfg, f)
        if not 0.0 <= v < 1.0:
            raise ValueError(f"{name}: {f} must be a probability in [0, 1), got {v!r}")
    for f in positive:
        v = getattr(cfg, f)
        if not v > 0:
            raise ValueError(f"{name}: {f} must be positive, got {v!r}")


def _check_heads(cfg, width_field, heads_field):
    width, heads = getattr(cfg, width_field), getattr(cfg, heads_field)
    if width % heads:
        raise ValueError(f"{type(cfg).__name__}: {width_field} ({width}) must be divisible by "
                         f"{heads_field} ({heads}) so every head has the same size")


@dataclass(frozen=True)
class GPTConfig:
    """GPT-2 (Radford et al. 2019). Defaults are the 124M model ("gpt2")."""

    vocab_size: int = 50257             # token ids 0 .. vocab_size - 1
    n_positions: int = 1024             # longest sequence (learned position table size)
    n_embd: int = 768                   # model width
    n_layer: int = 12                   # decoder blocks
    n_head: int = 12                    # attention heads (n_embd / n_head each)
    n_inner: int | None = None          # feed-forward width; None means 4 * n_embd
    resid_pdrop: float = 0.1            # dropout after each sublayer, before the residual add
    embd_pdrop: float = 0.1             # dropout on token + position embeddings
    attn_pdrop: float = 0.1             # dropout on attention probabilities
    layer_norm_epsilon: float = 1e-5    # LayerNorm eps
    initializer_range: float = 0.02     # std of N(0, std^2) weight init
    bos_token_id: int = 50256           # <|endoftext|> in GPT-2's vocabulary
    eos_token_id: int = 50256           # the same token ends a document

    def __post_init__(self):
        _check(self, ints=("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"),
               dropouts=("resid_pdrop", "embd_pdrop", "attn_pdrop"),
               positive=("layer_norm_epsilon", "initializer_range"))
        if self.n_inner is not None:
            _check(self, ints=("n_inner",))
        _check_heads(self, "n_embd", "n_head")

    family = property(lambda self: "gpt")
    d_model = property(lambda self: self.n_embd)
    n_layers = property(lambda self: self.n_layer)
    n_heads = property(lambda self: self.n_head)
    d_ff = property(lambda self: self.n_inner or 4 * self.n_embd)
    max_positions = property(lambda self: self.n_positions)

    def with_dropout(self, p: float) -> "GPTConfig":
        return dataclasses.replace(self, resid_pdrop=p, embd_pdrop=p, attn_pdrop=p)


@dataclass(frozen=True)
class BERTConfig:
    """BERT (Devlin et al. 2019). Defaults are BERT-base ("bert-base")."""

    vocab_size: int = 30522                     # token ids 0 .. vocab_size - 1
    hidden_size: int = 768                      # model width
    num_hidden_layers: int = 12                 # encoder blocks
    num_attention_heads: int = 12               # attention heads
    intermediate_size: int = 3072               # feed-forward width
    hidden_act: str = "gelu"                    # exact (erf) GELU; "gelu_tanh" or "relu" also work
    hidden_dropout_prob: float = 0.1            # dropout on embeddings and after each sublayer
    attention_probs_dropout_prob: float = 0.1   # dropout on attention probabilities
    max_position_embeddings: int = 512          # longest sequence (learned position table size)
    type_vocab_size: int = 2                    # segment ids (sentence A / B)
    initializer_range: float = 0.02             # std of N(0, std^2) weight init
    layer_norm_eps: float = 1e-12               # LayerNorm eps (BERT's is tiny)
    pad_token_id: int = 0                       # its embedding row starts at zero, gets no lookup grad

    def __post_init__(self):
        _check(self, ints=("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                           "intermediate_size", "max_position_embeddings", "type_vocab_size"),
               dropouts=("hidden_dropout_prob", "attention_probs_dropout_prob"),
               positive=("layer_norm_eps", "initializer_range"))
        _check_heads(self, "hidden_size", "num_attention_heads")
        if self.hidden_act not in ("gelu", "gelu_tanh", "relu"):
            raise ValueError(f"BERTConfig: hidden_act must be 'gelu', 'gelu_tanh' or 'relu', "
                             f"got {self.hidden_act!r}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"BERTConfig: pad_token_id {self.pad_token_id} must be a token id "
                             f"in [0, {self.vocab_size})")

    family = property(lambda self: "bert")
    d_model = property(lambda self: self.hidden_size)
    n_layers = property(lambda self: self.num_hidden_layers)
    n_heads = property(lambda self: self.num_attention_heads)
    d_ff = property(lambda self: self.intermediate_size)
    max_positions = property(lambda self: self.max_position_embeddings)

    def with_dropout(self, p: float) -> "BERTConfig":
        return dataclasses.replace(self, hidden_dropout_prob=p, attention_probs_dropout_prob=p)


T5_FEED_FORWARD = {"relu": ("relu", False), "gated-gelu": ("gelu_tanh", True)}


@dataclass(frozen=True)
class T5Config:
    """T5 (Raffel et al. 2020). Defaults are T5 v1.0 "t5-small"; v1.1 is
    ``feed_forward_proj="gated-gelu", tie_word_embeddings=False``."""

    vocab_size: int = 32128                     # embedding rows (the tokenizer may use fewer)
    d_model: int = 512                          # model width
    d_kv: int = 64                              # size of each attention head
    d_ff: int = 2048                            # feed-forward width
    num_layers: int = 6                         # encoder blocks
    num_decoder_layers: int | None = None       # decoder blocks; None means num_layers
    num_heads: int = 8                          # attention heads (num_heads * d_kv need not be d_model)
    relative_attention_num_buckets: int = 32    # relative-position buckets per stack
    relative_attention_max_distance: int = 128  # distances from here on share the last bucket
    dropout_rate: float = 0.1                   # every dropout (embeddings, sublayers, attention, FFN)
    layer_norm_epsilon: float = 1e-6            # RMSNorm eps
    initializer_factor: float = 1.0             # multiplies every init std (1.0 in T5)
    feed_forward_proj: str = "relu"             # "relu" (v1.0) or "gated-gelu" (v1.1, tanh GELU)
    tie_word_embeddings: bool = True            # output layer = shared embedding, after d_model**-0.5
    pad_token_id: int = 0                       # padding id
    eos_token_id: int = 1                       # end of sequence
    decoder_start_token_id: int = 0             # first decoder input (the pad id in T5)

    def __post_init__(self):
        _check(self, ints=("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads",
                           "relative_attention_num_buckets", "relative_attention_max_distance"),
               dropouts=("dropout_rate",), positive=("layer_norm_epsilon", "initializer_factor"))
        if self.num_decoder_layers is not None:
            _check(self, ints=("num_decoder_layers",))
        if self.feed_forward_proj not in T5_FEED_FORWARD:
            raise ValueError(f"T5Config: feed_forward_proj must be one of {sorted(T5_FEED_FORWARD)}, "
                             f"got {self.feed_forward_proj!r}")
        if self.relative_attention_num_buckets < 4:
            raise ValueError("T5Config: relative_attention_num_buckets must be at least 4 (each "
                             f"direction needs exact and log-spaced buckets), got "
                             f"{self.relative_attention_num_buckets}")

    family = property(lambda self: "t5")
    n_heads = property(lambda self: self.num_heads)
    max_positions = property(lambda self: None)     # relative positions: no fixed limit

    @property
    def decoder_layers(self) -> int:
        return self.num_layers if self.num_decoder_layers is None else self.num_decoder_layers

    @property
    def n_layers(self) -> int:
        """Blocks in both stacks together."""
        return self.num_layers + self.decoder_layers

    @property
    def activation(self) -> str:
        return T5_FEED_FORWARD[self.feed_forward_proj][0]

    @property
    def is_gated(self) -> bool:
        return T5_FEED_FORWARD[self.feed_forward_proj][1]

    def with_dropout(self, p: float) -> "T5Config":
        return dataclasses.replace(self, dropout_rate=p)


# ---------------------------------------------------------------------------------------
# Presets. The tiny ones train in minutes on two CPU cores; they have no dropout because a
# few minutes of training underfits and dropout would only slow it down. The real shapes
# match the published models parameter for parameter.
# ---------------------------------------------------------------------------------------

PRESETS = {
    "gpt-tiny": GPTConfig(vocab_size=8192, n_positions=128, n_embd=128, n_layer=4, n_head=4,
                          resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
    "bert-tiny": BERTConfig(vocab_size=8192, hidden_size=128, num_hidden_layers=4,
                            num_attention_heads=4, intermediate_size=512,
                            max_position_embeddings=128, hidden_dropout_prob=0.0,
                            attention_probs_dropout_prob=0.0),
    "t5-tiny": T5Config(vocab_size=8192, d_model=128, d_kv=32, d_ff=512, num_layers=2,
                        num_heads=4, dropout_rate=0.0),
    "gpt2": GPTConfig(),
    "bert-base": BERTConfig(),
    "t5-small": T5Config(),
}


def preset(name: str):
    """The config named ``name``: gpt-tiny, bert-tiny, t5-tiny, gpt2, bert-base, t5-small."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def build(config):
    """A freshly initialised model of the family of ``config`` (GPT, BERT or T5)."""
    from minitransformer.models.bert import BERT
    from minitransformer.models.gpt import GPT
    from minitransformer.models.t5 import T5

    for cls, model in ((GPTConfig, GPT), (BERTConfig, BERT), (T5Config, T5)):
        if isinstance(config, cls):
            return model(config)
    raise TypeError(f"build: expected a GPTConfig, BERTConfig or T5Config, got "
                    f"{type(config).__name__}; get one with mt.models.preset(name)")
