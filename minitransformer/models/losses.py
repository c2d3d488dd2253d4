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


def _family_of(batch, family):
    """The registry's record of ``family`` (a name, config or model), or the family the
    batch's keys name (``families.of_batch``) when it is None."""
    from minitransformer import families         # the registry sits above the models it lists

    if family is None:
        return families.of_batch(batch)
    try:
        return families.get(family) if isinstance(family, str) else families.of(family)
    except (TypeError, ValueError):
        raise ValueError(f"count_targets: family must be one of {families.NAMES} (or a config or "
                         f"model), got {family!r}") from None


def count_targets(batch: dict, family=None, ignore_index: int = -100) -> int:
    """How many target tokens the family's loss averages over (labels != -100).

    GPT predicts labels[:, 1:] (its loss shifts by one), so the first column never counts.
    ``family``: "gpt", "bert", "t5", a config or a model; None infers it from the batch keys.
    """
    if "labels" not in batch:
        raise KeyError(f"count_targets: the batch has no 'labels' (it has {sorted(batch)})")
    labels = as_array(batch["labels"])
    labels = labels if hasattr(labels, "dtype") else numpy.asarray(labels)
    return int(backend.xp(labels).count_nonzero(_family_of(batch, family).targets(labels, ignore_index)))
