"""T5 span corruption: the noise mask, sentinels, the length helper, and the batch builder."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minitransformer.objectives import (
    SpanCorruptionObjective,
    compute_input_and_target_lengths,
    noise_counts,
    noise_span_to_unique_sentinel,
    nonnoise_span_to_unique_sentinel,
    random_spans_noise_mask,
)


def runs(mask: np.ndarray) -> int:
    """Number of runs of True."""
    return int(np.sum(mask & ~np.concatenate([[False], mask[:-1]])))


def t5_count(length: int, density: float = 0.15, mean_span: float = 3.0) -> tuple[int, int]:
    """The counts as the issue states them: float32 products, Python's round (half to even)."""
    n = max(length, 2)
    noise = round(float(np.float32(n) * np.float32(density)))
    noise = min(max(noise, 1), n - 1)
    spans = max(1, round(float(np.float32(noise) / np.float32(mean_span))))
    return noise, spans


def restore(inputs, targets, lowest_sentinel: int) -> list[int]:
    """Put each sentinel's target tokens back where the sentinel stands in the inputs."""
    spans, current = {}, None
    for t in targets:
        if t >= lowest_sentinel:
            current = int(t)
            spans[current] = []
        else:
            spans[current].append(int(t))
    out = []
    for t in inputs:
        out += spans[int(t)] if t >= lowest_sentinel else [int(t)]
    return out


# ---------------------------------------------------------------------------------------
# REFERENCE.md worked examples
# ---------------------------------------------------------------------------------------

def test_worked_example_inputs_and_targets():
    tokens = np.arange(10, 16)
    mask = np.array([False, False, True, True, False, True])
    assert noise_span_to_unique_sentinel(tokens, mask, 1000).tolist() == [10, 11, 999, 14, 998]
    assert nonnoise_span_to_unique_sentinel(tokens, mask, 1000).tolist() == [999, 12, 13, 998, 15]


def test_t5_repository_case_starting_with_noise():
    tokens = np.arange(10, 16)
    mask = np.array([True, True, False, False, True, False])
    assert noise_span_to_unique_sentinel(tokens, mask, 1000).tolist() == [999, 12, 13, 998, 15]


@pytest.mark.parametrize("args, expected", [
    ((128, 0.15, 3.0), (141, 29)),
    ((256, 0.15, 3.0), (284, 58)),
    ((512, 0.15, 3.0), (568, 114)),
    ((64, 0.2, 2.0), (70, 22)),
    ((64, 0.2, 1.0), (63, 27)),     # the transformers copy returns 64 here
])
def test_length_helper_reference_values(args, expected):
    assert compute_input_and_target_lengths(*args) == expected


def test_length_helper_avoids_the_off_by_one():
    # 64 raw tokens at density 0.2, span 1: 13 noise, 13 spans, inputs 51 + 13 + 1 = 65 > 64.
    raw, _ = compute_input_and_target_lengths(64, 0.2, 1.0)
    assert raw == 63
    noise = round(64 * 0.2)
    assert 64 - noise + round(noise / 1.0) + 1 == 65


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 1200), st.sampled_from([0.1, 0.15, 0.2, 0.3, 0.5]),
       st.sampled_from([1.0, 2.0, 3.0, 5.0]))
def test_length_helper_is_the_longest_window_that_fits(inputs_length, density, mean_span):
    def inputs_of(n):
        noise = round(n * density)
        return n - noise + round(noise / mean_span) + 1

    raw, targets = compute_input_and_target_lengths(inputs_length, density, mean_span)
    assert inputs_of(raw) <= inputs_length
    if density != 0.5:
        assert inputs_of(raw + 1) > inputs_length
        noise = round(raw * density)
        assert targets == noise + round(noise / mean_span) + 1


def test_noise_count_is_float32_like_t5():
    assert noise_counts(190) == (29, 10)            # float64 would give 28
    differ = [n for n in range(2, 5000) if noise_counts(n)[0] != min(max(round(n * 0.15), 1), n - 1)]
    assert len(differ) == 39 and differ[0] == 190


# ---------------------------------------------------------------------------------------
# The noise mask
# ---------------------------------------------------------------------------------------

