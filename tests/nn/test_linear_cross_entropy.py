"""The blocked language-model head (linear + cross-entropy) against the two ops it fuses."""
import numpy as np
import pytest

import minitransformer as mt
import minitransformer.functional as F
from minitransformer import kernels
from minitransformer.testing import assert_close


def _inputs(dtype, n=(2, 5), c=6, v=11, seed=0, ignored=True):
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((*n, c)).astype(dtype)
    w = (0.5 * rng.standard_normal((v, c))).astype(dtype)
    t = rng.integers(0, v, n)
    if ignored:
        t[0, -1] = t[1, 2] = -100
    return h, w, t


def _run(fn, h, w, t, grad=None, **options):
    ht, wt = mt.tensor(h, requires_grad=True), mt.tensor(w, requires_grad=True)
    out = fn(ht, wt, t, **options)
    out.backward(grad)
    return out.data, ht.grad, wt.grad


def _reference(h, w, t, **options):
    return F.cross_entropy(F.linear(h, w), t, **options)


@pytest.mark.parametrize("mode", ["auto", "reference"])
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-6)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_blocked_head_matches_linear_then_cross_entropy(mode, dtype, tol, reduction, smoothing):
    h, w, t = _inputs(dtype)
    grad = None
    if reduction == "none":
        grad = np.random.default_rng(1).standard_normal(t.shape).astype(dtype)
    elif reduction == "sum":
        grad = np.asarray(0.5, dtype)                      # backward scales the forward's gradients
    options = dict(reduction=reduction, label_smoothing=smoothing)
    with kernels.using(mode):
        want = _run(_reference, h, w, t, grad, **options)
        for block in (3 * 11, 4 * 11, 10 * 11, F.HEAD_BLOCK):       # 3 rows (a ragged last block), 4, all 10
            got = _run(F.linear_cross_entropy, h, w, t, grad, block=block, **options)
            for a, b in zip(got, want):
                assert a.dtype == b.dtype
                assert_close(a, b, rtol=tol, atol=tol)


def test_second_backward_with_retain_graph_recomputes_the_same_gradients():
    h, w, t = _inputs(np.float64)
    ht, wt = mt.tensor(h, requires_grad=True), mt.tensor(w, requires_grad=True)
    loss = F.linear_cross_entropy(ht, wt, t, block=4 * 11)
    loss.backward(retain_graph=True)
    first = ht.grad.copy(), wt.grad.copy()
    loss.backward()
    assert_close(ht.grad, 2 * first[0], rtol=1e-12)
    assert_close(wt.grad, 2 * first[1], rtol=1e-12)


def test_only_the_weight_needs_a_gradient():
    h, w, t = _inputs(np.float64)
    wt = mt.tensor(w, requires_grad=True)
    F.linear_cross_entropy(mt.tensor(h), wt, t, block=4 * 11).backward()
    wr = mt.tensor(w, requires_grad=True)
    _reference(mt.tensor(h), wr, t).backward()
    assert_close(wt.grad, wr.grad, rtol=1e-12)


def test_evaluation_computes_only_the_logits(monkeypatch):
    h, w, t = _inputs(np.float32)
    products = []
    real = F._gemm
    monkeypatch.setattr(F, "_gemm", lambda *a, **k: products.append(k) or real(*a, **k))
    ht, wt = mt.tensor(h, requires_grad=True), mt.tensor(w, requires_grad=True)
    with mt.no_grad():
        loss = F.linear_cross_entropy(ht, wt, t, block=4 * 11)
    assert products == [{"trans_b": True}] * 3          # 10 rows in blocks of 4: logits only
    assert_close(loss.data, _reference(ht, wt, t).data, rtol=2e-6)


def test_gradcheck_through_the_blocked_head():
    h, w, t = _inputs(np.float64, n=(1, 4), c=3, v=5, ignored=False)

    def fn(hh, ww):
        return F.linear_cross_entropy(hh, ww, t, label_smoothing=0.2, block=2 * 5)

    assert mt.gradcheck(fn, [mt.tensor(h, requires_grad=True), mt.tensor(w, requires_grad=True)])


def test_bad_targets_are_refused_as_cross_entropy_refuses_them():
    h, w, t = _inputs(np.float32)
    with pytest.raises(ValueError, match="must match logits"):
        F.linear_cross_entropy(mt.tensor(h), mt.tensor(w), t[:, :3])
    t[0, 0] = 11
    with pytest.raises(ValueError, match=r"outside \[0, 11\)"):
        F.linear_cross_entropy(mt.tensor(h), mt.tensor(w), t)


def test_cross_entropy_kernel_writes_the_gradient_into_a_given_buffer():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((7, 13)).astype(np.float32)
    t = rng.integers(0, 13, 7)
    t[3] = -100
    from minitransformer.kernels import cross_entropy as ce
    _, lse = ce.cross_entropy_forward(x, t)
    r = rng.random(7).astype(np.float32)
    want = ce.cross_entropy_backward(x, t, lse, r, label_smoothing=0.1)
    buf = np.full_like(x, np.nan)
    got = ce.cross_entropy_backward(x, t, lse, r, label_smoothing=0.1, out=buf)
    assert got is buf
    assert_close(buf, want, rtol=0, atol=0)


def test_cross_entropy_kernel_writes_the_gradient_over_the_logits_in_place():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((9, 4099)).astype(np.float32)     # rows wider than a SIMD loop
    t = rng.integers(0, 4099, 9)
    t[4] = -100
    from minitransformer.kernels import cross_entropy as ce
    _, lse = ce.cross_entropy_forward(x, t)
    r = rng.random(9).astype(np.float32)
    want = ce.cross_entropy_backward(x, t, lse, r, label_smoothing=0.1)
    z = x.copy()
    got = ce.cross_entropy_backward(z, t, lse, r, label_smoothing=0.1, out=z)
    assert got is z
    assert_close(z, want, rtol=0, atol=0)
    with pytest.raises(ValueError, match="overlaps the logits"):
        ce.cross_entropy_backward(x[:, 1:], t, lse, r, out=x[:, :-1])


def test_blocks_share_the_rows_evenly():
    # 10 rows of 11 logits in blocks of at most 4 rows: 3 blocks of 4, 4 and 2 rows would
    # do, but even shares (3, 3, 4) are what the head runs.
    h, w, t = _inputs(np.float64)
    seen = []
    real = F._gemm

    def spy(a, b, out, trans_a=False, trans_b=False, accumulate=False):
        if trans_b:
            seen.append(a.shape[0])
        return real(a, b, out, trans_a=trans_a, trans_b=trans_b, accumulate=accumulate)

    F._gemm = spy
    try:
        F.linear_cross_entropy(mt.tensor(h), mt.tensor(w), t, block=4 * 11)
    finally:
        F._gemm = real
    assert seen == [3, 3, 4]
