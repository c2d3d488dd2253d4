"""Span corruption (T5): the encoder sees text with spans cut out, the decoder writes them.

For a window of L tokens, ``random_spans_noise_mask`` marks about 15% of them as noise, in
spans of mean length 3. Each noise span is replaced in the *inputs* by one sentinel; the
*targets* list each sentinel followed by the tokens it hides:

    tokens   10 11 12 13 14 15          noise    .  .  x  x  .  x
    inputs   10 11 <X0> 14 <X1> EOS     targets  <X0> 12 13 <X1> 15 EOS

Sentinels count down from the top of the tokenizer's vocabulary: span k becomes id
``vocab_size - 1 - k`` (so ``<extra_id_0>`` is the highest id). ``vocab_size`` is the
tokenizer's (32,100 for T5), not the model's possibly padded embedding size (32,128).

The noise mask follows T5's ``random_spans_noise_mask`` exactly:

    num_noise = round(float32(L) * float32(density)), clamped to [1, L - 1]   (L := max(L, 2))
    num_spans = max(1, round(float32(num_noise) / mean_span))                (half to even)

then the noise tokens and the non-noise tokens are each split at random into ``num_spans``
non-empty runs, interleaved starting with non-noise and ending with noise. Computing in
float32 matters: in float64 the count differs for 39 lengths below 5000 (L = 190 gives 28
instead of T5's 29).

``compute_input_and_target_lengths`` is T5's ``random_spans_helper``: the raw window
length whose inputs (non-noise + one sentinel per span + EOS) just fit ``inputs_length``.
It starts its search one below ``inputs_length``; the copy in ``transformers`` starts at
``inputs_length`` and for (64, 0.2, 1) returns a window whose inputs need 65 tokens.

The stream's own special tokens (the EOS between documents, padding) are taken out of each
window before corruption, as T5 concatenates documents without separators: no special
token is ever hidden in a span. A window that held some comes out shorter and is padded.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from minitransformer.objectives.blocks import IGNORE_INDEX, BlockObjective, check_id


def noise_counts(length: int, noise_density: float = 0.15,
                 mean_noise_span_length: float = 3.0) -> tuple[int, int]:
    """(num_noise, num_spans) of T5's noise mask for a sequence of ``length`` tokens
    (computed for max(length, 2), in float32, rounding half to even)."""
    length = max(int(length), 2)
    num_noise = int(np.round(np.float32(length) * np.float32(noise_density)))
    num_noise = min(max(num_noise, 1), length - 1)
    num_spans = int(np.round(np.float32(num_noise) / np.float32(mean_noise_span_length)))
    return num_noise, max(num_spans, 1)


def _check_noise(noise_density: float, mean_noise_span_length: float) -> None:
    if not 0.0 < noise_density < 1.0:
        raise ValueError(f"noise_density must be in (0, 1), got {noise_density!r}")
    if not mean_noise_span_length >= 1.0:
        raise ValueError(f"mean_noise_span_length must be >= 1, got {mean_noise_span_length!r}")


def _random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Lengths of ``num_segments`` non-empty runs that add up to ``num_items``, uniformly
    among all such splits: choose which of the num_items - 1 gaps start a new run."""
    starts = np.zeros(num_items - 1, dtype=np.int64)
    starts[:num_segments - 1] = 1
    starts = rng.permutation(starts)
    segment = np.concatenate([[0], np.cumsum(starts)])       # run number of each item
    return np.bincount(segment, minlength=num_segments)


def random_spans_noise_mask(length: int, noise_density: float = 0.15,
                            mean_noise_span_length: float = 3.0, rng=None) -> np.ndarray:
    """Boolean (length,): True marks noise. T5's algorithm (see the module docstring).

    rng: a ``np.random.Generator``, a seed, or None (fresh entropy).
    The mask is computed for max(length, 2) tokens and cut to ``length``.
    """
    _check_noise(noise_density, mean_noise_span_length)
    if not isinstance(length, (int, np.integer)) or length < 0:
        raise ValueError(f"length must be an integer >= 0, got {length!r}")
    rng = np.random.default_rng(rng)
    full = max(int(length), 2)
    num_noise, num_spans = noise_counts(full, noise_density, mean_noise_span_length)
    num_nonnoise = full - num_noise
    if num_nonnoise < num_spans:
        raise ValueError(f"{num_spans} noise spans need as many non-noise runs, but only "
                         f"{num_nonnoise} of {full} tokens are not noise; lower noise_density "
                         "or raise mean_noise_span_length")
    noise_lengths = _random_segmentation(num_noise, num_spans, rng)
    nonnoise_lengths = _random_segmentation(num_nonnoise, num_spans, rng)
    # non-noise, noise, non-noise, noise, ...: starts clean, ends with noise.
    run_lengths = np.stack([nonnoise_lengths, noise_lengths], axis=1).reshape(-1)
    is_noise = np.repeat(np.tile([False, True], num_spans), run_lengths)
    return is_noise[:length]


