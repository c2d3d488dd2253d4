"""Sequence classification with a BERT encoder: one label per text (or pair of texts).

Input, as BERT was pre-trained: ``[CLS] text [SEP]`` (a pair: ``[CLS] a [SEP] b [SEP]``,
token types 0 for the first segment and 1 for the second). The pooled [CLS] vector,
tanh(W_p h_[CLS] + b_p), goes through dropout and a linear layer to one logit per label;
the loss is the cross-entropy of those logits against the gold label
(``BertForSequenceClassification``). The [CLS] position has no word of its own, so
fine-tuning teaches it, through attention, to gather what the label needs.

Baseline: always answering the majority label of the training set.
"""
from __future__ import annotations

from collections import Counter

import numpy

from minitransformer import backend
from minitransformer.autograd import no_grad
from minitransformer.finetune import metrics
from minitransformer.finetune.loop import chunks, pad
from minitransformer.models import BertForSequenceClassification


class BertHeadTask:
    """What the two BERT tasks share: a label set, an input length, a head on a BERT body.

    ``head`` is the model class (a BERT body plus a linear layer over ``len(labels)``).
    """
    family = "bert"
    head = None

    def __init__(self, tokenizer, labels: list[str], max_length: int):
        if max_length < 4:
            raise ValueError(f"max_length must be at least 4 tokens for [CLS] text [SEP], got {max_length}")
        self.tokenizer, self.labels, self.max_length = tokenizer, list(labels), max_length
        self.index = {label: i for i, label in enumerate(self.labels)}
        self.truncated = 0                  # inputs cut to max_length so far

    def info(self) -> dict:
        return {"labels": self.labels, "max_length": self.max_length}

    def build(self, base):
        """The head on ``base``'s body (a pre-trained BERT), or all random (``base`` a config)."""
        pretrained = hasattr(base, "config")
        model = self.head(base.config if pretrained else base, len(self.labels))
        if pretrained:
            model.load_pretrained(base)
        return model

    def best_labels(self, model, examples: list[dict], batch_size: int):
        """For each batch of ``examples``: (its encoded features, the index of the highest
        logit, (B,) or (B, T), on the host). The model moves the inputs to its device."""
        model.eval()
        with no_grad():
            for part in chunks([self.encode(ex) for ex in examples], batch_size):
                b = self.collate(part)
                logits = model(b["input_ids"], attention_mask=b["attention_mask"],
                               token_type_ids=b["token_type_ids"])        # (B, labels) or (B, T, labels)
                yield part, backend.to_numpy(logits.data.argmax(axis=-1))


class Classification(BertHeadTask):
    task = "classify"
    primary = "accuracy"
    head = BertForSequenceClassification

    def __init__(self, tokenizer, labels: list[str], max_length: int):
        if len(labels) < 2:
            raise ValueError(f"classification needs at least 2 labels in the training data, found "
                             f"{labels}; add examples of the other labels")
        super().__init__(tokenizer, labels, max_length)

    # ---------------------------------------------------------------- data
    def encode(self, example: dict) -> tuple:
        """(ids, token types, label index or -100)."""
        tok = self.tokenizer
        a = tok.encode(example["text"], disallowed_special=())
        b = tok.encode(example["text_pair"], disallowed_special=()) if "text_pair" in example else None
        budget = self.max_length - (3 if b is not None else 2)
        if len(a) + len(b or []) > budget:
            self.truncated += 1
            if b is None:
                a = a[:budget]
            else:                        # trim the longer side first, as BERT's reference does
                while len(a) + len(b) > budget:
                    if len(a) >= len(b):
                        a = a[:-1]
                    else:
                        b = b[:-1]
        ids = [tok.cls_id, *a, tok.sep_id]
        types = [0] * len(ids)
        if b is not None:
            ids += [*b, tok.sep_id]
            types += [1] * (len(b) + 1)
        return ids, types, self.index.get(example.get("label"), -100)

    def collate(self, features: list) -> dict:
        ids = pad([f[0] for f in features], self.tokenizer.pad_id)
        return {"input_ids": ids,
                "attention_mask": pad([[1] * len(f[0]) for f in features], 0, ids.shape[1]),
                "token_type_ids": pad([f[1] for f in features], 0, ids.shape[1]),
                "labels": numpy.array([f[2] for f in features], dtype=numpy.int64)}  # (B,)

    # ---------------------------------------------------------------- predicting and scoring
    def predict(self, model, examples: list[dict], batch_size: int = 64) -> list[str]:
        return [self.labels[i] for _, best in self.best_labels(model, examples, batch_size) for i in best]

    def score(self, examples: list[dict], predictions: list[str]) -> dict:
        return metrics.classification_report([ex["label"] for ex in examples], predictions)

    def baselines(self, train: list[dict], evaluation: list[dict]) -> dict:
        majority = Counter(ex["label"] for ex in train).most_common(1)[0][0]
        report = self.score(evaluation, [majority] * len(evaluation))
        report.pop("per_label")
        return {"majority": dict(report, label=majority)}