@settings(max_examples=250, deadline=None)
@given(st.integers(0, 3000), st.integers(0, 2**32 - 1))
def test_noise_mask_counts_and_shape(length, seed):
    mask = random_spans_noise_mask(length, rng=seed)
    assert mask.dtype == bool and mask.shape == (length,)
    if length < 2:      # T5 builds the mask for 2 tokens, [clean, noise], and cuts it
        assert mask.tolist() == [False] * length
        return
    noise, spans = t5_count(length)
    assert int(mask.sum()) == noise
    assert runs(mask) == spans
    assert not mask[0] and mask[-1]                 # starts clean, ends with noise
    assert np.array_equal(mask, random_spans_noise_mask(length, rng=seed))


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 600), st.integers(0, 2**32 - 1))
def test_sentinel_replacement_is_lossless(length, seed):
    rng = np.random.default_rng(seed)
    vocab = 1000
    tokens = rng.integers(0, vocab - 300, size=length)
    mask = random_spans_noise_mask(length, rng=rng)
    inputs = noise_span_to_unique_sentinel(tokens, mask, vocab)
    targets = nonnoise_span_to_unique_sentinel(tokens, mask, vocab)
    assert restore(inputs, targets, vocab - 300) == tokens.tolist()
    # Sentinels count down from the top, in order, in both.
    k = runs(mask)
    assert inputs[inputs >= vocab - 300].tolist() == list(range(vocab - 1, vocab - 1 - k, -1))
    assert targets[targets >= vocab - 300].tolist()[:k] == list(range(vocab - 1, vocab - 1 - k, -1))


def test_noise_spans_are_a_uniform_split():
    # 100 tokens: 15 noise in 5 spans. Each of the C(14, 4) = 1001 ways to split 15 into 5
    # non-empty runs is equally likely, so the first span has length 1 with probability
    # C(13, 3) / 1001 = 286 / 1001.
    first_lengths = []
    for seed in range(2000):
        mask = random_spans_noise_mask(100, rng=seed)
        start = int(np.argmax(mask))
        first_lengths.append(int(np.argmin(mask[start:])) or 100 - start)
    p = 286 / 1001
    share = np.mean(np.array(first_lengths) == 1)
    assert abs(share - p) < 5 * np.sqrt(p * (1 - p) / 2000)
    assert abs(np.mean(first_lengths) - 3.0) < 5 * np.std(first_lengths) / np.sqrt(2000)


def test_noise_mask_bad_arguments():
    with pytest.raises(ValueError, match="noise_density must be in"):
        random_spans_noise_mask(10, noise_density=1.5)
    with pytest.raises(ValueError, match="mean_noise_span_length must be >= 1"):
        random_spans_noise_mask(10, mean_noise_span_length=0.5)
    with pytest.raises(ValueError, match="non-noise"):
        random_spans_noise_mask(10, noise_density=0.9, mean_noise_span_length=1.0)


# ---------------------------------------------------------------------------------------
# The batch builder
# ---------------------------------------------------------------------------------------

EOS, PAD, VOCAB = 1, 0, 600


def stream(n=20000, seed=0, doc_len=(5, 80)):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        out += rng.integers(2, 400, size=rng.integers(*doc_len)).tolist() + [EOS]
    return np.array(out[:n], dtype=np.uint16)


def test_batch_layout_with_full_windows():
    tokens = np.arange(2, 5002) % 400 + 2               # no special tokens at all
    obj = SpanCorruptionObjective(tokens, 128, VOCAB, EOS, PAD, seed=0)
    assert (obj.window, obj.targets_length) == (141, 29)
    b = obj.batch(0, 4)
    assert b["input_ids"].shape == (4, 128) and b["labels"].shape == (4, 29)
    assert all(v.dtype == np.int64 for v in b.values())
    full = obj.samples(0, 4)[1] < obj.num_blocks - 1
    assert (b["attention_mask"][full] == 1).all() and (b["decoder_attention_mask"][full] == 1).all()
    assert (b["input_ids"][full, -1] == EOS).all() and (b["labels"][full, -1] == EOS).all()
    assert (b["decoder_input_ids"][:, 0] == PAD).all()
    assert np.array_equal(b["decoder_input_ids"][full, 1:], b["labels"][full, :-1])


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 500), st.integers(1, 6), st.integers(0, 10**6))
def test_batches_are_lossless_and_never_hide_special_tokens(index, batch_size, seed):
    tokens = stream(3000, seed % 7)
    obj = SpanCorruptionObjective(tokens, 64, VOCAB, EOS, PAD, decoder_start_id=PAD, seed=seed)
    b = obj.batch(index, batch_size)
    _, blocks = obj.samples(index, batch_size)
    for r, block in enumerate(blocks):
        raw = obj.window_tokens(block)
        kept = raw[(raw != EOS) & (raw != PAD)].tolist()
        n_in, n_out = b["attention_mask"][r].sum(), b["decoder_attention_mask"][r].sum()
        inputs, targets = b["input_ids"][r, :n_in], b["labels"][r, :n_out]
        assert inputs[-1] == EOS and targets[-1] == EOS
        assert EOS not in inputs[:-1] and EOS not in targets[:-1]      # separators never hidden
        assert restore(inputs[:-1], targets[:-1], obj.lowest_sentinel) == kept
        assert (b["labels"][r, n_out:] == -100).all() and (b["input_ids"][r, n_in:] == PAD).all()
        if len(kept) >= 2:
            noise, spans = t5_count(len(kept))
            assert n_in == len(kept) - noise + spans + 1 and n_out == noise + spans + 1


