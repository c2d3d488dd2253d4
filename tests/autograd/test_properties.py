"""Properties of meaning: what softmax, cross-entropy and causal attention must satisfy."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import minitransformer as mt
import minitransformer.functional as F
from minitransformer.testing import assert_close, float_arrays, shapes


@settings(max_examples=30)
@given(shapes(min_dims=1, max_dims=3).flatmap(lambda s: float_arrays(s, min_value=-30, max_value=30)),
       st.floats(-100, 100))
def test_softmax_rows_sum_to_one_and_ignore_shifts(x, shift):
    y = F.softmax(mt.tensor(x)).data
    assert_close(y.sum(axis=-1), np.ones(x.shape[:-1]), rtol=1e-12, atol=1e-12)
    assert_close(F.softmax(mt.tensor(x + shift)).data, y, rtol=1e-9, atol=1e-12)


def test_reference_softmax_survives_extreme_logits():
    """exp(1000) overflows and exp(-1000) underflows: the reference (the kernel has its own
    test) must subtract each row's maximum before exponentiating."""
    x = np.array([[1000.0, 999.0, -1000.0], [-1000.0, -1001.0, -1002.0]])
    with mt.kernels.using("reference"):
        y = F.softmax(mt.tensor(x)).data
    want = np.exp(x - x.max(axis=-1, keepdims=True))
    assert_close(y, want / want.sum(axis=-1, keepdims=True), rtol=1e-12, atol=1e-15)


@settings(max_examples=30)
@given(shapes(min_dims=1, max_dims=3).flatmap(lambda s: float_arrays(s, min_value=-20, max_value=20)))
def test_log_softmax_is_log_of_softmax(x):
    assert_close(F.log_softmax(mt.tensor(x)).data, np.log(F.softmax(mt.tensor(x)).data), rtol=1e-9, atol=1e-9)


@settings(max_examples=30)
@given(st.data())
def test_cross_entropy_is_mean_negative_log_likelihood_over_kept_targets(data):
    n, v = data.draw(st.integers(1, 6)), data.draw(st.integers(2, 6))
    logits = data.draw(float_arrays((n, v), min_value=-5, max_value=5))
    targets = np.array(data.draw(st.lists(st.sampled_from([*range(v), -100]), min_size=n, max_size=n)))
    loss = F.cross_entropy(mt.tensor(logits), targets).item()
    logp = F.log_softmax(mt.tensor(logits)).data
    kept = targets != -100
    expected = -logp[np.arange(n)[kept], targets[kept]].mean() if kept.any() else 0.0
    assert abs(loss - expected) <= 1e-10 * max(1.0, abs(expected))


def test_cross_entropy_label_smoothing_matches_its_definition():
    rng = np.random.default_rng(0)
    logits, targets, s = rng.standard_normal((5, 4)), np.array([0, 3, 1, -100, 2]), 0.2
    logp = F.log_softmax(mt.tensor(logits)).data
    kept = targets != -100
    target_dist = np.full((5, 4), s / 4) + (1 - s) * np.eye(4)[np.where(kept, targets, 0)]
    expected = -(target_dist * logp).sum(axis=1)[kept].mean()
    assert abs(F.cross_entropy(mt.tensor(logits), targets, label_smoothing=s).item() - expected) < 1e-12


@settings(max_examples=25)
@given(st.data())
def test_causal_attention_output_at_t_ignores_later_positions(data):
    b, h, t, d = 1, 2, data.draw(st.integers(2, 6)), data.draw(st.integers(1, 4))
    q, k, v = (data.draw(float_arrays((b, h, t, d))) for _ in range(3))
    cut = data.draw(st.integers(0, t - 2))
    k2, v2 = k.copy(), v.copy()
    k2[:, :, cut + 1:] += data.draw(float_arrays((b, h, t - cut - 1, d), min_value=0.5, max_value=3))
    v2[:, :, cut + 1:] -= 1.0
    for mode in ("reference", "auto"):
        with mt.kernels.using(mode):
            o1 = F.scaled_dot_product_attention(mt.tensor(q), mt.tensor(k), mt.tensor(v), is_causal=True).data
            o2 = F.scaled_dot_product_attention(mt.tensor(q), mt.tensor(k2), mt.tensor(v2), is_causal=True).data
        assert_close(o1[:, :, :cut + 1], o2[:, :, :cut + 1], rtol=1e-12, atol=1e-12)


def test_fully_masked_rows_give_zeros_not_nan():
    q = mt.tensor(np.ones((1, 1, 2, 3)), requires_grad=True)
    k = mt.tensor(np.ones((1, 1, 4, 3)), requires_grad=True)
    v = mt.tensor(np.ones((1, 1, 4, 3)), requires_grad=True)
    mask = np.zeros((1, 1, 2, 4), bool)
    mask[0, 0, 1] = True                          # row 0 sees nothing, row 1 sees all
    for mode in ("reference", "auto"):
        with mt.kernels.using(mode):
            for t in (q, k, v):
                t.zero_grad()
            out = F.scaled_dot_product_attention(q, k, v, mask=mask)
            out.sum().backward()
        assert np.all(out.data[0, 0, 0] == 0) and np.all(np.isfinite(out.data))
        assert np.all(np.isfinite(q.grad)) and np.all(q.grad[0, 0, 0] == 0)


def test_causal_mask_is_bottom_right_aligned_for_fewer_queries():
    m = F.causal_mask(np, 2, 4)
    assert m.tolist() == [[True, True, True, False], [True, True, True, True]]


def test_dropout_is_seeded_scaled_and_off_in_eval():
    x = mt.tensor(np.ones((200, 50)))
    a = F.dropout(x, p=0.25, seed=7).data
    assert np.array_equal(a, F.dropout(x, p=0.25, seed=7).data)
    assert not np.array_equal(a, F.dropout(x, p=0.25, seed=8).data)
    assert set(np.unique(a)) <= {0.0, 1 / 0.75}
    assert abs((a == 0).mean() - 0.25) < 0.02
    assert F.dropout(x, p=0.25, training=False) is x
