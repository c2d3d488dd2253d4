"""Shared helpers for the kernel tests: the norm-wise comparison and the tolerances."""
from __future__ import annotations

import numpy as np

# ||kernel - reference|| / ||reference|| must stay below these.
TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}


def rel_err(a, b) -> float:
    """||a - b|| / ||b|| in float64, with ||b|| floored at 0.1 sqrt(size).

    The inputs of these tests are O(1), and so are their results: the floor (an RMS of 0.1
    per entry) leaves the comparison relative for any ordinary result and only matters for
    a reference that is exactly zero, such as dQ of a query that sees a single key. There
    the kernel's Delta = rowsum(dO * O) cancels dP only to rounding (the reference's
    Delta = rowsum(P * dP) cancels exactly), and the comparison becomes an absolute one:
    an RMS error of at most 0.1 * tolerance.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}"
    assert np.isfinite(a).all(), "kernel result has NaN or inf"
    floor = 0.1 * np.sqrt(max(b.size, 1))
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), floor))


def assert_close(a, b, dtype, what=""):
    err = rel_err(a, b)
    tol = TOL[np.dtype(dtype)]
    assert err <= tol, f"{what}: ||a - b|| / ||b|| = {err:.3g} > {tol:g}"
