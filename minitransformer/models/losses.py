"""Counting what a loss counts, so a training loop can average over a global batch.

Each model's ``loss(batch, reduction="sum")`` returns the summed cross-entropy of its
targets; dividing the sum over several micro-batches (or workers) by the total of
``count_targets`` gives the exact mean over all of them, which averaging per-batch means
does not when batches hold different numbers of targets.
"""
from __future__ import annotations

import numpy

from minitransformer import backend
from minitransformer.autograd.ops import as_array

FAMILIES = ("gpt", "bert", "t5")


def _family_of(batch, family) -> str:
    if family is None:
        # T5 batches carry decoder inputs and BERT batches token types (and a sentence
        # classifier's labels are one per row); a batch with none of these is read as a
        # causal-LM batch. Pass family= (or the model) when a batch does not say.
        if "decoder_input_ids" in batch:
            return "t5"
        labels = batch["labels"]
        if "token_type_ids" in batch or getattr(labels, "ndim", 2) == 1:
            return "bert"
        return "gpt"
    if not isinstance(family, str):
        family = getattr(family, "family", None) or getattr(getattr(family, "config", None), "family", None)
    if family not in FAMILIES:
        raise ValueError(f"count_targets: family must be one of {FAMILIES} (or a config or "
                         f"model), got {family!r}")
    return family


def count_targets(batch: dict, family=None, ignore_index: int = -100) -> int:
    """How many target tokens the family's loss averages over (labels != -100).

    GPT predicts labels[:, 1:] (its loss shifts by one), so the first column never counts.
    ``family``: "gpt", "bert", "t5", a config or a model; None infers it from the batch keys.
    """
    if "labels" not in batch:
        raise KeyError(f"count_targets: the batch has no 'labels' (it has {sorted(batch)})")
    labels = as_array(batch["labels"])
    labels = labels if hasattr(labels, "dtype") else numpy.asarray(labels)
    if _family_of(batch, family) == "gpt":
        labels = labels[:, 1:]
    return int(backend.xp(labels).count_nonzero(labels != ignore_index))
