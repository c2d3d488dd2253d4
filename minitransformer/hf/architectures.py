"""Per transformers architecture (one for each of our families): the config translation
both ways, and the table of parameter names.

Each table row reads ``(our parameter, transformers key, layout)``. ``SAME`` copies the
array; ``CONV1D`` transposes it, because GPT-2 stores its projections as "Conv1D" weights of
shape (in, out) where our Linear holds (out, in). Rows with ``{i}`` repeat for every block.

Besides the rows, each family names
- ``tied(model)``: keys a checkpoint may also hold that are the same tensor as another key
  (an output layer tied to the embedding), {alias: source}. When present they must equal
  their source, since our model has one array for both; ``aliases`` are those a file may
  hold *instead of* their source, which is then read through them.
- ``ignored``: keys that are not parameters of anything we build, each with the reason.

and the steps of a load: ``prepare`` (canonical key names), ``config_from_hf``, ``build``.

Config translation copies the fields that share names (our configs use transformers'
names) and refuses options that would change the computation in a way our models do not
implement, naming the option, so a checkpoint never loads into a model that computes
something else.
"""
from __future__ import annotations

import re

import numpy

from minitransformer import models

SAME, CONV1D = "same", "conv1d"


class UnsupportedConfig(ValueError):
    """A transformers config uses an option our models do not implement."""


def _require(raw: dict, key: str, allowed, family: str):
    value = raw.get(key, allowed[0])
    if value not in allowed:
        raise UnsupportedConfig(
            f"{family} config.json has {key}={value!r}; minitransformer's {family} supports only "
            f"{' or '.join(repr(a) for a in allowed)}, so this checkpoint would compute something else")
    return value


def _copy_fields(raw: dict, names) -> dict:
    return {n: raw[n] for n in names if n in raw and raw[n] is not None}


def _first_id(value):
    """transformers allows a list of end-of-sequence ids; our configs keep one."""
    return value[0] if isinstance(value, list) and value else value


def expand(rows, count: int, ours_prefix: str, theirs_prefix: str):
    """Rows of one block, repeated for blocks 0..count-1 under the two prefixes."""
    return [(f"{ours_prefix.format(i=i)}{o}", f"{theirs_prefix.format(i=i)}{t}", layout)
            for i in range(count) for o, t, layout in rows]


# =======================================================================================
# GPT-2 (GPT2LMHeadModel; a GPT2Model folder lacks the "transformer." prefix)
# =======================================================================================

GPT2_TOP = [
    ("wte.weight", "transformer.wte.weight", SAME),
    ("wpe.weight", "transformer.wpe.weight", SAME),
    ("final_norm.weight", "transformer.ln_f.weight", SAME),
    ("final_norm.bias", "transformer.ln_f.bias", SAME),
]
GPT2_BLOCK = [           # under blocks.{i}.       under transformer.h.{i}.
    ("attn_norm.weight", "ln_1.weight", SAME),
    ("attn_norm.bias", "ln_1.bias", SAME),
    ("attn.qkv.weight", "attn.c_attn.weight", CONV1D),     # q, k, v concatenated, in that order
    ("attn.qkv.bias", "attn.c_attn.bias", SAME),
    ("attn.o.weight", "attn.c_proj.weight", CONV1D),
    ("attn.o.bias", "attn.c_proj.bias", SAME),
    ("ff_norm.weight", "ln_2.weight", SAME),
    ("ff_norm.bias", "ln_2.bias", SAME),
    ("ff.wi.weight", "mlp.c_fc.weight", CONV1D),
    ("ff.wi.bias", "mlp.c_fc.bias", SAME),
    ("ff.wo.weight", "mlp.c_proj.weight", CONV1D),
    ("ff.wo.bias", "mlp.c_proj.bias", SAME),
]
GPT2_TIED = {"lm_head.weight": "transformer.wte.weight"}
GPT2_IGNORED = {
    r"transformer\.h\.\d+\.attn\.(bias|masked_bias)": "the causal-mask buffers of old checkpoints, not weights",
}
GPT2_FIELDS = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner", "resid_pdrop",
               "embd_pdrop", "attn_pdrop", "layer_norm_epsilon", "initializer_range", "bos_token_id",
               "eos_token_id")


