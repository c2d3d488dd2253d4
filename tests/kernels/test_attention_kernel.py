"""The FlashAttention-style CPU kernel against the reference attention.

The reference is ``F.scaled_dot_product_attention`` under ``kernels.using("reference")``:
the whole (Tq, Tk) score matrix, a masked softmax and two matrix products, differentiated
by autograd. The kernel is called directly with small tiles (so that tile edges, ragged
last tiles and skipped causal tiles all occur at small T), and through the functional op
in "auto" mode with its default tiles.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitransformer as mt
import minitransformer.functional as F
from minitransformer import kernels
from minitransformer.kernels import attention as A
from minitransformer.kernels import blas

from .util import LIBRARIES, assert_close


@st.composite
def attention_cases(draw):
    b = draw(st.integers(1, 2))
    h = draw(st.integers(1, 3))
    tq = draw(st.sampled_from([1, 2, 7, 16, 23, 40]))
    tk = draw(st.sampled_from([tq, tq, 1, 5, 16, 37]))       # often Tq == Tk; also Tq <> Tk
    d = draw(st.sampled_from([1, 3, 8, 16, 32]))
    return dict(
        shape=(b, h, tq, tk, d),
        causal=draw(st.booleans()),
        mask=draw(st.sampled_from(["none", "padding", "full"])),
        bias=draw(st.sampled_from(["none", "shared", "per_batch"])),
        dropout=draw(st.sampled_from([0.0, 0.0, 0.3])),
        scale=draw(st.sampled_from([None, 1.0])),
        tiles=draw(st.sampled_from([(4, 4), (8, 4), (16, 8)])),
        dtype=draw(st.sampled_from([np.float32, np.float64])),
        seed=draw(st.integers(0, 2**31)),
    )


def make_inputs(case):
    b, h, tq, tk, d = case["shape"]
    dtype = case["dtype"]
    rng = np.random.default_rng(case["seed"])
    q = rng.standard_normal((b, h, tq, d)).astype(dtype)
    k = rng.standard_normal((b, h, tk, d)).astype(dtype)
    v = rng.standard_normal((b, h, tk, d)).astype(dtype)
    do = rng.standard_normal((b, h, tq, d)).astype(dtype)
    mask = None
    if case["mask"] == "padding":                 # (B, 1, 1, Tk): padded keys
        mask = rng.random((b, 1, 1, tk)) > 0.3
        mask[0] = False                           # batch entry 0 sees nothing at all
    elif case["mask"] == "full":                  # (B, 1, Tq, Tk)
        mask = rng.random((b, 1, tq, tk)) > 0.3
        mask[-1, 0, 0] = False                    # one fully masked query row
    bias = None
    if case["bias"] != "none":
        bias = rng.standard_normal((1 if case["bias"] == "shared" else b, h, tq, tk)).astype(dtype)
    return q, k, v, do, mask, bias


def reference(q, k, v, do, mask, bias, case):
    with kernels.using("reference"):
        ts = [mt.tensor(a, requires_grad=True) for a in (q, k, v)]
        tb = None if bias is None else mt.tensor(bias, requires_grad=True)
        o = F.scaled_dot_product_attention(*ts, mask=mask, is_causal=case["causal"], bias=tb,
                                           scale=case["scale"], dropout_p=case["dropout"],
                                           seed=1234)
        o.backward(do)
    return o.data, [t.grad for t in ts], None if tb is None else tb.grad


def full_rows_masked(mask, causal, tq, tk):
    """(B, 1, Tq) True where a query row can see no key at all."""
    allowed = np.ones((1, 1, tq, tk), bool)
    if mask is not None:
        allowed = np.broadcast_to(mask, mask.shape[:2] + (tq, tk))
    if causal:
        allowed = allowed & np.tri(tq, tk, k=tk - tq, dtype=bool)
    return ~allowed.any(-1)


@settings(max_examples=40, deadline=None)
@given(attention_cases())
def test_attention_kernel_matches_reference(case):
    q, k, v, do, mask, bias = make_inputs(case)
    dtype = case["dtype"]
    o_ref, (dq_ref, dk_ref, dv_ref), dbias_ref = reference(q, k, v, do, mask, bias, case)
    scale = case["scale"] if case["scale"] is not None else 1.0 / np.sqrt(q.shape[-1])
    block_q, block_k = case["tiles"]
    args = (mask, bias, scale, case["causal"], case["dropout"], 1234)

    o, lse = A.attention_forward(q, k, v, *args, block_q=block_q, block_k=block_k)
    assert o.dtype == dtype and lse.shape == q.shape[:3]
    assert_close(o, o_ref, dtype, "O")
    dq, dk, dv, dbias = A.attention_backward(q, k, v, o, lse, do, *args, block_q=block_q,
                                             block_k=block_k)
    assert_close(dq, dq_ref, dtype, "dQ")
    assert_close(dk, dk_ref, dtype, "dK")
    assert_close(dv, dv_ref, dtype, "dV")
    if bias is None:
        assert dbias is None
    else:
        assert dbias.shape == bias.shape
        assert_close(dbias, dbias_ref, dtype, "dbias")

    # lse is -inf exactly on the rows that see nothing, whose output and dQ are zero.
    empty = np.broadcast_to(full_rows_masked(mask, case["causal"], *q.shape[2:3], k.shape[2]),
                            lse.shape)
    assert np.array_equal(np.isneginf(lse), empty)
    assert np.all(o[empty] == 0) and np.all(dq[empty] == 0)

    # The functional op in "auto" mode goes through the kernel with its default tiles.
    ts = [mt.tensor(a, requires_grad=True) for a in (q, k, v)]
    tb = None if bias is None else mt.tensor(bias, requires_grad=True)
    out = F.scaled_dot_product_attention(*ts, mask=mask, is_causal=case["causal"], bias=tb,
                                         scale=case["scale"], dropout_p=case["dropout"],
                                         seed=1234)
    out.backward(do)
    assert_close(out.data, o_ref, dtype, "F.sdpa (auto)")
    for t, ref, name in zip(ts, (dq_ref, dk_ref, dv_ref), "qkv"):
        assert_close(t.grad, ref, dtype, f"F.sdpa (auto) d{name}")
    if tb is not None:
        assert_close(tb.grad, dbias_ref, dtype, "F.sdpa (auto) dbias")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_default_tiles_with_ragged_edges(dtype):
    # T = 130 is two full 64-tiles and a ragged one; Tq < Tk skips causal tiles unevenly.
    case = dict(shape=(1, 2, 130, 150, 64), causal=True, mask="padding", bias="per_batch",
                dropout=0.1, scale=None, dtype=dtype, seed=3)
    q, k, v, do, mask, bias = make_inputs(case)
    mask[:] = True
    mask[0, 0, 0, 140:] = False
    o_ref, grads_ref, dbias_ref = reference(q, k, v, do, mask, bias, case)
    args = (mask, bias, None, True, 0.1, 1234)
    o, lse = A.attention_forward(q, k, v, *args)
    assert_close(o, o_ref, dtype, "O")
    *grads, dbias = A.attention_backward(q, k, v, o, lse, do, *args)
    for g, ref, name in zip(grads, grads_ref, "qkv"):
        assert_close(g, ref, dtype, f"d{name}")
    assert_close(dbias, dbias_ref, dtype, "dbias")


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("causal", [False, True])
def test_default_tiles_of_each_blas(library, causal):
    """The default tiles of each library this machine has (MKL's are 256 wide without a
    causal mask): T = 300 leaves a ragged last tile either way."""
    case = dict(shape=(2, 2, 300, 290, 32), causal=causal, mask="padding", bias="per_batch",
                dropout=0.1, scale=None, dtype=np.float32, seed=6)
    q, k, v, do, mask, bias = make_inputs(case)
    o_ref, grads_ref, dbias_ref = reference(q, k, v, do, mask, bias, case)
    args = (mask, bias, None, causal, 0.1, 1234)
    with blas.using(library):
        tiles = A.default_tiles(32, causal)
        o, lse = A.attention_forward(q, k, v, *args)
        *grads, dbias = A.attention_backward(q, k, v, o, lse, do, *args)
    if library == "mkl":
        assert tiles == ((64, 64) if causal else (256, 256))
    assert_close(o, o_ref, np.float32, "O")
    for g, ref, name in zip(grads, grads_ref, "qkv"):
        assert_close(g, ref, np.float32, f"d{name}")
    assert_close(dbias, dbias_ref, np.float32, "dbias")


def test_heads_are_read_where_they_lie():
    """Heads that are views of a (B, T, H, D) projection go to BLAS in place (rows H D
    apart), not copied; a layout BLAS cannot read, or another dtype, is copied. Either way
    the results are the same, and the gradients come as views of (B, T, H, D) memory."""
    rng = np.random.default_rng(7)
    b, t, h, d = 2, 70, 3, 16
    heads = [rng.standard_normal((b, t, h, d)).astype(np.float32).transpose(0, 2, 1, 3) for _ in range(4)]
    for x in heads:
        kept, rows = A._rows(x, np.float32)
        assert kept is x and list(rows[1:]) == [t * h * d, d, h * d]
    assert not np.shares_memory(A._rows(heads[0][..., ::2], np.float32)[0], heads[0])
    assert A._rows(heads[0], np.float64)[0].dtype == np.float64
    q, k, v, do = heads
    contiguous = [np.ascontiguousarray(x) for x in heads]
    o, lse = A.attention_forward(q, k, v, causal=True, block_q=16, block_k=8)
    o_c, lse_c = A.attention_forward(*contiguous[:3], causal=True, block_q=16, block_k=8)
    np.testing.assert_array_equal(o, o_c)
    grads = A.attention_backward(q, k, v, o, lse, do, causal=True, block_q=16, block_k=8)[:3]
    grads_c = A.attention_backward(*contiguous[:3], o_c, lse_c, contiguous[3], causal=True,
                                   block_q=16, block_k=8)[:3]
    for g, g_c in zip(grads, grads_c):
        np.testing.assert_array_equal(g, g_c)
        assert g.transpose(0, 2, 1, 3).flags.c_contiguous          # (B, T, H, D) memory


def test_half_precision_inputs_compute_in_float32():
    rng = np.random.default_rng(8)
    q, k, v, do = (rng.standard_normal((1, 2, 20, 8)).astype(np.float16) for _ in range(4))
    o, lse = A.attention_forward(q, k, v, causal=True)
    grads = A.attention_backward(q, k, v, o, lse, do, causal=True)[:3]
    wide = [x.astype(np.float32) for x in (q, k, v, do)]
    o32, lse32 = A.attention_forward(*wide[:3], causal=True)
    grads32 = A.attention_backward(*wide[:3], o32, lse32, wide[3], causal=True)[:3]
    assert o.dtype == np.float16 and lse.dtype == np.float32
    np.testing.assert_allclose(o.astype(np.float32), o32, atol=2e-3)
    for g, g32 in zip(grads, grads32):
        assert g.dtype == np.float16
        np.testing.assert_allclose(g.astype(np.float32), g32, atol=5e-3, rtol=5e-3)


def test_output_is_heads_last_so_the_merge_of_the_heads_is_a_view():
    """O comes as a view of (B, Tq, H, D) memory: the attention layer's merge to (B, Tq, H D)
    copies nothing, and the output projection keeps the memory attention keeps. Backward
    takes O and dO in either layout and gives the same gradients."""
    rng = np.random.default_rng(4)
    q, k, v, do = (rng.standard_normal((2, 3, 37, 8)).astype(np.float32) for _ in range(4))
    o, lse = A.attention_forward(q, k, v, causal=True, block_q=16, block_k=8)
    merged = o.transpose(0, 2, 1, 3).reshape(2, 37, 24)
    assert np.shares_memory(merged, o) and merged.flags.c_contiguous
    grads = A.attention_backward(q, k, v, o, lse, do, causal=True, block_q=16, block_k=8)
    contiguous = A.attention_backward(q, k, v, np.ascontiguousarray(o), lse, do, causal=True,
                                      block_q=16, block_k=8)
    heads_last_do = np.ascontiguousarray(do.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    from_view = A.attention_backward(q, k, v, o, lse, heads_last_do, causal=True, block_q=16, block_k=8)
    for g, c, f in zip(grads[:3], contiguous[:3], from_view[:3]):
        np.testing.assert_array_equal(g, c)
        np.testing.assert_array_equal(g, f)
    # Through the layer: the projection's saved input is attention's own output memory.
    layer = mt.nn.MultiHeadAttention(24, 3, causal=True)
    x = mt.tensor(rng.standard_normal((2, 37, 24)).astype(np.float32), requires_grad=True)
    out = layer(x)
    proj_input = out._node.ctx.x
    attention = out._node.inputs[0].inputs[0].inputs[0]          # back through reshape, transpose
    assert attention.fn is F.FlashAttention
    assert np.shares_memory(proj_input, attention.ctx.o)


def test_result_does_not_depend_on_the_thread_count():
    import numba

    rng = np.random.default_rng(5)
    q, k, v, do = (rng.standard_normal((1, 1, 50, 8)) for _ in range(4))
    outs = []
    before = numba.get_num_threads()
    try:
        for n in sorted({1, before}):
            numba.set_num_threads(n)
            o, lse = A.attention_forward(q, k, v, causal=True, block_q=8, block_k=8)
            outs.append((o, *A.attention_backward(q, k, v, o, lse, do, causal=True, block_q=8,
                                                  block_k=8)[:3]))
    finally:
        numba.set_num_threads(before)
    for a, b in zip(outs[0], outs[-1]):
        assert_close(a, b, np.float64, "1 thread vs all")


def test_gradcheck_through_the_kernel():
    rng = np.random.default_rng(0)
    b, h, tq, tk, d = 2, 2, 5, 7, 4
    mask = rng.random((b, 1, 1, tk)) > 0.3
    mask[:, :, :, -1] = True
    inputs = [mt.tensor(rng.standard_normal(s), requires_grad=True)
              for s in [(b, h, tq, d), (b, h, tk, d), (b, h, tk, d), (1, h, tq, tk)]]
    assert kernels.get("attention_forward", inputs[0].data) is A.attention_forward

    def attention(q, k, v, bias):
        return F.scaled_dot_product_attention(q, k, v, mask=mask, is_causal=True, bias=bias,
                                              dropout_p=0.2, seed=99)

    assert mt.gradcheck(attention, inputs, fast_mode=True)


def test_no_queries_or_no_keys_give_zero_gradients():
    rng = np.random.default_rng(9)
    for tq, tk in ((0, 5), (5, 0)):
        q = rng.standard_normal((1, 2, tq, 4)).astype(np.float32)
        k, v = (rng.standard_normal((1, 2, tk, 4)).astype(np.float32) for _ in range(2))
        o, lse = A.attention_forward(q, k, v)
        assert o.shape == q.shape and np.all(o == 0)
        dq, dk, dv, _ = A.attention_backward(q, k, v, o, lse, np.ones_like(q))
        assert (dq.shape, dk.shape, dv.shape) == (q.shape, k.shape, v.shape)
        assert not (dq.any() or dk.any() or dv.any())


def test_bad_arguments_are_refused():
    q = np.zeros((1, 2, 3, 4), np.float32)
    with pytest.raises(ValueError, match="do not fit"):
        A.attention_forward(q, np.zeros((1, 2, 3, 5), np.float32), q)
    with pytest.raises(ValueError, match="bias shape"):
        A.attention_forward(q, q, q, bias=np.zeros((1, 1, 3, 3), np.float32))
    with pytest.raises(ValueError, match="seed"):
        A.attention_forward(q, q, q, dropout_p=0.1)
    with pytest.raises(TypeError, match="bool"):
        A.attention_forward(q, q, q, mask=np.ones((1, 1, 1, 3)))


def test_gradients_written_into_given_arrays():
    """``out``: dq, dk and dv go into the caller's arrays (the packed gradient of a fused
    projection), the same numbers as without; arrays the kernel cannot write are refused.
    The GPU kernels copy into ``out`` through ``cuda_attention.into``."""
    from minitransformer.kernels import cuda_attention

    rng = np.random.default_rng(10)
    q, k, v, do = (rng.standard_normal((2, 3, 21, 8)).astype(np.float32) for _ in range(4))
    o, lse = A.attention_forward(q, k, v, causal=True)
    want = A.attention_backward(q, k, v, o, lse, do, causal=True)
    packed = np.full((2, 21, 3, 3, 8), np.nan, np.float32)               # (B, T, 3, H, D)
    out = tuple(packed[:, :, s].transpose(0, 2, 1, 3) for s in range(3))
    got = A.attention_backward(q, k, v, o, lse, do, causal=True, out=out)
    for g, target, w in zip(got[:3], out, want[:3]):
        assert g is target
        np.testing.assert_array_equal(g, w)
    with pytest.raises(ValueError, match="in place"):
        A.attention_backward(q, k, v, o, lse, do, out=tuple(x.astype(np.float64) for x in out))
    with pytest.raises(ValueError, match="out shapes"):
        A.attention_backward(q, k, v, o, lse, do, out=(out[0][:, :2], out[1], out[2]))
    targets = tuple(np.zeros_like(w) for w in want[:3])
    into = cuda_attention.into(targets, want)
    assert all(a is b for a, b in zip(into, targets)) and into[3] is want[3]
    for t, w in zip(targets, want[:3]):
        np.testing.assert_array_equal(t, w)
