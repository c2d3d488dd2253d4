"""Causal LM batches, and the block schedule every objective shares."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minitransformer.objectives import CLMObjective

EOS = 7


def test_packed_blocks_and_labels():
    tokens = np.arange(100) % 7          # every 7th token is EOS: documents of 6 tokens
    tokens[tokens == 0] = EOS
    obj = CLMObjective(tokens, 16, EOS, seed=0, shuffle=False)
    assert obj.num_blocks == 7
    b = obj.batch(0, 7)
    assert set(b) == {"input_ids", "attention_mask", "labels"}
    assert all(v.shape == (7, 16) and v.dtype == np.int64 for v in b.values())
    assert np.array_equal(b["input_ids"].reshape(-1)[:100], tokens)
    # Padding is ignored by position: EOS in real text is a label, the padding (also EOS) is not.
    assert np.array_equal(b["labels"][:6], b["input_ids"][:6])
    assert (b["labels"] == EOS).sum() == (tokens == EOS).sum()
    assert b["attention_mask"][6].tolist() == [1] * 4 + [0] * 12
    assert b["labels"][6].tolist() == tokens[96:].tolist() + [-100] * 12
    assert (b["input_ids"][6, 4:] == EOS).all()


def test_custom_pad_id():
    b = CLMObjective(np.arange(10), 8, EOS, pad_id=0, shuffle=False).batch(1, 1)
    assert b["input_ids"][0].tolist() == [8, 9] + [0] * 6


def test_every_epoch_visits_each_block_once_in_a_new_order():
    tokens = np.arange(50 * 8)
    obj = CLMObjective(tokens, 8, EOS, seed=4)
    orders = []
    for epoch in range(3):
        b = obj.batch(epoch, 50)
        orders.append(b["input_ids"][:, 0] // 8)
        assert sorted(orders[-1].tolist()) == list(range(50))
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])


def test_batches_straddle_epochs():
    obj = CLMObjective(np.arange(40), 4, EOS, seed=1)      # 10 blocks
    epochs, blocks = obj.samples(2, 4)                      # samples 8..11
    assert epochs.tolist() == [0, 0, 1, 1]
    assert blocks[:2].tolist() == obj.permutation(0)[8:].tolist()
    assert blocks[2:].tolist() == obj.permutation(1)[:2].tolist()
    assert obj.epoch(2, 4) == 0 and obj.epoch(3, 4) == 1


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 12), st.integers(0, 2**31), st.data())
def test_pure_function_and_row_slices(index, batch_size, seed, data):
    tokens = np.arange(1000) % 50
    obj = CLMObjective(tokens, 16, EOS, seed=seed)
    fresh = CLMObjective(tokens, 16, EOS, seed=seed)
    full = obj.batch(index, batch_size)
    a = data.draw(st.integers(0, batch_size))
    for key in full:
        assert np.array_equal(full[key], fresh.batch(index, batch_size)[key])
        assert np.array_equal(full[key][a:], obj.batch(index, batch_size, rows=slice(a, None))[key])
        assert np.array_equal(full[key][:a], obj.batch(index, batch_size, rows=range(a))[key])


def test_seeds_give_different_orders_and_memmaps_work(tmp_path):
    tokens = np.arange(64 * 16, dtype=np.uint16)
    path = tmp_path / "t.bin"
    tokens.tofile(path)
    mm = np.memmap(path, dtype=np.uint16, mode="r")
    a = CLMObjective(mm, 16, EOS, seed=0).batch(0, 8)["input_ids"]
    b = CLMObjective(tokens, 16, EOS, seed=1).batch(0, 8)["input_ids"]
    assert a.dtype == np.int64 and not np.array_equal(a, b)


def test_bad_arguments():
    tokens = np.arange(100)
    with pytest.raises(ValueError, match="block length must be a positive integer"):
        CLMObjective(tokens, 0, EOS)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        CLMObjective(tokens, 8, EOS, seed=-1)
    with pytest.raises(ValueError, match="must hold integers"):
        CLMObjective(np.ones(10), 8, EOS)
    obj = CLMObjective(tokens, 8, EOS)
    with pytest.raises(ValueError, match="batch index must be"):
        obj.batch(-1, 4)
    with pytest.raises(ValueError, match="batch_size must be"):
        obj.batch(0, 0)
    with pytest.raises(ValueError, match="outside batch rows"):
        obj.batch(0, 4, rows=range(2, 6))
    with pytest.raises(ValueError, match="rows must be a slice or range"):
        obj.batch(0, 4, rows=[0, 1])