def test_sentinels_come_from_the_tokenizer_vocabulary():
    from minitransformer.data import BPETokenizer

    tok = BPETokenizer.train(["some words to learn from, over and over. " * 30], 420)
    text = "the quick brown fox jumps over the lazy dog " * 40
    ids = np.array(tok.encode(text) + [tok.eos_id])
    obj = SpanCorruptionObjective(ids, 64, tok.vocab_size, tok.eos_id, tok.pad_id,
                                  num_sentinels=tok.num_sentinels, seed=3)
    b = obj.batch(0, 2)
    first = b["input_ids"][0][b["input_ids"][0] >= obj.lowest_sentinel]
    assert first[0] == tok.sentinel_id(0) == tok.vocab_size - 1
    assert tok.decode(b["labels"][0][:1]) == "<extra_id_0>"
    with pytest.raises(ValueError, match="only 2 sentinels"):
        SpanCorruptionObjective(ids, 64, tok.vocab_size, tok.eos_id, tok.pad_id, num_sentinels=2)


def test_pure_function_of_seed_index_and_rows():
    tokens = stream()
    a = SpanCorruptionObjective(tokens, 64, VOCAB, EOS, PAD, seed=5)
    b = SpanCorruptionObjective(tokens, 64, VOCAB, EOS, PAD, seed=5)
    full = a.batch(7, 6)
    for key in full:
        assert np.array_equal(full[key], b.batch(7, 6)[key])
        parts = [a.batch(7, 6, rows=slice(0, 2))[key], b.batch(7, 6, rows=slice(2, 6))[key]]
        assert np.array_equal(full[key], np.concatenate(parts))
    other = SpanCorruptionObjective(tokens, 64, VOCAB, EOS, PAD, seed=6).batch(7, 6)
    assert not np.array_equal(full["input_ids"], other["input_ids"])


def test_noise_is_redrawn_each_epoch():
    tokens = stream(2000)
    obj = SpanCorruptionObjective(tokens, 64, VOCAB, EOS, PAD, seed=1, shuffle=False)
    n = obj.num_blocks
    first, second = obj.batch(0, n), obj.batch(1, n)       # the same blocks, epochs 0 and 1
    assert not np.array_equal(first["input_ids"], second["input_ids"])


def test_stream_ids_in_the_sentinel_range_are_refused():
    tokens = np.array([5, 6, VOCAB - 1, 7] * 50)
    obj = SpanCorruptionObjective(tokens, 32, VOCAB, EOS, PAD)
    with pytest.raises(ValueError, match=f"token id {VOCAB - 1} in the stream is not an ordinary id"):
        obj.batch(0, 4)


@settings(max_examples=30, deadline=None)
@given(st.integers(8, 300), st.sampled_from([0.1, 0.15, 0.2, 0.35, 0.5]),
       st.sampled_from([1.0, 2.0, 3.0]), st.integers(0, 1000))
def test_rows_fit_their_widths_for_other_densities(inputs_length, density, mean_span, seed):
    tokens = np.arange(3000) % 300 + 2
    obj = SpanCorruptionObjective(tokens, inputs_length, VOCAB, EOS, PAD, seed=seed,
                                  noise_density=density, mean_noise_span_length=mean_span)
    b = obj.batch(0, 3)
    assert b["input_ids"].shape == (3, inputs_length)
    lengths = b["attention_mask"].sum(axis=1)
    assert (lengths <= inputs_length).all()
    assert (b["decoder_attention_mask"].sum(axis=1) <= obj.targets_length).all()
    _, blocks = obj.samples(0, 3)
    for r in range(3):
        n_out = b["decoder_attention_mask"][r].sum()
        restored = restore(b["input_ids"][r, :lengths[r] - 1], b["labels"][r, :n_out - 1],
                           obj.lowest_sentinel)
        assert restored == obj.window_tokens(blocks[r]).tolist()