class GPT2Family:
    model_type = "gpt2"
    bos_is_eos = True           # GPT-2 starts documents with its end-of-text token
    aliases, ignored = GPT2_TIED, GPT2_IGNORED

    @staticmethod
    def prepare(raw: dict, tensors: dict) -> dict:
        if "wte.weight" in tensors and "transformer.wte.weight" not in tensors:   # a GPT2Model folder
            return {("transformer." + k if not k.startswith("lm_head.") else k): v for k, v in tensors.items()}
        return tensors

    @staticmethod
    def config_from_hf(raw: dict, tensors: dict):
        _require(raw, "activation_function", ("gelu_new", "gelu_pytorch_tanh"), "GPT-2")
        _require(raw, "scale_attn_weights", (True,), "GPT-2")
        _require(raw, "scale_attn_by_inverse_layer_idx", (False,), "GPT-2")
        _require(raw, "add_cross_attention", (False,), "GPT-2")
        fields = _copy_fields(raw, GPT2_FIELDS)
        for k in ("bos_token_id", "eos_token_id"):
            if k in fields:
                fields[k] = _first_id(fields[k])
        return models.GPTConfig(**fields)

    @staticmethod
    def build(config, tensors: dict):
        return models.GPT(config)

    @staticmethod
    def table(model):
        return GPT2_TOP + expand(GPT2_BLOCK, model.config.n_layer, "blocks.{i}.", "transformer.h.{i}.")

    @staticmethod
    def tied(model) -> dict:
        return GPT2_TIED

    @staticmethod
    def config_to_hf(model) -> dict:
        c = model.config
        fields = {f: getattr(c, f) for f in GPT2_FIELDS}
        for k in ("bos_token_id", "eos_token_id"):
            # GPT-2's default 50256 in a smaller vocabulary names no token: write "none".
            if not 0 <= fields[k] < c.vocab_size:
                fields[k] = None
        return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", **fields,
                "activation_function": "gelu_new", "scale_attn_weights": True, "tie_word_embeddings": True}


# =======================================================================================
# BERT (BertForMaskedLM or BertForPreTraining -> our BERT; BertModel -> our BertModel)
# =======================================================================================

BERT_EMBEDDINGS = [      # under the body prefix ("bert." in BERT, "" in a BertModel), both sides
    ("embeddings.word_embeddings.weight", "embeddings.word_embeddings.weight", SAME),
    ("embeddings.position_embeddings.weight", "embeddings.position_embeddings.weight", SAME),
    ("embeddings.token_type_embeddings.weight", "embeddings.token_type_embeddings.weight", SAME),
    ("embeddings.norm.weight", "embeddings.LayerNorm.weight", SAME),
    ("embeddings.norm.bias", "embeddings.LayerNorm.bias", SAME),
]
BERT_BLOCK = [           # under blocks.{i}.       under encoder.layer.{i}.
    ("attn.q.weight", "attention.self.query.weight", SAME),
    ("attn.q.bias", "attention.self.query.bias", SAME),
    ("attn.k.weight", "attention.self.key.weight", SAME),
    ("attn.k.bias", "attention.self.key.bias", SAME),
    ("attn.v.weight", "attention.self.value.weight", SAME),
    ("attn.v.bias", "attention.self.value.bias", SAME),
    ("attn.o.weight", "attention.output.dense.weight", SAME),
    ("attn.o.bias", "attention.output.dense.bias", SAME),
    ("attn_norm.weight", "attention.output.LayerNorm.weight", SAME),
    ("attn_norm.bias", "attention.output.LayerNorm.bias", SAME),
    ("ff.wi.weight", "intermediate.dense.weight", SAME),
    ("ff.wi.bias", "intermediate.dense.bias", SAME),
    ("ff.wo.weight", "output.dense.weight", SAME),
    ("ff.wo.bias", "output.dense.bias", SAME),
    ("ff_norm.weight", "output.LayerNorm.weight", SAME),
    ("ff_norm.bias", "output.LayerNorm.bias", SAME),
]
BERT_POOLER = [
    ("pooler.weight", "pooler.dense.weight", SAME),
    ("pooler.bias", "pooler.dense.bias", SAME),
]
BERT_MLM_HEAD = [
    ("mlm.transform.weight", "cls.predictions.transform.dense.weight", SAME),
    ("mlm.transform.bias", "cls.predictions.transform.dense.bias", SAME),
    ("mlm.norm.weight", "cls.predictions.transform.LayerNorm.weight", SAME),
    ("mlm.norm.bias", "cls.predictions.transform.LayerNorm.bias", SAME),
    ("mlm.bias", "cls.predictions.bias", SAME),
]
BERT_TIED = {
    "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}
BERT_IGNORED = {
    r"(bert\.)?embeddings\.position_ids": "a buffer of 0..max_positions-1, not a weight",
    r"cls\.seq_relationship\.(weight|bias)": "the next-sentence-prediction head, which masked-LM BERT has no use for",
}
BERT_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
               "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
               "type_vocab_size", "initializer_range", "layer_norm_eps", "pad_token_id")
BERT_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}


