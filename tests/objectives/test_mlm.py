"""Masked LM batches on a synthetic vocabulary: symbols 0..K-1, special ids above them."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minitransformer.objectives import MLMObjective

K = 40                                       # ordinary symbols 0..39
PAD, MASK, CLS, SEP, EOS = 40, 41, 42, 43, 44
VOCAB = 45
SPECIAL = {PAD, MASK, CLS, SEP, EOS}


def stream(n=30000, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        out += rng.integers(0, K, size=rng.integers(3, 60)).tolist() + [EOS]
    return np.array(out[:n], dtype=np.uint16)


def make(tokens=None, **kwargs):
    args = dict(block_size=32, vocab_size=VOCAB, mask_id=MASK, cls_id=CLS, sep_id=SEP,
                pad_id=PAD, special_ids=[EOS], seed=0)
    args.update(kwargs)
    return MLMObjective(stream() if tokens is None else tokens, **args)


def originals(obj, index, batch_size):
    """The unmasked rows: [CLS] window [SEP], padded."""
    _, blocks = obj.samples(index, batch_size)
    rows = np.full((len(blocks), obj.block_size), PAD)
    for r, b in enumerate(blocks):
        row = [CLS, *obj.window_tokens(b).tolist(), SEP]
        rows[r, :len(row)] = row
    return rows


def test_layout():
    obj = make()
    b = obj.batch(0, 4)
    assert set(b) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert all(v.shape == (4, 32) and v.dtype == np.int64 for v in b.values())
    assert (b["input_ids"][:, 0] == CLS).all() and (b["input_ids"][:, -1] == SEP).all()
    assert (b["token_type_ids"] == 0).all() and (b["attention_mask"] == 1).all()
    assert obj.num_blocks == 30000 // 30
    # 30010 tokens: the last block holds 10, then [SEP], then padding never selected.
    short = make(tokens=stream(30010), shuffle=False).batch(1000, 1)
    assert short["attention_mask"][0].tolist() == [1] * 12 + [0] * 20
    assert short["input_ids"][0, 11] == SEP and (short["input_ids"][0, 12:] == PAD).all()
    assert (short["labels"][0, 11:] == -100).all()


def test_selection_and_80_10_10_rates_within_binomial_bounds():
    obj = make(seed=11)
    candidates = selected = masked = randomized = kept = 0
    for i in range(300):
        b = obj.batch(i, 16)
        raw = originals(obj, i, 16)
        ordinary = ~np.isin(raw, list(SPECIAL)) & (b["attention_mask"] == 1)
        sel = b["labels"] != -100
        assert not (sel & ~ordinary).any(), "special tokens and padding are never selected"
        assert np.array_equal(b["labels"][sel], raw[sel])
        assert np.array_equal(b["input_ids"][~sel], raw[~sel]), "unselected tokens untouched"
        candidates += ordinary.sum()
        selected += sel.sum()
        ids = b["input_ids"][sel]
        masked += (ids == MASK).sum()
        changed = (ids != MASK) & (ids != raw[sel])
        assert not np.isin(ids[changed], list(SPECIAL)).any(), "random ids are ordinary"
        randomized += changed.sum()
        kept += (ids == raw[sel]).sum()

    def within(count, n, p):      # 5 standard deviations: fails by chance about 1 in 1.7 million
        return abs(count - n * p) < 5 * np.sqrt(n * p * (1 - p))

    assert within(selected, candidates, 0.15)
    assert within(masked, selected, 0.8)
    # A random draw equals the original 1 time in K: it then counts as kept.
    assert within(randomized, selected, 0.1 * (1 - 1 / K))
    assert within(kept, selected, 0.1 + 0.1 / K)


def test_masks_are_fresh_each_epoch_but_pure_per_batch():
    obj = make(shuffle=False)
    n = obj.num_blocks
    epoch0, epoch1 = obj.batch(0, n), obj.batch(1, n)            # same blocks, next epoch
    assert not np.array_equal(epoch0["labels"], epoch1["labels"])
    again = make(shuffle=False).batch(0, n)
    for key in epoch0:
        assert np.array_equal(epoch0[key], again[key])


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10**4), st.integers(1, 9), st.data())
def test_rows_of_a_batch_match_the_full_batch(index, batch_size, data):
    obj = make(seed=3)
    full = obj.batch(index, batch_size)
    cut = data.draw(st.integers(0, batch_size))
    for key in full:
        parts = [obj.batch(index, batch_size, rows=slice(0, cut))[key],
                 obj.batch(index, batch_size, rows=slice(cut, batch_size))[key]]
        assert np.array_equal(full[key], np.concatenate(parts))


def test_without_cls_and_sep():
    obj = make(cls_id=None, sep_id=None, block_size=16)
    b = obj.batch(0, 2)
    assert obj.window == 16 and not np.isin(b["input_ids"], [CLS, SEP]).any()


def test_whole_word_masking_selects_words_together():
    starts = np.zeros(VOCAB, dtype=bool)
    starts[:K // 2] = True                      # symbols 0..19 begin a word, 20..39 continue it
    starts[list(SPECIAL)] = True
    obj = make(whole_word=True, word_starts=starts, seed=2, mlm_probability=0.3)
    words = selected_words = 0
    for i in range(40):
        b = obj.batch(i, 8)
        raw = originals(obj, i, 8)
        sel = b["labels"] != -100
        for r in range(8):
            word_sel = None
            for t in range(1, obj.block_size):
                tok = raw[r, t]
                if tok in SPECIAL:
                    assert not sel[r, t]
                    word_sel = None
                    continue
                if starts[tok] or word_sel is None:
                    word_sel = sel[r, t]
                    words += 1
                    selected_words += int(word_sel)
                assert sel[r, t] == word_sel, "a word is selected whole or not at all"
    # Each word is selected independently with p = 0.3: the rate is within 5 standard errors.
    rate, se = selected_words / words, math.sqrt(0.3 * 0.7 / words)
    assert abs(rate - 0.3) < 5 * se, \
        f"{selected_words} of {words} words selected ({rate:.3f}), expected 0.3 +- {5 * se:.3f}"


def test_bad_arguments():
    with pytest.raises(ValueError, match="needs word_starts"):
        make(whole_word=True)
    with pytest.raises(ValueError, match="not below vocab_size"):
        make(special_ids=[EOS, 99])
    with pytest.raises(ValueError, match="room for tokens"):
        make(block_size=2)
    with pytest.raises(ValueError, match="must be a token id"):
        make(mask_id=-1)
    with pytest.raises(ValueError, match="1-D array"):
        make(tokens=np.zeros((3, 3), dtype=int))
    with pytest.raises(ValueError, match="is empty"):
        make(tokens=np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        make(tokens=np.array([1, 2, 300] * 20)).batch(0, 2)


def test_random_replacements_are_ordinary_tokens_when_specials_come_first():
    """BERT's vocabulary starts with its specials ([PAD] = 0, ...): a random replacement must
    still be drawn from the ordinary tokens only, wherever the specials sit."""
    shift = 5                                    # specials 0..4, ordinary symbols 5..44
    tokens = stream() + shift
    tokens[stream() == EOS] = 4
    obj = MLMObjective(tokens, block_size=32, vocab_size=VOCAB, mask_id=1, cls_id=2, sep_id=3, pad_id=0,
                       special_ids=[4], seed=0)
    replaced = 0
    for i in range(20):
        b = obj.batch(i, 8)
        targets = b["labels"] != -100
        changed = targets & (b["input_ids"] != b["labels"]) & (b["input_ids"] != 1)
        assert (b["input_ids"][changed] >= shift).all(), "a random replacement drew a special token"
        replaced += int(changed.sum())
    assert replaced > 20, "too few random replacements to check"
