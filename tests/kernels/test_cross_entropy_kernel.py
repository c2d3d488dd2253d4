"""The fused cross-entropy CPU kernel against ``minitransformer.functional.cross_entropy``."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitransformer as mt
import minitransformer.functional as F
from minitransformer import kernels
from minitransformer.kernels import cross_entropy as K

from .util import assert_close

IGNORE = -100


def reference(logits, targets, smoothing, reduction):
    with kernels.using("reference"):
        t = mt.tensor(logits, requires_grad=True)
        loss = F.cross_entropy(t, targets, ignore_index=IGNORE, label_smoothing=smoothing,
                               reduction=reduction)
        loss.backward(np.ones(loss.shape, logits.dtype))
    return loss.data, t.grad


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), v=st.sampled_from([1, 2, 5, 31, 64, 300]),
       smoothing=st.sampled_from([0.0, 0.1, 1.0]), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**31))
def test_cross_entropy_kernel_matches_reference(n, v, smoothing, dtype, seed):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((n, v)) * 4).astype(dtype)
    targets = rng.integers(0, v, n)
    targets[rng.random(n) < 0.25] = IGNORE
    losses_ref, _ = reference(logits, targets, smoothing, "none")
    mean_ref, dlogits_ref = reference(logits, targets, smoothing, "mean")

    losses, lse = K.cross_entropy_forward(logits, targets, IGNORE, smoothing)
    assert losses.dtype == dtype and lse.dtype == dtype
    assert_close(losses, losses_ref, dtype, "row losses")
    lse64 = np.log(np.exp(logits.astype(np.float64)).sum(1))
    assert_close(lse, lse64, dtype, "log-sum-exp")
    valid = targets != IGNORE
    count = max(int(valid.sum()), 1)
    row_grad = (valid / count).astype(dtype)
    dlogits = K.cross_entropy_backward(logits, targets, lse, row_grad, IGNORE, smoothing)
    assert_close(dlogits, dlogits_ref, dtype, "dlogits")
    assert np.all(dlogits[~valid] == 0)

    # Through the functional op in "auto" mode (the kernel path).
    t = mt.tensor(logits, requires_grad=True)
    loss = F.cross_entropy(t, targets, ignore_index=IGNORE, label_smoothing=smoothing)
    loss.backward()
    assert_close(loss.data, mean_ref, dtype, "F.cross_entropy (auto)")
    assert_close(t.grad, dlogits_ref, dtype, "F.cross_entropy backward (auto)")


def test_large_vocabulary_rows():
    # A language model's logits: the row is longer than any cache level's share.
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((3, 50257)).astype(np.float32) * 5
    targets = np.array([0, 50256, 777])
    losses, lse = K.cross_entropy_forward(logits, targets)
    ref_lse = np.log(np.exp(logits.astype(np.float64)).sum(1))
    assert_close(lse, ref_lse, np.float32, "lse")
    assert_close(losses, ref_lse - logits[np.arange(3), targets], np.float32, "losses")


def test_gradcheck_through_the_kernel():
    rng = np.random.default_rng(0)
    x = mt.tensor(rng.standard_normal((6, 11)), requires_grad=True)
    targets = np.array([1, 0, IGNORE, 10, 5, 5])
    assert kernels.get("cross_entropy_forward", x.data) is K.cross_entropy_forward
    assert mt.gradcheck(lambda a: F.cross_entropy(a, targets, label_smoothing=0.1), [x],
                        fast_mode=True)


def test_bad_targets_are_refused():
    logits = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match="outside"):
        K.cross_entropy_forward(logits, np.array([0, 4]))
    with pytest.raises(ValueError, match="targets shape"):
        K.cross_entropy_forward(logits, np.array([0, 1, 2]))
