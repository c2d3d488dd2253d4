"""backend: the host allocator keeps freed memory for the next step (``keep_freed_memory``)."""
import json
import subprocess
import sys

import pytest

# A child process allocates and fills a 64 MiB array twice, freeing it in between, and
# counts the page faults of the second fill: the cost every training step paid when each
# large array was a fresh mapping.
CHILD = """
import json, resource, sys
import numpy as np
from minitransformer import backend
kept = backend.keep_freed_memory() if sys.argv[1] == "keep" else None
n = 64 * 2**20 // 4
np.ones(n, np.float32)                       # allocated, filled, freed
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = np.ones(n, np.float32)                   # the same size again
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"kept": kept, "faults": faults, "again": backend.keep_freed_memory() if kept else None}))
"""


def run_child(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's; elsewhere it changes nothing")
def test_kept_memory_is_reused_without_page_faults():
    default, kept = run_child("default"), run_child("keep")
    pages = 64 * 2**20 // 4096
    # Without it, the second 64 MiB is a fresh mapping: a fault per page (fewer with huge pages).
    assert default["faults"] > pages // 600, default
    assert kept["kept"] is True and kept["again"] is True
    assert kept["faults"] < pages // 1000, kept


# OpenBLAS reads how long its idle threads spin when NumPy loads it: the package asks for
# "sleep at once" only when it is imported first, and never over the user's own setting.
BLAS_CHILD = """
import os, sys
if sys.argv[1] == "numpy-first":
    import numpy
import minitransformer
print(os.environ.get("OPENBLAS_THREAD_TIMEOUT"), minitransformer.backend.BLAS_THREADS_SLEEP)
"""


@pytest.mark.parametrize("order, user, expected", [
    ("package-first", None, "4 True"),
    ("numpy-first", None, "None False"),          # too late: OpenBLAS already read it
    ("package-first", "20", "20 False"),          # the user's choice stands
])
def test_idle_blas_threads_sleep_when_the_package_loads_first(order, user, expected):
    import os

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if user is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = user
    done = subprocess.run([sys.executable, "-c", BLAS_CHILD, order], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected
