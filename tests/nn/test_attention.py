"""Multi-head attention against a plain NumPy loop over heads; the KV cache; T5's buckets."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer.nn import (
    KVCache, MultiHeadAttention, RelativePositionBias, key_padding_mask, relative_position_bucket,
)


def _reference(mha, x, memory=None, allowed=None, bias=None):
    """softmax(scale q k^T + bias) v head by head, in NumPy, with the layer's weights."""
    def lin(layer, z):
        return z @ layer.weight.numpy().T + (0 if layer.bias is None else layer.bias.numpy())

    src = x if memory is None else memory
    if mha.fused_qkv:
        q, k, v = np.split(lin(mha.qkv, x), 3, axis=-1)
    else:
        q, k, v = lin(mha.q, x), lin(mha.k, src), lin(mha.v, src)
    b, tq, _ = x.shape
    tk = src.shape[1]
    heads = []
    for h in range(mha.n_heads):
        sl = slice(h * mha.d_head, (h + 1) * mha.d_head)
        s = mha.scale * q[..., sl] @ k[..., sl].transpose(0, 2, 1)        # (B, Tq, Tk)
        if bias is not None:
            s = s + bias[:, h]
        ok = np.ones((b, tq, tk), bool)
        if mha.causal and memory is None:
            ok &= np.tril(np.ones((tq, tk), bool), k=tk - tq)
        if allowed is not None:
            ok &= allowed
        s = np.where(ok, s, -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        heads.append((p / p.sum(-1, keepdims=True)) @ v[..., sl])
    return lin(mha.o, np.concatenate(heads, axis=-1))


@settings(max_examples=10, deadline=None)
@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 6), st.sampled_from([1, 2, 3]),
       st.booleans(), st.booleans(), st.booleans(), st.integers(0, 10_000))
def test_self_attention_matches_the_reference(b, t, pad, heads, causal, fused, biased, seed):
    rng = np.random.default_rng(seed)
    mt.manual_seed(seed)
    mha = MultiHeadAttention(heads * 2, heads, fused_qkv=fused, causal=causal,
                             scale=None if biased else 1.0, bias=biased, std=0.5).astype("float64").eval()
    x = rng.standard_normal((b, t, heads * 2))
    mask = np.ones((b, t), int)
    mask[0, max(1, t - pad):] = 0                       # row 0 padded on the right
    pos_bias = rng.standard_normal((1, heads, t, t)) if biased else None
    out = mha(mt.tensor(x), mask=key_padding_mask(mask),
              bias=None if pos_bias is None else mt.tensor(pos_bias))
    want = _reference(mha, x, allowed=mask.astype(bool)[:, None, :], bias=pos_bias)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-9, atol=1e-12)


def test_cross_attention_matches_the_reference_and_ignores_causal():
    rng = np.random.default_rng(1)
    mha = MultiHeadAttention(6, 3, d_head=4, causal=False, bias=False).astype("float64")
    x, memory = rng.standard_normal((2, 3, 6)), rng.standard_normal((2, 5, 6))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    out = mha(mt.tensor(x), mt.tensor(memory), mask=key_padding_mask(mask))
    np.testing.assert_allclose(out.numpy(), _reference(mha, x, memory, mask.astype(bool)[:, None, :]),
                               rtol=1e-9)
    assert mha.o.weight.shape == (6, 12)
    fused = MultiHeadAttention(6, 3, fused_qkv=True)
    with pytest.raises(ValueError, match="fused qkv"):
        fused(mt.tensor(x.astype(np.float32)), mt.tensor(memory.astype(np.float32)))


def test_attention_gradients():
    rng = np.random.default_rng(2)
    mha = MultiHeadAttention(4, 2, fused_qkv=True, causal=True).astype("float64")
    x = mt.tensor(rng.standard_normal((2, 3, 4)), requires_grad=True)
    bias = mt.tensor(rng.standard_normal((1, 2, 3, 3)), requires_grad=True)
    mask = key_padding_mask(np.array([[1, 1, 0], [1, 1, 1]]))
    assert mt.gradcheck(lambda x, b, *ps: mha(x, mask=mask, bias=b), [x, bias, *mha.parameters()],
                        fast_mode=True)


@pytest.mark.parametrize("fused", [True, False])
def test_kv_cache_gives_the_full_forward(fused):
    rng = np.random.default_rng(3)
    mha = MultiHeadAttention(8, 2, fused_qkv=fused, causal=True).astype("float64")
    x = mt.tensor(rng.standard_normal((2, 7, 8)))
    full = mha(x).numpy()
    cache = KVCache(1)
    slot = cache.self_attention[0]
    pieces = [mha(x[:, :3], cache=slot)]
    for t in range(3, 7):
        pieces.append(mha(x[:, t:t + 1], cache=slot))
    assert slot.length == 7 and cache.length == 7
    np.testing.assert_allclose(np.concatenate([p.numpy() for p in pieces], axis=1), full, atol=1e-12)