class BertFamily:
    model_type = "bert"
    bos_is_eos = False
    aliases, ignored = BERT_TIED, BERT_IGNORED

    @staticmethod
    def prepare(raw: dict, tensors: dict) -> dict:
        renamed = {}
        for k, v in tensors.items():
            # TensorFlow-era checkpoints name LayerNorm parameters gamma and beta.
            k = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", k)
            k = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", k)
            renamed[k] = v
        if not BertFamily.is_masked_lm(renamed):
            # No MLM head: a bare body, whether saved as BertModel or under a task model's "bert.".
            renamed = {k.removeprefix("bert."): v for k, v in renamed.items()}
        return renamed

    @staticmethod
    def config_from_hf(raw: dict, tensors: dict):
        _require(raw, "position_embedding_type", ("absolute",), "BERT")
        _require(raw, "is_decoder", (False,), "BERT")
        _require(raw, "add_cross_attention", (False,), "BERT")
        act = raw.get("hidden_act", "gelu")
        if act not in BERT_ACTIVATIONS:
            raise UnsupportedConfig(f"BERT config.json has hidden_act={act!r}; minitransformer's BERT supports "
                                    f"{', '.join(BERT_ACTIVATIONS)}")
        fields = _copy_fields(raw, BERT_FIELDS)
        return models.BERTConfig(hidden_act=BERT_ACTIVATIONS[act], **fields)

    @staticmethod
    def is_masked_lm(tensors: dict) -> bool:
        return any(k.startswith("cls.predictions.") for k in tensors)

    @staticmethod
    def build(config, tensors: dict):
        """Our BERT (with the MLM head) or a bare BertModel, and with a pooler only if the file has one
        (transformers' BertForMaskedLM has none)."""
        if BertFamily.is_masked_lm(tensors):
            model = models.BERT(config)
            if "bert.pooler.dense.weight" not in tensors:
                model.bert.pooler = None
            return model
        return models.BertModel(config, add_pooler="pooler.dense.weight" in tensors)

    @staticmethod
    def table(model):
        c = model.config
        if isinstance(model, models.BertModel):
            body, ours, theirs = model, "", ""
        else:
            body, ours, theirs = model.bert, "bert.", "bert."
        rows = expand(BERT_EMBEDDINGS, 1, ours, theirs)
        rows += expand(BERT_BLOCK, c.num_hidden_layers, ours + "blocks.{i}.", theirs + "encoder.layer.{i}.")
        if body.pooler is not None:
            rows += expand(BERT_POOLER, 1, ours, theirs)
        if not isinstance(model, models.BertModel):
            rows += BERT_MLM_HEAD
        return rows

    @staticmethod
    def tied(model) -> dict:
        return {} if isinstance(model, models.BertModel) else BERT_TIED

    @staticmethod
    def config_to_hf(model) -> dict:
        c = model.config
        arch = "BertModel" if isinstance(model, models.BertModel) else "BertForMaskedLM"
        act = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}[c.hidden_act]
        return {"architectures": [arch], "model_type": "bert", **{f: getattr(c, f) for f in BERT_FIELDS},
                "hidden_act": act, "position_embedding_type": "absolute", "tie_word_embeddings": True}


# =======================================================================================
# T5 (T5ForConditionalGeneration, v1.0 and v1.1)
# =======================================================================================

