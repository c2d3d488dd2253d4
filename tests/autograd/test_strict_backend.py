"""Every op, and a transformer block, on a device that refuses silent NumPy conversion.

See minitransformer.testing.strict: an op that calls NumPy on a device array, or mixes a host
array into device arithmetic, fails here in CI instead of on a user's GPU.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitransformer as mt
import minitransformer.functional as F
from minitransformer.testing import assert_close
from tests.autograd.op_specs import SPECS
from minitransformer.testing.strict import StrictArray, StrictConversionError, strict, to_strict


@pytest.fixture
def strict_device():
    with SPECS.placing(to_strict):
        yield


def test_the_strict_array_refuses_numpy():
    a = to_strict(np.ones(3))
    with pytest.raises(StrictConversionError):
        np.asarray(a)
    with pytest.raises(TypeError):
        np.exp(a)
    with pytest.raises(StrictConversionError):
        a + np.ones(3)
    assert isinstance(strict.exp(a), StrictArray) and isinstance(a + 1.0, StrictArray)


@pytest.mark.usefixtures("strict_device")
@pytest.mark.parametrize("spec", SPECS, ids=SPECS.names())
def test_op_on_strict_device(spec):
    @settings(max_examples=4)
    @given(st.data())
    def check(data):
        fn, arrays = spec.draw(data.draw)
        inputs = [mt.tensor(to_strict(a), requires_grad=True, device="strict") for a in arrays]
        out = fn(*inputs)
        assert out.device == "strict"
        assert mt.gradcheck(fn, inputs, atol=spec.atol, rtol=spec.rtol, fast_mode=True)

    check()


def _block(params, x, targets):
    """A pre-LN GPT block and a cross-entropy head, from the functional ops alone."""
    ln1_w, ln1_b, w_qkv, w_o, ln2_w, ln2_b, w_up, w_down, w_head = params
    b, t, c = x.shape
    h = 2
    qkv = F.linear(F.layer_norm(x, ln1_w, ln1_b), w_qkv)                       # (B, T, 3C)
    q, k, v = (p.reshape(b, t, h, c // h).transpose(1, 2) for p in mt.split(qkv, 3, axis=-1))
    a = F.scaled_dot_product_attention(q, k, v, is_causal=True)               # (B, H, T, C/H)
    x = x + F.linear(a.transpose(1, 2).reshape(b, t, c), w_o)
    x = x + F.linear(F.gelu(F.linear(F.layer_norm(x, ln2_w, ln2_b), w_up), approximate="tanh"), w_down)
    return F.cross_entropy(F.linear(F.rms_norm(x), w_head), targets)


def test_transformer_block_on_strict_device_matches_numpy():
    rng = np.random.default_rng(0)
    c, v = 8, 11
    shapes = [(c,), (c,), (3 * c, c), (c, c), (c,), (c,), (4 * c, c), (c, 4 * c), (v, c)]
    params = [rng.standard_normal(s) * 0.3 for s in shapes]
    x = rng.standard_normal((2, 5, c))
    targets = rng.integers(0, v, (2, 5))
    targets[0, 0] = -100

    host = [mt.tensor(p, requires_grad=True) for p in params]
    loss_host = _block(host, mt.tensor(x), targets)
    loss_host.backward()

    dev = [mt.tensor(to_strict(p), requires_grad=True, device="strict") for p in params]
    loss_dev = _block(dev, mt.tensor(to_strict(x), device="strict"), to_strict(targets))
    loss_dev.backward()
    assert loss_dev.device == "strict"
    assert_close(mt.backend.to_numpy(loss_dev.data), loss_host.data, rtol=1e-12)
    for p_host, p_dev in zip(host, dev):
        assert isinstance(p_dev.grad, StrictArray)
        assert_close(mt.backend.to_numpy(p_dev.grad), p_host.grad, rtol=1e-10, atol=1e-14)
