"""activation_linear: linear(act(a)) with act(a) recomputed in backward instead of kept."""
import tracemalloc

import numpy as np
import pytest

import minitransformer as mt
import minitransformer.functional as F
from minitransformer import kernels, nn
from minitransformer.testing import assert_close

ACTIVATIONS = {"relu": F.relu, "gelu": lambda a: F.gelu(a, approximate="none"),
               "gelu_tanh": lambda a: F.gelu(a, approximate="tanh")}


def _grads(fn, a, w, b, g):
    ts = [mt.tensor(x, requires_grad=True) for x in (a, w, b)]
    out = fn(*ts)
    out.backward(g)
    return [out.data] + [t.grad for t in ts]


@pytest.mark.parametrize("mode", ["auto", "reference"])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-6)])
def test_same_values_and_gradients_as_the_two_ops(mode, activation, dtype, tol):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 5, 16)).astype(dtype)
    w, b = rng.standard_normal((6, 16)).astype(dtype), rng.standard_normal(6).astype(dtype)
    g = rng.standard_normal((3, 5, 6)).astype(dtype)
    with kernels.using(mode):
        want = _grads(lambda a, w, b: F.linear(ACTIVATIONS[activation](a), w, b), a, w, b, g)
        got = _grads(lambda a, w, b: F.activation_linear(a, w, b, activation), a, w, b, g)
    for x, y in zip(got, want):
        assert x.dtype == y.dtype
        assert_close(x, y, rtol=tol, atol=tol)


def test_only_the_inputs_gradients_that_are_asked_for():
    rng = np.random.default_rng(1)
    a, w = rng.standard_normal((4, 8)), rng.standard_normal((3, 8))
    frozen = mt.tensor(w)                                     # no gradient for the weight
    at = mt.tensor(a, requires_grad=True)
    F.activation_linear(at, frozen, activation="gelu").sum().backward()
    assert at.grad is not None and frozen.grad is None


def test_the_activation_is_not_kept_for_backward():
    # The graph of linear(gelu(a)) keeps a (for gelu) and gelu(a) (for the product);
    # activation_linear keeps a only: after forward, one (N, d_ff) array less is held.
    rng = np.random.default_rng(2)
    n, d_ff = 256, 1024
    a = mt.tensor(rng.standard_normal((n, d_ff)).astype(np.float32), requires_grad=True)
    w = mt.tensor(rng.standard_normal((8, d_ff)).astype(np.float32), requires_grad=True)

    def held_after_forward(fn):
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            out = fn()
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        out.sum().backward()                                   # the graph is sound either way
        return held

    plain = held_after_forward(lambda: F.linear(F.gelu(a, approximate="tanh"), w))
    fused = held_after_forward(lambda: F.activation_linear(a, w, activation="gelu_tanh"))
    h_bytes = n * d_ff * 4
    assert plain - fused >= 0.9 * h_bytes, (plain, fused)


def test_feed_forward_uses_it_only_where_it_computes_the_same():
    mt.manual_seed(0)
    ff = nn.FeedForward(8, 32, activation="gelu_tanh")
    x = mt.tensor(np.random.default_rng(3).standard_normal((2, 3, 8)))
    seen = []
    with mt.autograd.observe(lambda fn, phase, ctx, arrays, run: (seen.append(fn.__name__), run())[1]):
        ff(x)
    assert "ActivationLinear" in seen
    seen.clear()
    dropped = nn.FeedForward(8, 32, activation="gelu_tanh", dropout=0.5).train()
    with mt.autograd.observe(lambda fn, phase, ctx, arrays, run: (seen.append(fn.__name__), run())[1]):
        dropped(x)                                  # dropout between act and wo: the plain ops
    assert "ActivationLinear" not in seen and "GeluTanh" in seen


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="activation must be one of"):
        F.activation_linear(mt.tensor(np.ones((2, 3))), mt.tensor(np.ones((4, 3))), activation="swish")
