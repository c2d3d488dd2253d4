"""Threads per process: how many cores each BLAS, OpenMP and Numba pool may use.

K ranks on one machine, each running a BLAS with one thread per core, would oversubscribe
the cores K times over; each rank should get cores / (ranks on the node). NumPy loads its
BLAS on import, so setting OMP_NUM_THREADS afterwards changes nothing for it: the running
thread pools are told directly, through ``threadpoolctl``, which finds the BLAS and OpenMP
libraries loaded in the process (OpenBLAS, MKL, BLIS, libgomp, ...) on every platform.
Numba's pool has its own setter (``numba.set_num_threads``), and so has PyTorch's.
"""
from __future__ import annotations

import os
import sys

# Read by the libraries that are loaded later (and by Numba when it first starts its pool).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the platform reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def blas_threads() -> dict:
    """{library file: threads} of the BLAS libraries loaded in this process."""
    from threadpoolctl import threadpool_info

    return {os.path.basename(pool["filepath"]): int(pool["num_threads"])
            for pool in threadpool_info() if pool["user_api"] == "blas"}


def set_blas_threads(n: int, openmp: bool = False) -> dict:
    """Give every BLAS loaded in this process (and, with ``openmp``, every OpenMP runtime)
    ``n`` threads; returns ``blas_threads()`` afterwards."""
    from threadpoolctl import threadpool_limits

    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"set_blas_threads: the number of threads must be a positive integer, got {n!r}")
    threadpool_limits(limits=n, user_api=None if openmp else "blas")   # stays in force: not used as a context
    return blas_threads()


def limit_threads_per_rank(ranks_on_node: int) -> dict:
    """Give BLAS, OpenMP and Numba cores // ranks_on_node threads each in this process.

    Left alone when the user set OMP_NUM_THREADS or OPENBLAS_NUM_THREADS. Besides the running
    pools, the environment is set for anything loaded later. Returns {library: threads} for
    what was set.
    """
    if ranks_on_node <= 1 or any(v in os.environ for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")):
        return {}
    n = max(1, available_cores() // ranks_on_node)
    for var in THREAD_VARIABLES:
        os.environ[var] = str(n)
    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(limits=n)
    done = {os.path.basename(pool["filepath"]): n for pool in threadpool_info()}
    if "numba" in sys.modules:
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        done["numba"] = n
    return done
