"""``attention.tile_schedule`` against the kernel's own loop bounds and the causal mask.

The kernel cannot be asked which tiles it visited, so it is probed: NaN in the values of
one key tile reaches the output of exactly the query tiles whose forward pass computed
that pair (even a masked entry multiplies its zero probability by NaN); NaN in the keys of
one tile reaches dQ of exactly the query tiles the backward pass computed with it.
"""
import numpy as np
import pytest

from minitransformer.kernels import attention as A

CASES = [  # (Tq, Tk, block_q, block_k)
    (32, 32, 8, 8),
    (29, 29, 8, 4),      # ragged last tiles
    (12, 30, 4, 8),      # Tq < Tk: the diagonal is aligned bottom-right (a KV cache)
    (30, 12, 8, 4),      # Tq > Tk: early queries see no key at all
    (1, 9, 4, 4),
]


def causal_allowed(tq, tk):
    """(Tq, Tk) bool: query i sees key j iff j <= i + Tk - Tq."""
    return np.arange(tk)[None, :] <= np.arange(tq)[:, None] + (tk - tq)


def inputs(tq, tk, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((1, 1, tq, 4))
    k = rng.standard_normal((1, 1, tk, 4))
    v = rng.standard_normal((1, 1, tk, 4))
    return q, k, v


@pytest.mark.parametrize("tq, tk, bq, bk", CASES)
def test_schedule_follows_the_causal_mask(tq, tk, bq, bk):
    allowed = causal_allowed(tq, tk)
    sched = A.tile_schedule(tq, tk, causal=True, block_q=bq, block_k=bk)
    assert sched.shape == (-(-tq // bq), -(-tk // bk))
    for qb in range(sched.shape[0]):
        for kb in range(sched.shape[1]):
            tile = allowed[qb * bq:(qb + 1) * bq, kb * bk:(kb + 1) * bk]
            want = A.SKIPPED if not tile.any() else A.FULL if tile.all() else A.MASKED
            assert sched[qb, kb] == want, (qb, kb)
    assert (A.tile_schedule(tq, tk, causal=False, block_q=bq, block_k=bk) == A.FULL).all()


@pytest.mark.parametrize("tq, tk, bq, bk", CASES)
def test_forward_computes_exactly_the_scheduled_tiles(tq, tk, bq, bk):
    q, k, v = inputs(tq, tk)
    sched = A.tile_schedule(tq, tk, causal=True, block_q=bq, block_k=bk)
    for kb in range(sched.shape[1]):
        poisoned = v.copy()
        poisoned[..., kb * bk:(kb + 1) * bk, :] = np.nan
        o, _ = A.attention_forward(q, k, poisoned, causal=True, block_q=bq, block_k=bk)
        rows_hit = np.isnan(o[0, 0]).any(axis=1)                      # (Tq,)
        for qb in range(sched.shape[0]):
            hit = rows_hit[qb * bq:(qb + 1) * bq].any()
            assert hit == (sched[qb, kb] != A.SKIPPED), (qb, kb)


@pytest.mark.parametrize("tq, tk, bq, bk", CASES)
def test_backward_computes_exactly_the_scheduled_tiles(tq, tk, bq, bk):
    q, k, v = inputs(tq, tk)
    do = np.ones_like(q)
    o, lse = A.attention_forward(q, k, v, causal=True, block_q=bq, block_k=bk)
    sched = A.tile_schedule(tq, tk, causal=True, block_q=bq, block_k=bk)
    for kb in range(sched.shape[1]):
        poisoned = k.copy()
        poisoned[..., kb * bk:(kb + 1) * bk, :] = np.nan
        dq, *_ = A.attention_backward(q, poisoned, v, o, lse, do, causal=True, block_q=bq, block_k=bk)
        rows_hit = np.isnan(dq[0, 0]).any(axis=1)
        for qb in range(sched.shape[0]):
            hit = rows_hit[qb * bq:(qb + 1) * bq].any()
            assert hit == (sched[qb, kb] != A.SKIPPED), (qb, kb)
