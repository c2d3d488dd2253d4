"""Causal language modelling (GPT): predict every next token.

The stream is cut into packed blocks of ``block_size`` tokens; documents run into each
other with an EOS between them, so no position is wasted on padding except in the last,
shorter block. Labels are the inputs themselves: the loss shifts them,
``cross_entropy(logits[:, :-1], labels[:, 1:])``, so position t learns token t+1.

Padding is ignored by *position*: ``labels`` is -100 exactly where ``attention_mask`` is 0.
Masking by token id instead (labels -100 wherever the id equals the pad id) would, with
pad == eos as in GPT-2, also hide every real EOS, and the model would never learn to stop.
"""
from __future__ import annotations

import numpy as np

from minitransformer.objectives.blocks import IGNORE_INDEX, BlockObjective, check_id


class CLMObjective(BlockObjective):
    """Batches for causal LM.

    tokens: 1-D token stream (documents joined with EOS).
    block_size: tokens per row.
    eos_id: the end-of-document id (also the padding id unless ``pad_id`` is given).
    seed: fixes the order of blocks in each epoch.
    pad_id: fills the tail of the last, short block.
    shuffle: False visits blocks in stream order every epoch (for evaluation).

    ``batch(index, batch_size, rows=None)`` returns int64 arrays of shape
    (rows, block_size): ``input_ids``, ``attention_mask`` (1 = real token, 0 = padding) and
    ``labels`` (= input_ids, -100 where attention_mask is 0; unshifted).
    """

    _tag = 1

    def __init__(self, tokens, block_size: int, eos_id: int, seed: int = 0,
                 pad_id: int | None = None, shuffle: bool = True):
        super().__init__(tokens, block_size, seed, shuffle)
        self.block_size = self.window
        self.eos_id = check_id(eos_id, "eos_id")
        self.pad_id = self.eos_id if pad_id is None else check_id(pad_id, "pad_id")

    def _build(self, windows, rngs):
        rows, T = len(windows), self.block_size
        input_ids = np.full((rows, T), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((rows, T), dtype=np.int64)
        for r, w in enumerate(windows):
            input_ids[r, :len(w)] = w
            attention_mask[r, :len(w)] = 1
        labels = np.where(attention_mask == 1, input_ids, IGNORE_INDEX)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
