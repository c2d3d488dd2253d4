"""A synthetic corpus whose best possible loss is known: a seeded Markov chain.

Symbols 0..K-1 are fed directly as token ids. Each symbol is followed by its successor
(i + 1 mod K) with probability 3/4 and by one other fixed symbol with probability 1/4, so
the chain is irreducible and its entropy rate H (the loss of a perfect next-token model,
nats per symbol) is H(3/4, 1/4) ~ 0.56, far below the unigram entropy U ~ ln K.
"""
from __future__ import annotations

import math

import numpy as np

K = 16
EOS, PAD, MASK, CLS, SEP = K, K + 1, K + 2, K + 3, K + 4
NUM_SENTINELS = 20
VOCAB = K + 5 + NUM_SENTINELS          # sentinels count down from VOCAB - 1
SPECIAL = [EOS, PAD, MASK, CLS, SEP] + list(range(K + 5, VOCAB))


def transition_matrix(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = np.zeros((K, K))
    for i in range(K):
        other = rng.choice([j for j in range(K) if j != (i + 1) % K])
        p[i, (i + 1) % K] = 0.75
        p[i, other] = 0.25
    return p


def stationary(p: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eig(p.T)
    pi = np.real(v[:, np.argmin(np.abs(w - 1))])
    return pi / pi.sum()


def entropies(p: np.ndarray) -> tuple[float, float]:
    """(entropy rate H, unigram entropy U) in nats."""
    pi = stationary(p)
    logp = np.log(np.where(p > 0, p, 1.0))
    h = float(-(pi[:, None] * p * logp).sum())
    u = float(-(pi * np.log(pi)).sum())
    return h, u


def sample(p: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cdf = p.cumsum(axis=1)
    u = rng.random(n)
    out = np.empty(n, np.int64)
    out[0] = 0
    for t in range(1, n):
        out[t] = min(int(np.searchsorted(cdf[out[t - 1]], u[t])), K - 1)
    return out


# ---------------------------------------------------------------------------------------
# Floors: no model can beat these by more than noise, so a loss below one is a leak
# ---------------------------------------------------------------------------------------

def _floor_stats(cond: np.ndarray, joint: np.ndarray) -> tuple[float, float, int]:
    """(entropy, per-token std of -log p, free parameters) of a best predictor whose
    conditional probabilities ``cond`` sit beside their ``joint`` probabilities; the
    context is every axis but the one predicted (axis 1 of ``cond``)."""
    logp = np.log(np.where(cond > 0, cond, 1.0))
    h = float(-(joint * logp).sum())
    var = float((joint * logp ** 2).sum()) - h ** 2
    support = (joint > 0).sum(axis=1)                    # possible predictions per context
    free = int((support[support > 0] - 1).sum())
    return h, math.sqrt(max(var, 0.0)), free


def next_symbol_floor(p: np.ndarray) -> tuple[float, float, int]:
    """A symbol seen after its predecessor: H(X_t | X_{t-1}) = H, its std, free parameters."""
    joint = stationary(p)[:, None] * p                                   # (a, x)
    h, sd, free = _floor_stats(p[:, :, None], joint[:, :, None])
    return h, sd, free


def masked_symbol_floor(p: np.ndarray) -> tuple[float, float, int]:
    """A symbol seen between both neighbours: H(X_t | X_{t-1}, X_{t+1}), the least a bidirectional
    model can reach on a chain symbol (more masked neighbours only raise it)."""
    joint = stationary(p)[:, None, None] * p[:, :, None] * p[None, :, :]   # (a, x, b)
    cond = joint / np.maximum(joint.sum(axis=1, keepdims=True), 1e-300)
    return _floor_stats(cond, joint)


def loss_floor(stats: tuple[float, float, int], chain_targets: int, all_targets: int) -> float:
    """The lowest mean loss over ``all_targets`` tokens that is not a leak, when ``chain_targets``
    of them are chain symbols bound by ``stats`` (the rest, special tokens, may cost nothing).

    Two allowances below the expected floor: 5 standard errors of the sample mean, and the
    plug-in bias (free parameters / 2m): a model can at most fit the sample's own frequencies.
    """
    h, sd, free = stats
    m = chain_targets
    return (m * h - 5 * sd * math.sqrt(m) - free / 2) / all_targets
