"""The three transformer families, their configs and presets.

Reading order: ``configs`` (frozen dataclasses, presets), ``inputs`` (what a model accepts),
``gpt`` (decoder-only), ``bert`` (encoder-only, with fine-tuning heads), ``t5``
(encoder-decoder), ``losses`` (counting targets).

    cfg = mt.models.preset("gpt-tiny")
    model = mt.models.build(cfg)              # or GPT(cfg), BERT(cfg), T5(cfg)
    loss = model.loss(batch)                  # batch: the dict an objective produces
"""
from minitransformer.models.configs import (
    PRESETS, BERTConfig, GPTConfig, T5Config, build, preset,
)
from minitransformer.models.gpt import GPT
from minitransformer.models.bert import (
    BERT, BertForSequenceClassification, BertForTokenClassification, BertModel,
)
from minitransformer.models.t5 import T5
from minitransformer.models.losses import count_targets

__all__ = [
    "GPTConfig", "BERTConfig", "T5Config", "PRESETS", "preset", "build", "GPT", "BERT",
    "BertModel", "BertForSequenceClassification", "BertForTokenClassification", "T5",
    "count_targets",
]
