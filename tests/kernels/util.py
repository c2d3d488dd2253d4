"""Shared helpers for the kernel tests: the norm-wise comparison and the tolerances, the
product libraries this machine has, and the report of the scripts that run the CUDA kernels
under the simulator."""
from __future__ import annotations

import os
from importlib import metadata

import numpy as np


def mkl_installed() -> bool:
    try:
        metadata.distribution("mkl")
        return True
    except metadata.PackageNotFoundError:
        return False


# The CPU product libraries this machine has (kernels/blas.py), for tests that run on each.
LIBRARIES = ["numpy", "mkl"] if mkl_installed() else ["numpy"]

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


def simulator_off() -> bool:
    """A simulator check script's guard: True, after saying what to set, unless the CUDA
    simulator is on (it must be before numba is first imported, hence a process of its own)."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        print("set NUMBA_ENABLE_CUDASIM=1 to run this under the CUDA simulator")
        return True
    return False


class Checks:
    """The report of a simulator check script: one ``ok``/``FAIL`` line per check, then
    ``N failed`` and the exit status (non-zero on any failure)."""

    def __init__(self):
        self.failures = []

    def report(self, name: str, ok: bool, detail: str) -> bool:
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
        if not ok:
            self.failures.append(name)
        return ok

    def close(self, name: str, got, want, dtype) -> bool:
        """``rel_err(got, want)`` within ``TOL[dtype]``; a NaN (an element the kernel never
        wrote, under the NaN fill) or a wrong shape is a failed check, not a traceback."""
        try:
            err = rel_err(got, want)
        except AssertionError as e:
            return self.report(name, False, str(e))
        return self.report(name, err <= TOL[np.dtype(dtype)], f"{err:.2e}")

    def exit_status(self) -> int:
        print(f"{len(self.failures)} failed")
        return 1 if self.failures else 0
