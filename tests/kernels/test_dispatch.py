"""The registry hands the functional ops these kernels, and "reference" turns them off."""
import numpy as np
import pytest

import minitransformer as mt
import minitransformer.functional as F
from minitransformer import kernels
from minitransformer.kernels import attention, cross_entropy, softmax

NAMES = {
    "softmax_forward": softmax, "softmax_backward": softmax,
    "cross_entropy_forward": cross_entropy, "cross_entropy_backward": cross_entropy,
    "attention_forward": attention, "attention_backward": attention,
}


@pytest.mark.parametrize("name", sorted(NAMES))
def test_cpu_kernels_are_registered(name):
    x = np.zeros(3, np.float32)
    assert kernels.get(name, x) is getattr(NAMES[name], name)
    with kernels.using("reference"):
        assert kernels.get(name, x) is None


def test_reference_mode_never_calls_a_kernel(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a kernel ran in reference mode")

    monkeypatch.setattr(attention, "attention_forward", refuse)
    monkeypatch.setattr(softmax, "softmax_forward", refuse)
    q = mt.tensor(np.ones((1, 1, 3, 4)), requires_grad=True)
    with kernels.using("reference"):
        F.scaled_dot_product_attention(q, q, q, is_causal=True).sum().backward()
    with pytest.raises(AssertionError, match="reference mode"):
        F.scaled_dot_product_attention(q, q, q, is_causal=True)


def test_same_graph_either_way():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 8))
    grads = []
    for mode in ("reference", "auto"):
        with kernels.using(mode):
            t = mt.tensor(x, requires_grad=True)
            y = F.softmax(t * 2.0)
            (y * y).sum().backward()
            grads.append(t.grad)
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12, atol=1e-14)