def _t5_stack_rows(c, stack: str):
    decoder = stack == "decoder"
    ff = 2 if decoder else 1                     # the decoder's feed-forward sits after cross-attention
    block = [("attn_norm.weight", "layer.0.layer_norm.weight", SAME)]
    block += [(f"attn.{p}.weight", f"layer.0.SelfAttention.{p}.weight", SAME) for p in "qkvo"]
    if decoder:
        block += [("cross_norm.weight", "layer.1.layer_norm.weight", SAME)]
        block += [(f"cross_attn.{p}.weight", f"layer.1.EncDecAttention.{p}.weight", SAME) for p in "qkvo"]
    block += [("ff_norm.weight", f"layer.{ff}.layer_norm.weight", SAME)]
    inputs = ("wi_0", "wi_1") if c.is_gated else ("wi",)
    block += [(f"ff.{w}.weight", f"layer.{ff}.DenseReluDense.{w}.weight", SAME) for w in (*inputs, "wo")]
    count = c.decoder_layers if decoder else c.num_layers
    return ([(f"{stack}.relative_attention_bias.weight",
              f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight", SAME)]
            + expand(block, count, f"{stack}.blocks.{{i}}.", f"{stack}.block.{{i}}.")
            + [(f"{stack}.final_norm.weight", f"{stack}.final_layer_norm.weight", SAME)])


T5_TIED = {"encoder.embed_tokens.weight": "shared.weight", "decoder.embed_tokens.weight": "shared.weight"}
T5_IGNORED = {
    r"decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight":
        "a cross-attention position bias old checkpoints carry but T5 never uses",
}
T5_FIELDS = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
             "relative_attention_num_buckets", "relative_attention_max_distance", "dropout_rate",
             "layer_norm_epsilon", "initializer_factor", "pad_token_id", "eos_token_id", "decoder_start_token_id")


class T5Family:
    """T5's output layer comes in three forms, told apart by the config and the file:

    - v1.0: tied to ``shared`` and applied to the decoder output scaled by d_model**-0.5
      (``tie_word_embeddings`` true; transformers 5 also writes ``scale_decoder_outputs`` true);
    - v1.1 as published: its own ``lm_head.weight``, no scaling (``tie_word_embeddings`` false);
    - v1.1 as transformers 5 builds it from a config: it forces ``tie_word_embeddings`` true and
      keeps the head tied to ``shared`` but unscaled (``scale_decoder_outputs`` false).

    Ours is tied-and-scaled or untied-and-unscaled, so the third form loads as an untied model
    whose ``lm_head`` starts as a copy of ``shared`` (the same logits; training then lets the
    two drift apart, which transformers would not). A scaled head with its own weights, which
    no published checkpoint has, becomes an untied head with the scale folded into it.
    """

    model_type = "t5"
    bos_is_eos = False
    aliases, ignored = T5_TIED, T5_IGNORED

    @staticmethod
    def _head(raw: dict, tensors: dict):
        """(tied: bool, the untied head's weight, or None)."""
        scaled = raw.get("scale_decoder_outputs", raw.get("tie_word_embeddings", True) is not False)
        head, shared = tensors.get("lm_head.weight"), tensors.get("shared.weight")
        if head is None or (shared is not None and numpy.array_equal(head, shared)):
            if scaled:
                return True, None
            head = shared
        if head is None:                 # no shared.weight either: reported as missing later
            return False, None
        return False, (head * raw.get("d_model", 512) ** -0.5 if scaled else head)

    @staticmethod
    def config_from_hf(raw: dict, tensors: dict):
        proj = raw.get("feed_forward_proj", "relu")
        if proj not in models.configs.T5_FEED_FORWARD:
            raise UnsupportedConfig(f"T5 config.json has feed_forward_proj={proj!r}; minitransformer's T5 supports "
                                    f"{' and '.join(models.configs.T5_FEED_FORWARD)} (T5 v1.0 and v1.1)")
        _require(raw, "is_encoder_decoder", (True,), "T5")
        fields = _copy_fields(raw, T5_FIELDS)
        fields["eos_token_id"] = _first_id(fields.get("eos_token_id", 1))
        tied, _ = T5Family._head(raw, tensors)
        return models.T5Config(feed_forward_proj=proj, tie_word_embeddings=tied, **fields)

    @staticmethod
    def prepare(raw: dict, tensors: dict) -> dict:
        """Put the effective output layer under lm_head.weight when ours is untied."""
        _, head = T5Family._head(raw, tensors)
        return tensors if head is None else {**tensors, "lm_head.weight": head}

    @staticmethod
    def build(config, tensors: dict):
        return models.T5(config)

    @staticmethod
    def table(model):
        c = model.config
        rows = [("shared.weight", "shared.weight", SAME)]
        rows += _t5_stack_rows(c, "encoder") + _t5_stack_rows(c, "decoder")
        if not c.tie_word_embeddings:
            rows.append(("lm_head.weight", "lm_head.weight", SAME))
        return rows

    @staticmethod
    def tied(model) -> dict:
        if model.config.tie_word_embeddings:
            return {**T5_TIED, "lm_head.weight": "shared.weight"}
        return T5_TIED

    @staticmethod
    def config_to_hf(model) -> dict:
        c = model.config
        fields = {f: getattr(c, f) for f in T5_FIELDS}
        fields["num_decoder_layers"] = c.decoder_layers
        return {"architectures": ["T5ForConditionalGeneration"], "model_type": "t5", **fields,
                "feed_forward_proj": c.feed_forward_proj, "is_encoder_decoder": True,
                # transformers 4 reads both the tie and the scale from tie_word_embeddings;
                # transformers 5 reads the scale from scale_decoder_outputs.
                "tie_word_embeddings": c.tie_word_embeddings, "scale_decoder_outputs": c.tie_word_embeddings}


FAMILIES = {"gpt2": GPT2Family, "bert": BertFamily, "t5": T5Family}


def family_of_model(model):
    """The family class that exports ``model``."""
    if isinstance(model, models.GPT):
        return GPT2Family
    if isinstance(model, (models.BERT, models.BertModel)):
        return BertFamily
    if isinstance(model, models.T5):
        return T5Family
    raise TypeError(f"save_pretrained: {type(model).__name__} has no transformers counterpart here; "
                    "export a GPT, BERT, BertModel or T5")
