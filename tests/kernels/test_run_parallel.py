"""run_parallel: every unit once, on the pool's threads, errors raised where the call was made,
no lost wake-up after a worker fell asleep, several callers at once, no array kept, and a
pool that still works in a process made by fork."""
import os
import subprocess
import sys
import threading
import time

import numba
import numpy as np
import pytest

from minitransformer.kernels import _cpu

from .threads import numba_threads


@numba.njit(nogil=True, cache=True)
def _count(first, stop, step, counts):
    for i in range(first, stop, step):
        counts[i] += 1


def _finishes(fn, seconds=30.0):
    """Run ``fn`` on a helper thread; True when it returned within ``seconds`` (no hang)."""
    done = []
    helper = threading.Thread(target=lambda: done.append(fn()), daemon=True)
    helper.start()
    helper.join(seconds)
    return bool(done)


def test_a_sleeping_worker_is_woken():
    # First in the file: with a lost wake-up, this fails here (the stuck caller holds the
    # pool, and later callers run their shares alone) instead of hanging the run.
    with numba_threads(2):
        counts = np.zeros(4, np.int64)
        assert _finishes(lambda: _cpu.run_parallel(_count, 4, counts)), "a worker was never woken"
        worker = _cpu._the_pool().workers[0]
        deadline = time.monotonic() + 10
        while not worker.asleep and time.monotonic() < deadline:
            time.sleep(_cpu.SPIN_SECONDS * 10)
        assert worker.asleep, "the worker never stopped spinning"
        assert _finishes(lambda: _cpu.run_parallel(_count, 4, counts)), "the sleeping worker was never woken"
    assert (counts == 2).all()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("contiguous", [False, True])
def test_every_unit_runs_once(threads, contiguous):
    with numba_threads(threads):
        for n_units in (0, 1, 2, 3, 7, 64, 1001):
            counts = np.zeros(max(n_units, 1), np.int64)
            _cpu.run_parallel(_count, n_units, counts, contiguous=contiguous)
            assert (counts[:n_units] == 1).all(), (n_units, counts)


def test_shares_run_on_the_workers_and_the_caller():
    seen = {}

    def kernel(first, stop, step):             # a Python kernel works too (holding the GIL)
        seen[first] = threading.current_thread().name

    with numba_threads(2):
        _cpu.run_parallel(kernel, 2)
    assert seen[0] == threading.current_thread().name
    assert seen[1].startswith("minitransformer-kernel-")


def test_a_workers_error_is_raised_by_the_caller_and_the_pool_goes_on():
    def kernel(first, stop, step):
        if first == 1:
            raise ZeroDivisionError("share 1")

    with numba_threads(2):
        with pytest.raises(ZeroDivisionError, match="share 1"):
            _cpu.run_parallel(kernel, 2)
        counts = np.zeros(10, np.int64)
        _cpu.run_parallel(_count, 10, counts)
    assert (counts == 1).all()


def test_the_caller_waits_for_the_workers_before_raising_its_own_error():
    written = []

    def kernel(first, stop, step):
        if first == 0:
            raise KeyError("share 0")
        time.sleep(0.05)                       # still using the arrays when share 0 fails
        written.append(first)

    with numba_threads(2):
        with pytest.raises(KeyError):
            _cpu.run_parallel(kernel, 2)
    assert written == [1]


def test_a_worker_made_after_many_calls_answers_the_pools_numbers():
    # Shares are numbered by the pool: a worker made late (more threads than before) first
    # sees a large number, and the caller waits for that number back.
    pool = _cpu._Pool()
    pool.posted = 1000
    counts = np.zeros(3, np.int64)
    shares = [(0, 3, 2), (1, 3, 2)]
    assert _finishes(lambda: pool.run(_count, shares, (counts,))), "the caller waited for a number never sent"
    assert _finishes(lambda: pool.run(_count, shares, (counts,)))
    assert (counts == 2).all()


def test_callers_on_several_threads_at_once():
    failures = []

    def caller():
        for n_units in range(2, 60):
            counts = np.zeros(n_units, np.int64)
            _cpu.run_parallel(_count, n_units, counts, contiguous=n_units % 2 == 0)
            if not (counts == 1).all():
                failures.append((n_units, counts))

    with numba_threads(2):
        callers = [threading.Thread(target=caller) for _ in range(4)]
        for t in callers:
            t.start()
        for t in callers:
            t.join(60)
    assert not any(t.is_alive() for t in callers) and not failures, failures


def test_no_reference_to_the_arrays_is_kept():
    # The autograd engine hands a kernel's output to a leaf as its gradient without a copy
    # only when nothing else references it (autograd/tensor.py, _owned).
    with numba_threads(2):
        counts = np.zeros(8, np.int64)
        before = sys.getrefcount(counts)
        _cpu.run_parallel(_count, 8, counts)
        time.sleep(0.01)                       # the worker is back to waiting
        assert sys.getrefcount(counts) == before


FORK_CHILD = """
import os, signal
import numpy as np
from numba import njit
from minitransformer.kernels import _cpu

@njit(nogil=True)
def count(first, stop, step, counts):
    for i in range(first, stop, step):
        counts[i] += 1

counts = np.zeros(8, np.int64)
_cpu.run_parallel(count, 8, counts)             # the parent's pool exists now
pid = os.fork()
if pid == 0:
    signal.alarm(20)                            # a child waiting for absent workers dies
    _cpu.run_parallel(count, 8, counts)
    os._exit(0 if (counts == 2).all() else 3)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX's")
def test_a_forked_child_makes_its_own_workers():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs two Numba threads")
    done = subprocess.run([sys.executable, "-c", FORK_CHILD], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "0"
