"""Running a kernel on a chosen number of Numba threads, for the thread-independence tests."""
import contextlib

import numba
import pytest


@contextlib.contextmanager
def numba_threads(n: int):
    """Run a block with ``numba.get_num_threads() == n`` (the kernels' thread count)."""
    if n > numba.config.NUMBA_NUM_THREADS:
        pytest.skip(f"needs {n} Numba threads; NUMBA_NUM_THREADS is "
                    f"{numba.config.NUMBA_NUM_THREADS}")
    old = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(old)
