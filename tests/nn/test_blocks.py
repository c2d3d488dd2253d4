"""Encoder and decoder blocks: pre-LN and post-LN wiring, cross-attention, gradients."""
import numpy as np
import pytest

import minitransformer as mt
from minitransformer.nn import DecoderBlock, EncoderBlock, key_padding_mask


def _x(*shape, seed=0):
    return mt.tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=True)


def test_pre_ln_block_is_x_plus_sublayer_of_norm():
    blk = EncoderBlock(8, 2, 16, norm_first=True).astype("float64")
    x = _x(2, 4, 8)
    h = x + blk.attn(blk.attn_norm(x))
    want = h + blk.ff(blk.ff_norm(h))
    np.testing.assert_allclose(blk(x).numpy(), want.numpy(), rtol=1e-12)


def test_post_ln_block_is_norm_of_x_plus_sublayer():
    blk = EncoderBlock(8, 2, 16, norm_first=False, eps=1e-12).astype("float64")
    x = _x(2, 4, 8)
    h = blk.attn_norm(x + blk.attn(x))
    want = blk.ff_norm(h + blk.ff(h))
    np.testing.assert_allclose(blk(x).numpy(), want.numpy(), rtol=1e-12)


def test_rms_block_without_biases_has_only_weights():
    blk = DecoderBlock(8, 2, 16, d_head=3, norm="rms", bias=False, gated=True, activation="gelu_tanh")
    names = [n for n, _ in blk.named_parameters()]
    assert all(n.endswith("weight") for n in names)
    assert "cross_attn.q.weight" in names and "ff.wi_0.weight" in names and "ff.wi_1.weight" in names
    assert blk.attn.q.weight.shape == (6, 8) and blk.attn.o.weight.shape == (8, 6)
    with pytest.raises(ValueError, match="norm must be"):
        EncoderBlock(8, 2, 16, norm="batch")


def test_decoder_block_uses_memory_and_is_causal():
    blk = DecoderBlock(8, 2, 16).astype("float64").eval()
    x, memory = _x(1, 5, 8), _x(1, 3, 8, seed=1)
    out = blk(x, memory=memory).numpy()
    x2 = x.numpy().copy()
    x2[0, 3:] += 1.0                                   # change the future
    out2 = blk(mt.tensor(x2), memory=memory).numpy()
    np.testing.assert_allclose(out2[0, :3], out[0, :3], atol=1e-12)
    memory2 = mt.tensor(memory.numpy() + 1.0)
    assert not np.allclose(blk(x, memory=memory2).numpy(), out)
    with pytest.raises(ValueError, match="memory"):
        blk(x)


def test_block_gradients_pre_and_post_ln():
    for norm_first in (True, False):
        blk = DecoderBlock(4, 2, 8, norm_first=norm_first).astype("float64")
        x, memory = _x(2, 3, 4), _x(2, 2, 4, seed=1)
        mask = key_padding_mask(np.array([[1, 1], [1, 0]]))
        with mt.kernels.using("reference"):
            assert mt.gradcheck(lambda x, m, *ps: blk(x, memory=m, memory_mask=mask),
                                [x, memory, *blk.parameters()], fast_mode=True)