def test_cache_mask_extension_and_reorder():
    cache = KVCache(1)
    m = cache.extend_mask(np.array([[0, 1], [1, 1]]), 2, 2, np)
    assert m.tolist() == [[False, True], [True, True]]
    cache.self_attention[0].k = cache.self_attention[0].v = mt.tensor(np.zeros((2, 1, 2, 1)))
    m = cache.extend_mask(None, 1, 2, np)                       # the new token is real
    assert m.tolist() == [[False, True, True], [True, True, True]]
    cache.self_attention[0].k = cache.self_attention[0].v = mt.tensor(np.zeros((2, 1, 3, 1)))
    m = cache.extend_mask(np.array([[1, 1, 1, 0], [1, 1, 1, 1]]), 1, 2, np)   # past + new
    assert m[0].tolist() == [True, True, True, False]
    with pytest.raises(ValueError, match="fits neither"):
        cache.extend_mask(np.ones((2, 2)), 1, 2, np)
    cache.reorder(np.array([1, 1]))
    assert cache.key_mask.tolist() == [[True] * 4, [True] * 4]


def test_key_padding_mask():
    assert key_padding_mask(None) is None
    assert key_padding_mask(np.ones((2, 3), int)) is None           # nothing to mask
    m = key_padding_mask(np.array([[1, 0, 1]]))
    assert m.shape == (1, 1, 1, 3) and m.dtype == bool and m.ravel().tolist() == [True, False, True]
    with pytest.raises(ValueError, match="batch, length"):
        key_padding_mask(np.ones(3))


# -------------------------------------------------------------------------------------
# T5 relative position buckets, pinned by worked values.
# 32 buckets, max distance 128. Bidirectional: 16 per side, 8 exact (|d| < 8), then
# 8 + floor(8 log(|d|/8) / log(16)), capped at 15; keys after the query add 16.
# One-directional: 32 buckets for d <= 0, 16 exact, then 16 + floor(16 log(|d|/16) / log(8)),
# capped at 31; keys after the query are bucket 0.
# -------------------------------------------------------------------------------------

BIDIRECTIONAL = {0: 0, -1: 1, -7: 7, -8: 8, -9: 8, -15: 9, -16: 10, -31: 11, -32: 12, -63: 13,
                 -64: 14, -127: 15, -128: 15, -1000: 15,
                 1: 17, 7: 23, 8: 24, 16: 26, 32: 28, 64: 30, 127: 31, 128: 31, 1000: 31}
ONE_DIRECTIONAL = {0: 0, -1: 1, -15: 15, -16: 16, -17: 16, -20: 17, -31: 21, -32: 21, -63: 26,
                   -64: 26, -127: 31, -128: 31, -5000: 31, 1: 0, 5: 0, 500: 0}


@pytest.mark.parametrize("bidirectional,table", [(True, BIDIRECTIONAL), (False, ONE_DIRECTIONAL)])
def test_relative_position_bucket_worked_values(bidirectional, table):
    rel = np.array(list(table))
    got = relative_position_bucket(rel, bidirectional=bidirectional, num_buckets=32, max_distance=128)
    assert dict(zip(table, got.tolist())) == table


def test_bucket_formula_in_between():
    """Every one-directional distance d = 16..300 against the formula written out:
    16 + floor(16 ln(d / 16) / ln(128 / 16)), at most 31 (d = 40: 16 + floor(7.05) = 23)."""
    distances = np.arange(16, 301)
    expected = [min(31, 16 + math.floor(16 * math.log(d / 16) / math.log(8))) for d in distances]
    got = relative_position_bucket(-distances, False, 32, 128).tolist()
    assert got == expected
    assert got[40 - 16] == 23


def test_relative_position_bucket_matches_transformers():
    torch = pytest.importorskip("torch")
    t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
    rel = np.arange(-300, 301)
    for bidirectional in (True, False):
        for buckets, distance in ((32, 128), (8, 20), (6, 10), (64, 1000)):
            ours = relative_position_bucket(rel, bidirectional, buckets, distance)
            theirs = t5.T5Attention._relative_position_bucket(torch.tensor(rel), bidirectional,
                                                              buckets, distance).numpy()
            np.testing.assert_array_equal(ours, theirs)