def noise_span_to_unique_sentinel(tokens, noise_mask, vocab_size: int) -> np.ndarray:
    """Replace each noise span by one sentinel (span k -> vocab_size - 1 - k), dropping the
    span's other tokens. T5's function of the same name."""
    tokens = np.asarray(tokens, dtype=np.int64)
    noise_mask = np.asarray(noise_mask, dtype=bool)
    previous_is_noise = np.zeros_like(noise_mask)
    previous_is_noise[1:] = noise_mask[:-1]
    first_noise = noise_mask & ~previous_is_noise
    later_noise = noise_mask & previous_is_noise
    sentinel = vocab_size - np.cumsum(first_noise)                # span k -> vocab_size-1-k
    return np.where(first_noise, sentinel, tokens)[~later_noise]


def nonnoise_span_to_unique_sentinel(tokens, noise_mask, vocab_size: int) -> np.ndarray:
    """The targets: the same replacement applied to the non-noise spans. Because the mask
    starts with non-noise, non-noise span k precedes noise span k, and the sentinel that
    opens span k's tokens here is the one that stands for them in the inputs."""
    return noise_span_to_unique_sentinel(tokens, ~np.asarray(noise_mask, dtype=bool), vocab_size)


def compute_input_and_target_lengths(inputs_length: int, noise_density: float = 0.15,
                                     mean_noise_span_length: float = 3.0) -> tuple[int, int]:
    """(raw tokens per window, targets length) so that the inputs fill ``inputs_length``.

    T5's ``random_spans_helper`` (one sentinel per span, one EOS on each side). Examples:
    (128, 0.15, 3) -> (141, 29); (512, 0.15, 3) -> (568, 114); (64, 0.2, 1) -> (63, 27).
    """
    _check_noise(noise_density, mean_noise_span_length)
    if not isinstance(inputs_length, (int, np.integer)) or inputs_length < 2:
        raise ValueError(f"inputs_length must be an integer >= 2, got {inputs_length!r}")

    def lengths(tokens_length):
        num_noise = int(round(tokens_length * noise_density))
        num_nonnoise = tokens_length - num_noise
        num_spans = int(round(num_noise / mean_noise_span_length))
        return num_nonnoise + num_spans + 1, num_noise + num_spans + 1

    tokens_length = inputs_length - 1
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    inputs, targets = lengths(tokens_length)
    # T5's adjustment: with density 0.5 make the targets no longer than the inputs.
    if noise_density == 0.5 and targets > inputs:
        tokens_length -= 1
        targets -= 1
    return tokens_length, targets


