"""The three model families, one record each: everything that differs between them above the model.

A family is a model architecture together with how it is pre-trained and used. Its record
names the config and model classes, the pre-training objective (by the name the command
line uses: ``clm``, ``mlm``, ``span``) and how to build it over a token stream, the tiny
preset ``pretrain`` starts from and its learning rate, how its loss counts targets, what
its evaluation reports, and how to show in one line what a pre-trained model learned.
Every other module asks this one instead of testing a family's name:

    fam = families.of(model)              # or of(config), get("bert"), by_objective("span")
    fam.objective, fam.tiny_preset, fam.lr, fam.architecture

Adding a family is one record here, the model's own file (config and model classes, with
``family`` on the config) and its ``transformers`` key table in ``hf/architectures.py``;
the record names its cost formulas, one function each in ``scaling.parameters``,
``scaling.flops`` and ``scaling.memory``.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from minitransformer import models, objectives
from minitransformer.scaling import flops, memory, parameters


@dataclasses.dataclass(frozen=True)
class Family:
    """One model family and what every layer above the model needs to know about it."""

    name: str                       # "gpt": the value of ``config.family``
    architecture: str               # "decoder-only", "encoder-only" or "encoder-decoder"
    config_class: type              # its frozen config dataclass
    model_class: type               # the pre-training model (LM head included)
    objective: str                  # the objective's command-line name: clm, mlm or span
    tiny_preset: str                # the preset ``pretrain`` trains by default
    lr: float                       # peak learning rate of ``pretrain`` on the tiny preset (width 128)
    small_lr: float                 # peak rate of the width-64 checkpoints of ``finetune.tiny``
    shifts_labels: bool             # the loss predicts labels[:, 1:] (a causal LM's shift)
    reports_accuracy: bool          # evaluation also reports the accuracy on the predicted tokens
    batch_key: str | None           # a batch key only this family's batches carry (None: the default)
    used_for: str                   # what a pre-trained model of the family is for (model cards)
    pipeline_tag: str               # the task a model hub shows it under (card front matter)
    hub_tags: tuple                 # the tags people search a hub by (card front matter)
    make_objective: Callable        # (tokens, tokenizer, block_size, seed, shuffle) -> batches
    shape: Callable                 # (d_model, layers, heads, positions, init_std) -> config fields
    sample: Callable                # (model, tokenizer) -> one line showing what it learned
    # Its cost, as ``minitransformer.scaling`` counts it (info, the scaling study, the benchmarks):
    parameters: Callable            # config -> (embedding, non-embedding) parameters
    logit_rows: Callable            # (config, batch, seq_len, decoder_len, mlm_fraction) -> output-layer rows
    step_flops: Callable            # (config, batch, seq_len, decoder_len, head_rows) -> {weights, attention}
    activations: Callable           # (config, batch, seq_len, decoder_len, itemsize, kernels, mlm_fraction)
    ffn_activation: Callable        # config -> the feed-forward's activation: gelu_tanh, gelu or relu
    blocked_head: bool = False      # its loss runs the output layer by blocks of rows (F.linear_cross_entropy)

    def targets(self, labels, ignore_index: int = -100):
        """Where the loss has a target, as a boolean array (the caller counts it)."""
        if self.shifts_labels:
            labels = labels[:, 1:]                  # (B, T) -> (B, T - 1): the first token has no past
        return labels != ignore_index


# ---------------------------------------------------------------------------------------
# Per family: the objective, the shape of a config, a sample of what it learned
# ---------------------------------------------------------------------------------------

def _clm(tokens, tokenizer, block_size: int, seed: int, shuffle: bool = True):
    return objectives.CLMObjective(tokens, block_size, eos_id=tokenizer.eos_id, seed=seed, shuffle=shuffle)


def _mlm(tokens, tokenizer, block_size: int, seed: int, shuffle: bool = True):
    return objectives.MLMObjective(
        tokens, block_size, vocab_size=tokenizer.vocab_size, mask_id=tokenizer.mask_id,
        cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id, pad_id=tokenizer.pad_id,
        special_ids=tokenizer.special_ids, seed=seed, shuffle=shuffle)


def _span(tokens, tokenizer, block_size: int, seed: int, shuffle: bool = True):
    return objectives.SpanCorruptionObjective(
        tokens, block_size, vocab_size=tokenizer.vocab_size, eos_id=tokenizer.eos_id,
        pad_id=tokenizer.pad_id, decoder_start_id=tokenizer.pad_id, seed=seed,
        special_ids=tokenizer.special_ids, shuffle=shuffle)


def _gpt_shape(d: int, layers: int, heads: int, positions: int, init_std: float | None = None) -> dict:
    out = dict(n_embd=d, n_layer=layers, n_head=heads, n_inner=None, n_positions=positions)
    return out if init_std is None else {**out, "initializer_range": init_std}


def _bert_shape(d: int, layers: int, heads: int, positions: int, init_std: float | None = None) -> dict:
    out = dict(hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads,
               intermediate_size=4 * d, max_position_embeddings=positions)
    return out if init_std is None else {**out, "initializer_range": init_std}


def _t5_shape(d: int, layers: int, heads: int, positions: int, init_std: float | None = None) -> dict:
    # T5 has no position table (relative buckets) and scales its init by the fan-in itself;
    # the decoder has as many blocks as the encoder.
    return dict(d_model=d, d_kv=d // heads, d_ff=4 * d, num_layers=layers, num_decoder_layers=None,
                num_heads=heads)


def _gpt_sample(model, tokenizer) -> str:
    from minitransformer import generate

    prompt = "Return the"
    ids = generate.generate(model, [tokenizer.encode(prompt)], max_new_tokens=40, temperature=0.8,
                            top_k=40, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id, seed=0)[0]
    return repr(prompt + tokenizer.decode([i for i in ids if i != tokenizer.eos_id]))


def _bert_sample(model, tokenizer) -> str:
    from minitransformer import generate

    text = f"Return the {tokenizer.id_to_token(tokenizer.mask_id)} of the list."
    best = generate.fill_mask(model, tokenizer, text, top_k=3)[0]
    return f"{text!r} -> " + ", ".join(f"{t!r} ({p:.2f})" for t, p in best)


def _t5_sample(model, tokenizer) -> str:
    from minitransformer import generate

    text = f"Return the {tokenizer.id_to_token(tokenizer.sentinel_id(0))} of the list."
    filled, spans = generate.fill_spans(model, tokenizer, text, max_new_tokens=12)
    return f"{text!r} -> {filled!r}"


# ---------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------

FAMILIES = (
    Family("gpt", "decoder-only", models.GPTConfig, models.GPT, objective="clm", tiny_preset="gpt-tiny",
           lr=3e-3, small_lr=3e-3, shifts_labels=True, reports_accuracy=False, batch_key=None,
           used_for="text generation and zero-shot prompting (compare the likelihoods of candidate answers)",
           pipeline_tag="text-generation", hub_tags=("gpt2", "causal-lm"),
           make_objective=_clm, shape=_gpt_shape, sample=_gpt_sample,
           parameters=parameters.gpt_parameters, logit_rows=flops.gpt_logit_rows, step_flops=flops.gpt_step_flops,
           activations=memory.gpt_activations, ffn_activation=lambda c: "gelu_tanh", blocked_head=True),
    Family("bert", "encoder-only", models.BERTConfig, models.BERT, objective="mlm", tiny_preset="bert-tiny",
           lr=1e-3, small_lr=2e-3, shifts_labels=False, reports_accuracy=True, batch_key="token_type_ids",
           used_for="sentence classification and token classification (e.g. named entities) after fine-tuning",
           pipeline_tag="fill-mask", hub_tags=("bert", "masked-lm"),
           make_objective=_mlm, shape=_bert_shape, sample=_bert_sample,
           parameters=parameters.bert_parameters, logit_rows=flops.bert_logit_rows,
           step_flops=flops.bert_step_flops, activations=memory.bert_activations,
           ffn_activation=lambda c: c.hidden_act),
    Family("t5", "encoder-decoder", models.T5Config, models.T5, objective="span", tiny_preset="t5-tiny",
           lr=3e-3, small_lr=3e-3, shifts_labels=False, reports_accuracy=False, batch_key="decoder_input_ids",
           used_for="sequence-to-sequence tasks (translation, summarisation, question answering) after "
                    "fine-tuning",
           pipeline_tag="text2text-generation", hub_tags=("t5", "span-corruption"),
           make_objective=_span, shape=_t5_shape, sample=_t5_sample,
           parameters=parameters.t5_parameters, logit_rows=flops.t5_logit_rows, step_flops=flops.t5_step_flops,
           activations=memory.t5_activations, ffn_activation=lambda c: "gelu_tanh" if c.is_gated else "relu"),
)
NAMES = tuple(f.name for f in FAMILIES)
OBJECTIVES = tuple(f.objective for f in FAMILIES)
_BY_NAME = {f.name: f for f in FAMILIES}
_BY_OBJECTIVE = {f.objective: f for f in FAMILIES}


def get(name: str) -> Family:
    """The family called ``name`` ("gpt", "bert", "t5")."""
    if name not in _BY_NAME:
        raise ValueError(f"unknown family {name!r}; choose one of {', '.join(NAMES)}")
    return _BY_NAME[name]


def by_objective(objective: str) -> Family:
    """The family pre-trained with ``objective`` ("clm", "mlm", "span")."""
    if objective not in _BY_OBJECTIVE:
        raise ValueError(f"unknown objective {objective!r}; choose "
                         + ", ".join(f"{f.objective} ({f.name.upper()})" for f in FAMILIES))
    return _BY_OBJECTIVE[objective]


def of(thing) -> Family:
    """The family of a config or a model (its ``config``); ``get`` takes a name."""
    name = getattr(thing, "family", None)
    if not isinstance(name, str):
        name = getattr(getattr(thing, "config", None), "family", None)
    if name not in _BY_NAME:
        classes = [f.config_class.__name__ for f in FAMILIES]
        raise TypeError(f"expected a {', '.join(classes[:-1])} or {classes[-1]} (or a model of one), got "
                        f"{type(thing).__name__}; get one with mt.models.preset(name)")
    return _BY_NAME[name]


def of_batch(batch: dict) -> Family:
    """The family a batch was built for, read from its keys: T5 batches carry decoder inputs
    and BERT batches token types (and a sentence classifier's labels are one per row); a
    batch with none of these is read as a causal-LM batch."""
    for family in FAMILIES:
        if family.batch_key is not None and family.batch_key in batch:
            return family
    if getattr(batch["labels"], "ndim", 2) == 1:
        return get("bert")
    return next(f for f in FAMILIES if f.batch_key is None)
