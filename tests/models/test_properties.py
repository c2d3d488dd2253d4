"""Properties every correct model has, checked on tiny random configs (float64).

- causality: GPT and the T5 decoder never look ahead;
- padding: pad positions never change the outputs at real positions (BERT, the T5 encoder,
  GPT padded on the right, and on the left when position_ids are passed);
- the KV cache: decoding piece by piece gives the logits of one full forward;
- modes: eval is deterministic; train-mode dropout is reproducible from mt.manual_seed.
"""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import minitransformer as mt
from tests.models.tiny import bert_configs, gpt_configs, ids, model64, t5_configs

ATOL = 1e-11
SETTINGS = settings(max_examples=8, deadline=None)


def close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=ATOL)


# ------------------------------------------------------------------------- causality

@SETTINGS
@given(gpt_configs(), st.integers(1, 3), st.integers(2, 9), st.data())
def test_gpt_is_causal(cfg, b, t, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    cut = data.draw(st.integers(0, t - 2))
    model = model64(cfg)
    x = ids(rng, (b, t))
    changed = x.copy()
    changed[:, cut + 1:] = ids(rng, (b, t - cut - 1))
    close(model(changed).numpy()[:, :cut + 1], model(x).numpy()[:, :cut + 1])


@SETTINGS
@given(t5_configs(), st.integers(1, 2), st.integers(2, 8), st.data())
def test_t5_decoder_is_causal(cfg, b, t, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    cut = data.draw(st.integers(0, t - 2))
    model = model64(cfg)
    src, dec = ids(rng, (b, 5)), ids(rng, (b, t))
    changed = dec.copy()
    changed[:, cut + 1:] = ids(rng, (b, t - cut - 1))
    close(model(src, changed).numpy()[:, :cut + 1], model(src, dec).numpy()[:, :cut + 1])


# ------------------------------------------------------------------------- padding

def _right_padded(rng, b, t):
    """ids (B, T), a right-padding mask with at least one real token per row, lengths."""
    lengths = rng.integers(1, t + 1, size=b)
    mask = (np.arange(t)[None, :] < lengths[:, None]).astype(np.int64)
    return ids(rng, (b, t)), mask, lengths


def _repad(rng, x, mask):
    """The same real tokens with fresh random ids at every pad position."""
    return np.where(mask == 1, x, ids(rng, x.shape))


@SETTINGS
@given(bert_configs(), st.integers(1, 3), st.integers(1, 8), st.integers(0, 2**16))
def test_bert_padding_never_changes_real_positions(cfg, b, t, seed):
    rng = np.random.default_rng(seed)
    model = model64(cfg)
    x, mask, lengths = _right_padded(rng, b, t)
    types = rng.integers(0, 2, (b, t))
    out = model(x, mask, types).numpy()
    other = model(_repad(rng, x, mask), mask, rng.integers(0, 2, (b, t)) * (1 - mask) + types * mask).numpy()
    real = mask.astype(bool)
    close(other[real], out[real])
    n = lengths[0]                                  # row 0 alone, without its padding
    close(model(x[:1, :n], None, types[:1, :n]).numpy()[0], out[0, :n])


@SETTINGS
@given(t5_configs(), st.integers(1, 3), st.integers(1, 8), st.integers(0, 2**16))
def test_t5_encoder_padding_never_changes_real_positions(cfg, b, t, seed):
    rng = np.random.default_rng(seed)
    model = model64(cfg)
    x, mask, lengths = _right_padded(rng, b, t)
    dec = ids(rng, (b, 4))
    enc = model.encode(x, mask).numpy()
    x2 = _repad(rng, x, mask)
    real = mask.astype(bool)
    close(model.encode(x2, mask).numpy()[real], enc[real])
    # Nor do they reach the decoder through cross-attention.
    close(model(x2, dec, mask).numpy(), model(x, dec, mask).numpy())
    n = lengths[0]
    close(model.encode(x[:1, :n]).numpy()[0], enc[0, :n])
    # Decoder padding (right) leaves the real decoder positions alone, too.
    dmask = np.ones_like(dec)
    dmask[:, 3:] = 0
    close(model(x, _repad(rng, dec, dmask), mask, dmask).numpy()[:, :3],
          model(x, dec, mask, dmask).numpy()[:, :3])


@SETTINGS
@given(gpt_configs(), st.integers(1, 3), st.integers(1, 8), st.integers(0, 2**16))
def test_gpt_right_padding_never_changes_real_positions(cfg, b, t, seed):
    rng = np.random.default_rng(seed)
    model = model64(cfg)
    x, mask, lengths = _right_padded(rng, b, t)
    out = model(x, mask).numpy()
    real = mask.astype(bool)
    close(model(_repad(rng, x, mask), mask).numpy()[real], out[real])
    n = lengths[0]
    close(model(x[:1, :n]).numpy()[0], out[0, :n])


@SETTINGS
@given(gpt_configs(), st.integers(1, 3), st.integers(1, 8), st.integers(0, 2**16))
def test_gpt_left_padding_with_position_ids_matches_unpadded(cfg, b, t, seed):
    rng = np.random.default_rng(seed)
    model = model64(cfg)
    lengths = rng.integers(1, t + 1, size=b)
    mask = (np.arange(t)[None, :] >= (t - lengths)[:, None]).astype(np.int64)
    x = ids(rng, (b, t))
    pos = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
    out = model(x, mask, pos).numpy()
    real = mask.astype(bool)
    close(model(_repad(rng, x, mask), mask, pos).numpy()[real], out[real])
    for row in range(b):
        n = lengths[row]
        close(model(x[row:row + 1, t - n:]).numpy()[0], out[row, t - n:])


# ------------------------------------------------------------------------- KV cache

def _chunks(data, t):
    """Random cut points splitting 0..t into consecutive pieces."""
    cuts = sorted(data.draw(st.sets(st.integers(1, t - 1), max_size=t - 1)) if t > 1 else [])
    bounds = [0, *cuts, t]
    return list(zip(bounds[:-1], bounds[1:]))


@SETTINGS
@given(gpt_configs(), st.integers(1, 3), st.integers(1, 9), st.data())
def test_gpt_kv_cache_matches_full_forward(cfg, b, t, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    model = model64(cfg)
    x = ids(rng, (b, t))
    if data.draw(st.booleans(), label="left padded"):
        lengths = rng.integers(1, t + 1, size=b)
        mask = (np.arange(t)[None, :] >= (t - lengths)[:, None]).astype(np.int64)
        pos = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
    else:                                                        # default positions, no mask
        mask, pos = np.ones((b, t), np.int64), None
    full = model(x, mask, pos).numpy()
    cache, pieces = None, []
    with mt.no_grad():
        for lo, hi in _chunks(data, t):
            logits, cache = model(x[:, lo:hi], None if pos is None else mask[:, lo:hi],
                                  None if pos is None else pos[:, lo:hi], past_key_values=cache,
                                  use_cache=True)
            pieces.append(logits.numpy())
    assert cache.length == t
    real = mask.astype(bool)
    close(np.concatenate(pieces, axis=1)[real], full[real])


@SETTINGS
@given(t5_configs(), st.integers(1, 3), st.integers(1, 8), st.data())
def test_t5_kv_cache_matches_full_forward(cfg, b, t, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    model = model64(cfg)
    src, mask, _ = _right_padded(rng, b, 6)
    dec = ids(rng, (b, t))
    full = model(src, dec, mask).numpy()
    memory = model.encode(src, mask)
    cache, pieces = None, []
    for lo, hi in _chunks(data, t):
        logits, cache = model.decode(dec[:, lo:hi], memory, mask, past_key_values=cache, use_cache=True)
        pieces.append(logits.numpy())
    close(np.concatenate(pieces, axis=1), full)


# ------------------------------------------------------------------------- modes

@settings(max_examples=5, deadline=None)
@given(st.sampled_from(["gpt", "bert", "t5"]), st.data())
def test_eval_is_deterministic_and_train_dropout_is_seeded(family, data):
    strategy = {"gpt": gpt_configs, "bert": bert_configs, "t5": t5_configs}[family]
    cfg = data.draw(strategy(dropout=0.3))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    x = ids(rng, (2, 6))
    model = model64(cfg)

    def run():
        return (model(x, x) if family == "t5" else model(x)).numpy()

    first = run()
    np.testing.assert_array_equal(run(), first)                   # eval: no randomness
    model.train()
    mt.manual_seed(11)
    a = run()
    mt.manual_seed(11)
    np.testing.assert_array_equal(run(), a)                       # same seed, same masks
    assert not np.allclose(run(), a)                              # the stream moves on
    assert not np.allclose(a, first)                              # dropout did something
