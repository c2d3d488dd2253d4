"""The basic layers against their formulas, their gradients, and their init."""
import math

import numpy as np
import pytest

import minitransformer as mt
from minitransformer.nn import Dropout, Embedding, FeedForward, LayerNorm, Linear, RMSNorm


def _x(*shape, seed=0):
    return mt.tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=True)


def test_linear_is_x_w_transpose_plus_b_with_out_in_weight():
    layer = Linear(4, 3).astype("float64")
    assert layer.weight.shape == (3, 4) and layer.bias.shape == (3,)
    x = _x(2, 5, 4)
    np.testing.assert_allclose(layer(x).numpy(), x.numpy() @ layer.weight.numpy().T + layer.bias.numpy())
    assert Linear(4, 3, bias=False).bias is None
    assert mt.gradcheck(lambda x, w, b: layer(x), [x, layer.weight, layer.bias])


def test_init_std_is_the_one_asked_for():
    mt.manual_seed(0)
    w = Linear(400, 500, std=0.05).weight.numpy()
    assert abs(w.std() - 0.05) < 0.002 and abs(w.mean()) < 0.002
    assert np.all(Linear(3, 3).bias.numpy() == 0)


def test_embedding_lookup_and_padding_row():
    emb = Embedding(6, 4, padding_idx=2).astype("float64")
    assert np.all(emb.weight.numpy()[2] == 0)
    ids = np.array([[1, 2, 5], [2, 2, 0]])
    out = emb(ids)
    np.testing.assert_array_equal(out.numpy(), emb.weight.numpy()[ids])
    # The pad row gets no gradient from the lookup, even when it holds non-zero values.
    emb.weight.data[2] = 1.0
    emb(ids).sum().backward()
    assert np.all(emb.weight.grad[2] == 0) and np.all(emb.weight.grad[1] == 1)
    np.testing.assert_array_equal(emb(ids).numpy()[0, 1], np.ones(4))
    with pytest.raises(ValueError, match="padding_idx"):
        Embedding(3, 2, padding_idx=3)


def test_layer_norm_and_rms_norm_formulas_and_gradients():
    x = _x(3, 5)
    ln = LayerNorm(5, eps=1e-12).astype("float64")
    ln.weight.data[:] = np.arange(1.0, 6.0)
    ln.bias.data[:] = 0.5
    a = x.numpy()
    want = (a - a.mean(-1, keepdims=True)) / np.sqrt(a.var(-1, keepdims=True) + 1e-12) * np.arange(1.0, 6.0) + 0.5
    np.testing.assert_allclose(ln(x).numpy(), want, rtol=1e-10)
    rms = RMSNorm(5, eps=1e-6).astype("float64")
    rms.weight.data[:] = 2.0
    np.testing.assert_allclose(rms(x).numpy(), 2 * a / np.sqrt((a * a).mean(-1, keepdims=True) + 1e-6))
    assert not hasattr(rms, "bias")
    assert mt.gradcheck(lambda x, w, b: ln(x), [x, ln.weight, ln.bias])
    assert mt.gradcheck(lambda x, w: rms(x), [x, rms.weight])


def test_dropout_is_identity_in_eval_and_seeded_in_train():
    x = mt.tensor(np.ones((50, 40)))
    drop = Dropout(0.5)
    mt.manual_seed(3)
    a = drop(x).numpy()
    mt.manual_seed(3)
    b = drop(x).numpy()
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) == {0.0, 2.0} and 0.4 < (a == 0).mean() < 0.6
    assert not np.array_equal(a, drop(x).numpy())              # a fresh mask per call
    drop.eval()
    assert drop(x) is x
    with pytest.raises(ValueError, match="p must be"):
        Dropout(1.0)


@pytest.mark.parametrize("activation,gated", [("relu", False), ("gelu", False), ("gelu_tanh", False),
                                              ("gelu_tanh", True)])
def test_feed_forward_matches_its_formula(activation, gated):
    ff = FeedForward(4, 6, activation, gated=gated, bias=not gated).astype("float64")
    x = _x(2, 3, 4, seed=1)
    a = x.numpy()

    def act(z):
        if activation == "relu":
            return np.maximum(z, 0)
        if activation == "gelu":
            from scipy.special import erf
            return 0.5 * z * (1 + erf(z / math.sqrt(2)))
        return 0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z ** 3)))

    def lin(layer, z):
        return z @ layer.weight.numpy().T + (0 if layer.bias is None else layer.bias.numpy())

    h = act(lin(ff.wi_0, a)) * lin(ff.wi_1, a) if gated else act(lin(ff.wi, a))
    np.testing.assert_allclose(ff(x).numpy(), lin(ff.wo, h), rtol=1e-10)
    params = ff.parameters()
    assert mt.gradcheck(lambda x, *ps: ff(x), [x, *params], fast_mode=True)


def test_feed_forward_rejects_an_unknown_activation():
    with pytest.raises(ValueError, match="activation must be one of"):
        FeedForward(4, 8, "swish")
