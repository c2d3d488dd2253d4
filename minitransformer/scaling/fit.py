"""Fitting scaling laws to (size, loss) points, with confidence intervals.

``fit_power_law`` fits L(N) = E + A / N^alpha (Chinchilla's form: E is the loss no model
size removes) by least squares; ``fit_pure_power_law`` fits Kaplan's L(N) = (N_c / N)^alpha.
The published values they are compared with are below.
"""
from __future__ import annotations

import dataclasses
import math

import numpy

# Published reference values (Kaplan et al. 2020; Hoffmann et al. 2022).
KAPLAN_ALPHA_N = 0.076          # L(N) = (N_c / N)^alpha_N, non-embedding parameters
KAPLAN_ALPHA_C = 0.050          # L(C_min) along the compute-optimal frontier
CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


@dataclasses.dataclass(frozen=True)
class PowerLawFit:
    """L(N) = E + A / N^alpha fitted to points (N_i, L_i), with confidence intervals.

    ``ci`` maps "E", "A", "alpha" to (low, high) at ``confidence`` (nan when there are no
    spare degrees of freedom, i.e. 3 points); ``stderr`` to their standard errors (A's is
    that of log A). ``rmse`` is the root-mean-square residual.
    """

    E: float
    A: float
    alpha: float
    ci: dict
    stderr: dict
    rmse: float
    n_points: int
    confidence: float

    def predict(self, n):
        return self.E + self.A * numpy.asarray(n, dtype=float) ** -self.alpha

    def as_dict(self) -> dict:
        return {"E": self.E, "A": self.A, "alpha": self.alpha,
                "ci": {k: list(v) for k, v in self.ci.items()}, "stderr": self.stderr,
                "rmse": self.rmse, "n_points": self.n_points, "confidence": self.confidence}


def _check_points(n, loss, name):
    n, loss = numpy.asarray(n, dtype=float), numpy.asarray(loss, dtype=float)
    if n.ndim != 1 or n.shape != loss.shape:
        raise ValueError(f"{name}: N and L must be 1-D and of the same length, got shapes "
                         f"{n.shape} and {loss.shape}")
    if len(n) < 3:
        raise ValueError(f"{name}: needs at least 3 points (3 unknowns), got {len(n)}; "
                         "train more model sizes")
    if not (numpy.all(numpy.isfinite(n)) and numpy.all(n > 0) and numpy.all(numpy.isfinite(loss))):
        raise ValueError(f"{name}: N must be positive and finite and L finite, got N={n.tolist()}, "
                         f"L={loss.tolist()}")
    if len(numpy.unique(n)) < 3:
        raise ValueError(f"{name}: needs at least 3 distinct sizes N, got {sorted(set(n.tolist()))}")
    return n, loss


def _profile(x, loss, alpha):
    """For a fixed alpha the model is linear in (E, A): solve it; return (E, A, squared error)."""
    design = numpy.stack([numpy.ones_like(x), x ** -alpha], axis=1)
    (e, a), *_ = numpy.linalg.lstsq(design, loss, rcond=None)
    r = loss - design @ numpy.array([e, a])
    return e, a, float(r @ r)


def fit_power_law(n, loss, confidence: float = 0.95, alpha_bounds=(1e-3, 3.0)) -> PowerLawFit:
    """Least-squares fit of L(N) = E + A / N^alpha (Hoffmann et al. 2022's L(N) term).

    N is rescaled by its geometric mean N_0 (so A' = A / N_0^alpha is of the order of the
    losses and the problem is well conditioned). For each alpha, E and A' follow by linear
    least squares; alpha minimises the remaining squared error (a grid, then a bounded
    scalar search around its best point). The intervals come from the Jacobian at the
    optimum, cov = s^2 (J^T J)^-1 with s^2 = SSE / (n - 3), and Student's t with n - 3
    degrees of freedom; A's interval is that of log A, so it stays positive.
    """
    from scipy import optimize, stats

    n, loss = _check_points(n, loss, "fit_power_law")
    n0 = float(numpy.exp(numpy.mean(numpy.log(n))))
    x = n / n0
    lo, hi = alpha_bounds
    grid = numpy.geomspace(lo, hi, 400)
    errors = [_profile(x, loss, a)[2] for a in grid]
    i = int(numpy.argmin(errors))
    bracket = (grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)])
    best = optimize.minimize_scalar(lambda a: _profile(x, loss, a)[2], bounds=bracket,
                                    method="bounded", options={"xatol": 1e-10})
    alpha = float(best.x) if best.fun <= errors[i] else float(grid[i])
    e, a_scaled, sse = _profile(x, loss, alpha)

    # Jacobian of the model E + A' x^-alpha in (E, log A', alpha), for the covariance.
    p = len(n)
    dof = p - 3
    term = a_scaled * x ** -alpha
    jac = numpy.stack([numpy.ones_like(x), term, -term * numpy.log(x)], axis=1)
    a = a_scaled * n0 ** alpha
    names = ("E", "A", "alpha")
    if dof > 0 and a_scaled > 0:
        s2 = sse / dof
        cov = s2 * numpy.linalg.pinv(jac.T @ jac)
        # log A = log A' + alpha log N_0: carry the covariance over.
        to_log_a = numpy.array([[1, 0, 0], [0, 1, math.log(n0)], [0, 0, 1]])
        cov = to_log_a @ cov @ to_log_a.T
        se = numpy.sqrt(numpy.maximum(numpy.diag(cov), 0.0))
        t = float(stats.t.ppf(0.5 + confidence / 2, dof))
        ci = {"E": (e - t * se[0], e + t * se[0]),
              "A": (a * math.exp(-t * se[1]), a * math.exp(t * se[1])),
              "alpha": (alpha - t * se[2], alpha + t * se[2])}
        stderr = dict(zip(names, (float(v) for v in se)))
    else:
        ci = {k: (math.nan, math.nan) for k in names}
        stderr = {k: math.nan for k in names}
    return PowerLawFit(E=float(e), A=float(a), alpha=alpha,
                       ci={k: (float(v[0]), float(v[1])) for k, v in ci.items()}, stderr=stderr,
                       rmse=math.sqrt(sse / p), n_points=p, confidence=confidence)


def fit_pure_power_law(n, loss, confidence: float = 0.95) -> dict:
    """Kaplan et al.'s form L(N) = (N_c / N)^alpha: a straight line in log-log coordinates,
    log L = alpha log N_c - alpha log N, fitted by least squares. Returns alpha, N_c and
    alpha's confidence interval (Student's t, n - 2 degrees of freedom)."""
    from scipy import stats

    n, loss = _check_points(n, loss, "fit_pure_power_law")
    if numpy.any(loss <= 0):
        raise ValueError("fit_pure_power_law: losses must be positive to take their logarithm")
    reg = stats.linregress(numpy.log(n), numpy.log(loss))
    alpha = -float(reg.slope)
    t = float(stats.t.ppf(0.5 + confidence / 2, len(n) - 2))
    return {"alpha": alpha, "N_c": float(math.exp(reg.intercept / alpha)) if alpha else math.inf,
            "ci": [alpha - t * float(reg.stderr), alpha + t * float(reg.stderr)],
            "stderr": float(reg.stderr),
            "confidence": confidence}