def test_relative_position_bias_shape_and_offset():
    rpb = RelativePositionBias(8, 3, 20, bidirectional=False).astype("float64")
    full = rpb(5, 5).numpy()
    assert full.shape == (1, 3, 5, 5)
    w = rpb.weight.numpy()
    buckets = relative_position_bucket(np.arange(5)[None] - np.arange(5)[:, None], False, 8, 20)
    np.testing.assert_array_equal(full[0], w[buckets].transpose(2, 0, 1))
    # The last two query rows, as a cached decoder computes them.
    np.testing.assert_array_equal(rpb(2, 5, offset=3).numpy(), full[:, :, 3:])


@pytest.mark.parametrize("mode", ["auto", "reference"])
def test_packed_self_attention_is_attention_of_its_three_parts(mode):
    """F.packed_self_attention(qkv) equals scaled_dot_product_attention of qkv[:, :, 0], [1],
    [2] as (B, H, T, D) heads, values and gradients (the kernel writes the three gradients
    into one packed array; the reference takes the three slices)."""
    from minitransformer import functional as F

    rng = np.random.default_rng(11)
    b, t, h, d = 2, 19, 3, 8
    qkv_data = rng.standard_normal((b, t, 3, h, d))
    bias_data = rng.standard_normal((1, h, t, t))
    mask = key_padding_mask(np.array([[1] * 15 + [0] * 4, [1] * 19]))
    g = rng.standard_normal((b, h, t, d))
    with mt.kernels.using(mode):
        qkv = mt.tensor(qkv_data, requires_grad=True)
        bias = mt.tensor(bias_data, requires_grad=True)
        out = F.packed_self_attention(qkv, mask=mask, is_causal=True, bias=bias, dropout_p=0.2, seed=5)
        out.backward(g)
        parts = [mt.tensor(np.ascontiguousarray(qkv_data[:, :, s].transpose(0, 2, 1, 3)), requires_grad=True)
                 for s in range(3)]
        bias2 = mt.tensor(bias_data, requires_grad=True)
        want = F.scaled_dot_product_attention(*parts, mask=mask, is_causal=True, bias=bias2,
                                              dropout_p=0.2, seed=5)
        want.backward(g)
    np.testing.assert_allclose(out.numpy(), want.numpy(), rtol=1e-12, atol=1e-12)
    for s in range(3):
        np.testing.assert_allclose(qkv.grad[:, :, s].transpose(0, 2, 1, 3), parts[s].grad,
                                   rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bias.grad, bias2.grad, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match=r"\(B, T, 3, H, D\)"):
        F.packed_self_attention(mt.tensor(qkv_data[:, :, :2]))


def test_fused_projection_gets_its_gradient_in_one_piece():
    """With the kernel, a fused-qkv layer's graph runs from the projection to attention
    through a reshape alone: no slices of the projection, whose backward would each fill a
    zero array of its size, and no sum of three gradients."""
    mha = MultiHeadAttention(12, 3, fused_qkv=True, causal=True)
    x = mt.tensor(np.random.default_rng(12).standard_normal((2, 5, 12)).astype(np.float32),
                  requires_grad=True)
    out = mha(x)
    nodes, stack = [], [out._node]
    while stack:
        nodes.append(stack.pop())
        stack.extend(i for i in nodes[-1].inputs if i is not None and not isinstance(i, mt.Tensor))
    assert "GetItem" not in [n.fn.__name__ for n in nodes]
    attention = next(n for n in nodes if n.fn.__name__ == "FlashAttention")
    reshape = attention.inputs[0]
    assert reshape.fn.__name__ == "Reshape" and reshape.inputs[0].fn.__name__ == "Linear"
    out.sum().backward()
    assert x.grad.shape == x.shape and mha.qkv.weight.grad.shape == mha.qkv.weight.shape


@pytest.mark.gpu
def test_packed_self_attention_on_a_gpu_matches_the_cpu():
    """The packed op on CuPy arrays (the CUDA kernels copy their gradients into the packed
    array) against the same op on the CPU."""
    import cupy as cp

    from minitransformer import functional as F

    rng = np.random.default_rng(13)
    qkv_data = rng.standard_normal((2, 70, 3, 4, 64)).astype(np.float32)
    g = rng.standard_normal((2, 4, 70, 64)).astype(np.float32)
    results = []
    for to in (np.asarray, cp.asarray):
        qkv = mt.tensor(to(qkv_data), requires_grad=True)
        out = F.packed_self_attention(qkv, is_causal=True, dropout_p=0.1, seed=3)
        out.backward(to(g))
        results.append((mt.backend.to_numpy(out.data), mt.backend.to_numpy(qkv.grad)))
    (o_cpu, g_cpu), (o_gpu, g_gpu) = results
    np.testing.assert_allclose(o_gpu, o_cpu, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g_gpu, g_cpu, rtol=1e-4, atol=1e-4)