class SpanCorruptionObjective(BlockObjective):
    """Batches for T5's span corruption.

    tokens: 1-D token stream (documents joined with EOS).
    inputs_length: encoder length; each window holds the raw tokens that, corrupted, fill it.
    vocab_size: the tokenizer's vocabulary size; sentinels are counted down from it.
    eos_id: appended to inputs and targets.
    pad_id: fills short rows of inputs and decoder inputs.
    decoder_start_id: first decoder input (T5 uses pad); default pad_id.
    seed: fixes block order and noise.
    special_ids: ids taken out of windows before corruption (default: eos and pad).
    num_sentinels: if given, checks there are enough sentinels for the spans of a window.
    shuffle: False visits blocks in stream order (for evaluation).

    ``batch(index, batch_size, rows=None)`` returns int64 arrays: ``input_ids`` and
    ``attention_mask`` of shape (rows, inputs_length); ``decoder_input_ids``,
    ``decoder_attention_mask`` and ``labels`` of shape (rows, targets_length).
    ``labels`` are the targets with -100 on padding; ``decoder_input_ids`` are the targets
    shifted right behind ``decoder_start_id``; attention masks are 1 for real tokens.
    """

    _tag = 3

    def __init__(self, tokens, inputs_length: int, vocab_size: int, eos_id: int, pad_id: int,
                 decoder_start_id: int | None = None, seed: int = 0,
                 noise_density: float = 0.15, mean_noise_span_length: float = 3.0,
                 special_ids: Iterable[int] | None = None, num_sentinels: int | None = None,
                 shuffle: bool = True):
        window, _ = compute_input_and_target_lengths(inputs_length, noise_density,
                                                     mean_noise_span_length)
        # The helper counts in float64, the mask in float32; where they disagree, shrink the
        # window until the mask's own counts fit.
        def inputs_needed(n):
            return self._exact_lengths(n, noise_density, mean_noise_span_length)[0]

        while window > 1 and inputs_needed(window) > inputs_length:
            window -= 1
        super().__init__(tokens, window, seed, shuffle)
        self.inputs_length = int(inputs_length)
        self.noise_density = float(noise_density)
        self.mean_noise_span_length = float(mean_noise_span_length)
        self.targets_length = self._exact_lengths(window, noise_density, mean_noise_span_length)[1]
        self.vocab_size = check_id(vocab_size, "vocab_size")
        self.eos_id = check_id(eos_id, "eos_id")
        self.pad_id = check_id(pad_id, "pad_id")
        self.decoder_start_id = (self.pad_id if decoder_start_id is None
                                 else check_id(decoder_start_id, "decoder_start_id"))
        self.max_spans = noise_counts(window, noise_density, mean_noise_span_length)[1]
        self.lowest_sentinel = self.vocab_size - self.max_spans
        if num_sentinels is not None and self.max_spans > num_sentinels:
            raise ValueError(f"a window of {window} tokens has up to {self.max_spans} noise spans, "
                             f"but the tokenizer has only {num_sentinels} sentinels; use a "
                             "shorter inputs_length or more sentinels")
        specials = {self.eos_id, self.pad_id} if special_ids is None else {
            check_id(i, "special_ids entry") for i in special_ids}
        self.special_ids = np.array(sorted(specials), dtype=np.int64)

    @staticmethod
    def _exact_lengths(length, noise_density, mean_noise_span_length):
        """(inputs, targets) lengths, EOS included, for ``length`` raw tokens."""
        if length == 0:
            return 1, 1
        num_noise, num_spans = noise_counts(length, noise_density, mean_noise_span_length)
        if length < 2:      # the mask is cut from length 2: no noise survives, one target sentinel
            return length + 1, 2
        return length - num_noise + num_spans + 1, num_noise + num_spans + 1

    def corrupt(self, window: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) of one raw window, each ending in EOS."""
        kept = window[~np.isin(window, self.special_ids)]
        if kept.size and (kept.max() >= self.lowest_sentinel or kept.min() < 0):
            bad = kept[(kept >= self.lowest_sentinel) | (kept < 0)][0]
            raise ValueError(f"token id {bad} in the stream is not an ordinary id: ids from "
                             f"{self.lowest_sentinel} up serve as sentinels (vocab_size "
                             f"{self.vocab_size}); list other special ids in special_ids")
        noise = random_spans_noise_mask(len(kept), self.noise_density,
                                        self.mean_noise_span_length, rng)
        inputs = noise_span_to_unique_sentinel(kept, noise, self.vocab_size)
        targets = nonnoise_span_to_unique_sentinel(kept, noise, self.vocab_size)
        return np.append(inputs, self.eos_id), np.append(targets, self.eos_id)

    def _build(self, windows, rngs):
        rows = len(windows)
        input_ids = np.full((rows, self.inputs_length), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((rows, self.inputs_length), dtype=np.int64)
        decoder_input_ids = np.full((rows, self.targets_length), self.pad_id, dtype=np.int64)
        decoder_attention_mask = np.zeros((rows, self.targets_length), dtype=np.int64)
        labels = np.full((rows, self.targets_length), IGNORE_INDEX, dtype=np.int64)
        for r, (w, rng) in enumerate(zip(windows, rngs)):
            inputs, targets = self.corrupt(w, rng)
            input_ids[r, :len(inputs)] = inputs
            attention_mask[r, :len(inputs)] = 1
            labels[r, :len(targets)] = targets
            decoder_input_ids[r, 0] = self.decoder_start_id           # shift right
            decoder_input_ids[r, 1:len(targets)] = targets[:-1]
            decoder_attention_mask[r, :len(targets)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "decoder_input_ids": decoder_input_ids,
                "decoder_attention_mask": decoder_attention_mask, "labels": labels}
