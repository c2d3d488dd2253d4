"""Fitting L(N) = E + A / N^alpha: known laws are recovered, with honest intervals."""
import math

import numpy as np
import pytest

from minitransformer import scaling


def test_noise_free_losses_give_back_the_law_exactly():
    n = np.geomspace(1e5, 1e9, 7)
    e, a, alpha = scaling.CHINCHILLA["E"], scaling.CHINCHILLA["A"], scaling.CHINCHILLA["alpha"]
    fit = scaling.fit_power_law(n, e + a * n ** -alpha)
    assert fit.E == pytest.approx(e, rel=1e-6)
    assert fit.A == pytest.approx(a, rel=1e-5)
    assert fit.alpha == pytest.approx(alpha, rel=1e-6)
    assert fit.rmse < 1e-8
    assert fit.predict(1e6) == pytest.approx(e + a * 1e6 ** -alpha, rel=1e-8)


def test_noisy_losses_recover_known_laws_within_their_intervals():
    seeds = range(30)
    covered = {"E": 0, "A": 0, "alpha": 0}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        n = np.geomspace(1e4, 1e7, 8)
        e, alpha = rng.uniform(1.0, 3.0), rng.uniform(0.2, 0.5)
        a = rng.uniform(1.0, 3.0) * n[0] ** alpha         # the reducible loss at the smallest size
        loss = e + a * n ** -alpha + 0.01 * rng.standard_normal(n.size)
        fit = scaling.fit_power_law(n, loss)
        assert abs(fit.alpha - alpha) < 0.05, (seed, fit)
        assert abs(fit.E - e) < 0.15, (seed, fit)
        assert abs(math.log(fit.A / a)) < 0.4, (seed, fit)
        for key, truth in (("E", e), ("A", a), ("alpha", alpha)):
            lo, hi = fit.ci[key]
            assert lo < getattr(fit, key) < hi
            covered[key] += lo <= truth <= hi
    # 95% intervals: allow for their approximation (linearised at the optimum) and chance.
    assert all(c >= 0.8 * len(seeds) for c in covered.values()), covered


def test_intervals_widen_with_noise_and_vanish_without_spare_points():
    n = np.geomspace(1e4, 1e7, 8)
    clean = 2.0 + 300 * n ** -0.3
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(n.size)
    widths = []
    for sigma in (0.002, 0.02):
        fit = scaling.fit_power_law(n, clean + sigma * noise)
        widths.append(fit.ci["alpha"][1] - fit.ci["alpha"][0])
    assert widths[0] < widths[1]
    three = scaling.fit_power_law(n[::3], clean[::3])
    assert all(math.isnan(v) for lo_hi in three.ci.values() for v in lo_hi)


def test_kaplan_form_is_a_straight_line_in_log_log():
    n = np.geomspace(1e5, 1e9, 6)
    rng = np.random.default_rng(3)
    loss = (8.8e13 / n) ** 0.076 * np.exp(0.002 * rng.standard_normal(n.size))
    fit = scaling.fit_pure_power_law(n, loss)
    assert fit["alpha"] == pytest.approx(0.076, abs=0.005)
    assert fit["ci"][0] < 0.076 < fit["ci"][1]
    assert fit["N_c"] == pytest.approx(8.8e13, rel=0.5)


@pytest.mark.parametrize("n,loss,match", [
    ([1e4, 1e5], [3.0, 2.9], "at least 3 points"),
    ([1e4, 1e4, 1e5], [3.0, 3.0, 2.9], "3 distinct sizes"),
    ([1e4, -1e5, 1e6], [3.0, 2.9, 2.8], "positive"),
    ([1e4, 1e5, 1e6], [3.0, 2.9], "same length"),
])
def test_bad_points_are_refused_with_what_to_do(n, loss, match):
    with pytest.raises(ValueError, match=match):
        scaling.fit_power_law(n, loss)
