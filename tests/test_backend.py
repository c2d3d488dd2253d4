"""backend: the host allocator keeps freed memory for the next step (``keep_freed_memory``), and
the idle threads of the product libraries give their cores back soon after a product."""
import json
import os
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
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if user is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = user
    done = subprocess.run([sys.executable, "-c", BLAS_CHILD, order], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected


# GNU OpenMP (MKL's and PyTorch's threads) reads how long its idle threads spin when it
# loads: the package asks for a short spin only when it is imported first, and never over
# the user's own setting of either variable.
OPENMP_CHILD = """
import os, sys
if sys.argv[1] == "openmp-first":
    import torch
import minitransformer
print(os.environ.get("GOMP_SPINCOUNT"), minitransformer.backend.OPENMP_SPIN_SHORT)
"""


@pytest.mark.parametrize("order, user, expected", [
    ("package-first", {}, "10000 True"),
    ("openmp-first", {}, "None False"),                        # too late: OpenMP already read it
    ("package-first", {"GOMP_SPINCOUNT": "500"}, "500 False"),  # the user's choice stands
    ("package-first", {"OMP_WAIT_POLICY": "PASSIVE"}, "None False"),
])
def test_idle_openmp_threads_spin_briefly_when_the_package_loads_first(order, user, expected):
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env.update(user)
    done = subprocess.run([sys.executable, "-c", OPENMP_CHILD, order], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == expected


# What the short spin is for: after a product on two threads, the idle OpenMP thread gives
# its core back. The child runs a product, then sleeps 50 ms, and reports the CPU time the
# process burnt meanwhile (the idle thread's spinning): 6-10 ms with OpenMP's default,
# 0.1-2 ms with the package's (2-core Intel Xeon).
SPIN_CHILD = """
import json, statistics, sys, time
if sys.argv[1] == "package":
    import minitransformer
import torch
torch.set_num_threads(2)
a = torch.ones(512, 512)
burnt = []
for _ in range(7):
    torch.mm(a, a)
    start = time.process_time()
    time.sleep(0.05)
    burnt.append(time.process_time() - start)
print(json.dumps(statistics.median(burnt)))
"""


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs two cores: an OpenMP thread beside the calling one")
def test_idle_openmp_thread_gives_its_core_back_soon_after_a_product():
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}

    def burnt(mode):
        done = subprocess.run([sys.executable, "-c", SPIN_CHILD, mode], capture_output=True, text=True,
                              timeout=120, env=env)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    default, short = burnt("bare"), burnt("package")
    assert short < default / 2, (short, default)
