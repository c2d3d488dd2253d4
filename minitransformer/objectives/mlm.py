"""Masked language modelling (BERT, with RoBERTa's dynamic masking).

Each row is ``[CLS] tokens... [SEP]`` (either may be left out), padded at the end. Then:

1. every ordinary token (not special, not padding) is *selected* independently with
   probability ``mlm_probability`` (0.15);
2. a selected token is replaced by [MASK] with probability 0.8, by a random token with
   probability 0.1, and left unchanged with probability 0.1, so the model cannot tell
   from the input which tokens it will be asked about;
3. labels hold the original id at selected positions and -100 elsewhere: only selected
   tokens are predicted.

Random replacements are drawn from ordinary ids only: replacing a word by [CLS] or a
sentinel would teach nothing (``transformers`` draws from the whole vocabulary).

Masks are drawn afresh for each (epoch, block), RoBERTa's dynamic masking: a block seen
in epoch 2 gets a different mask from epoch 1, yet asking for the same batch twice gives
the same one.

Whole-word masking selects words instead of tokens: a word is a token that starts one
(``word_starts[id]`` is True, or it follows a special token or the row's start) plus the
continuation tokens after it. All of a selected word's tokens are labelled; the 80/10/10
choice is still made per token, as in BERT's own whole-word release.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from minitransformer.objectives.blocks import IGNORE_INDEX, BlockObjective, check_id


class MLMObjective(BlockObjective):
    """Batches for masked LM.

    tokens: 1-D token stream (documents joined with EOS).
    block_size: tokens per row, [CLS] and [SEP] included.
    vocab_size: ids are 0..vocab_size-1.
    mask_id, cls_id, sep_id, pad_id: the special ids (cls_id / sep_id None: not added).
    special_ids: every id that is never selected nor used as a random replacement (EOS,
        sentinels, ...); mask, cls, sep and pad are added to it.
    seed: fixes block order and masks.
    mlm_probability: chance that an ordinary token (or word) is selected.
    whole_word: select whole words; needs ``word_starts``.
    word_starts: boolean array over the vocabulary, True for ids that begin a word
        (``BPETokenizer.word_start_mask()``).
    mask_fraction, random_fraction: of the selected, the share turned into [MASK] and into
        a random ordinary token (the rest stay unchanged).
    shuffle: False visits blocks in stream order (for evaluation).

    ``batch(index, batch_size, rows=None)`` returns int64 arrays of shape (rows, block_size):
    ``input_ids``, ``attention_mask`` (1 = real, 0 = padding), ``token_type_ids`` (zeros)
    and ``labels`` (original id where selected, -100 elsewhere).
    """

    _tag = 2

    def __init__(self, tokens, block_size: int, vocab_size: int, mask_id: int,
                 cls_id: int | None, sep_id: int | None, pad_id: int,
                 special_ids: Iterable[int] = (), seed: int = 0,
                 mlm_probability: float = 0.15, whole_word: bool = False,
                 word_starts=None, mask_fraction: float = 0.8, random_fraction: float = 0.1,
                 shuffle: bool = True):
        self.cls_id = check_id(cls_id, "cls_id", allow_none=True)
        self.sep_id = check_id(sep_id, "sep_id", allow_none=True)
        extra = (self.cls_id is not None) + (self.sep_id is not None)
        if not isinstance(block_size, (int, np.integer)) or block_size <= extra:
            raise ValueError(f"block_size must leave room for tokens besides [CLS]/[SEP]: "
                             f"expected more than {extra}, got {block_size!r}")
        super().__init__(tokens, int(block_size) - extra, seed, shuffle)
        self.block_size = int(block_size)
        self.vocab_size = check_id(vocab_size, "vocab_size")
        self.mask_id = check_id(mask_id, "mask_id")
        self.pad_id = check_id(pad_id, "pad_id")
        if not 0.0 <= mlm_probability <= 1.0:
            raise ValueError(f"mlm_probability must be in [0, 1], got {mlm_probability!r}")
        if not (0.0 <= mask_fraction and 0.0 <= random_fraction and mask_fraction + random_fraction <= 1.0):
            raise ValueError(f"mask_fraction ({mask_fraction}) and random_fraction ({random_fraction}) "
                             "must be >= 0 and sum to at most 1")
        self.mlm_probability = float(mlm_probability)
        self.mask_fraction = float(mask_fraction)
        self.random_fraction = float(random_fraction)

        specials = {int(check_id(i, "special_ids entry")) for i in special_ids}
        specials |= {i for i in (self.mask_id, self.cls_id, self.sep_id, self.pad_id) if i is not None}
        too_big = sorted(i for i in specials if i >= self.vocab_size)
        if too_big:
            raise ValueError(f"special ids {too_big[:5]} are not below vocab_size {self.vocab_size}")
        self.is_special = np.zeros(self.vocab_size, dtype=bool)
        self.is_special[sorted(specials)] = True
        self.ordinary_ids = np.flatnonzero(~self.is_special)
        if self.ordinary_ids.size == 0:
            raise ValueError("every id is special: MLM needs ordinary ids to select and to draw "
                             "random replacements from")

        self.whole_word = bool(whole_word)
        self.word_starts = None
        if self.whole_word:
            if word_starts is None:
                raise ValueError("whole_word=True needs word_starts, a boolean array over the "
                                 "vocabulary (tokenizer.word_start_mask())")
            word_starts = np.asarray(word_starts, dtype=bool)
            if word_starts.shape != (self.vocab_size,):
                raise ValueError(f"word_starts must have shape ({self.vocab_size},), got {word_starts.shape}")
            self.word_starts = word_starts

    def _build(self, windows, rngs):
        rows, T = len(windows), self.block_size
        input_ids = np.full((rows, T), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((rows, T), dtype=np.int64)
        for r, w in enumerate(windows):
            row = [w]
            if self.cls_id is not None:
                row.insert(0, [self.cls_id])
            if self.sep_id is not None:
                row.append([self.sep_id])
            row = np.concatenate(row)
            input_ids[r, :len(row)] = row
            attention_mask[r, :len(row)] = 1
        if rows and (input_ids.min() < 0 or input_ids.max() >= self.vocab_size):
            bad = input_ids[(input_ids < 0) | (input_ids >= self.vocab_size)][0]
            raise ValueError(f"token id {bad} in the stream is outside the vocabulary "
                             f"0..{self.vocab_size - 1}")

        # Three draws per position, always all of them, so a row's randomness does not
        # depend on what its tokens are.
        select_u = np.array([g.random(T) for g in rngs]).reshape(rows, T)
        action_u = np.array([g.random(T) for g in rngs]).reshape(rows, T)
        replacement = np.array([g.integers(len(self.ordinary_ids), size=T) for g in rngs],
                               dtype=np.int64).reshape(rows, T)

        candidate = (attention_mask == 1) & ~self.is_special[input_ids]
        if self.whole_word:
            # A word begins at a word-start id, at the row start, or after a non-candidate.
            after_gap = np.ones_like(candidate)
            after_gap[:, 1:] = ~candidate[:, :-1]
            starts = self.word_starts[input_ids] | after_gap
            word = np.cumsum(starts, axis=1) - 1                      # (rows, T) word number
            selected = candidate & (np.take_along_axis(select_u, word, axis=1) < self.mlm_probability)
        else:
            selected = candidate & (select_u < self.mlm_probability)

        labels = np.where(selected, input_ids, IGNORE_INDEX)
        to_mask = selected & (action_u < self.mask_fraction)
        to_random = selected & (action_u >= self.mask_fraction) & (
            action_u < self.mask_fraction + self.random_fraction)
        input_ids = np.where(to_mask, self.mask_id, input_ids)
        input_ids = np.where(to_random, self.ordinary_ids[replacement], input_ids)
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "token_type_ids": np.zeros_like(input_ids), "labels": labels}
