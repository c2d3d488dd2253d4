"""The GPU check command and the resource table, on a machine without a GPU.

``gpu_check --simulate`` runs in a subprocess (the simulator must be on before numba is
imported): it must compare every CUDA kernel of the dispatch table with its CPU kernel,
say why it skips the rest, and fail when a kernel leaves an output element unwritten.
"""
import importlib
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from minitransformer.kernels import dispatch

from benchmarks import cuda_resources, gpu_check, kernel_cases

ROOT = pathlib.Path(__file__).resolve().parents[2]
CUDA_NAMES = [name for name, (_, cuda_mod) in dispatch._TABLE.items() if cuda_mod is not None]


def _simulate(args, code=None):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "benchmarks.gpu_check", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_simulate_compares_every_cuda_kernel_of_the_table_and_says_why_it_skips_the_rest(tmp_path):
    done = _simulate(["--simulate", "--out", str(tmp_path)])
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    for name in CUDA_NAMES:
        assert f"ok   {name}" in out, f"{name} was not compared:\n{out}"
    assert "FAIL" not in out
    for part in ("resources", "tests", "sanitizer", "benchmark"):
        line = next(s for s in out.splitlines() if s.startswith(f"== {part}: skipped: "))
        assert len(line) > len(f"== {part}: skipped: ") + 10, line     # with its reason


PLANTED = """
import sys
import numpy as np
from minitransformer.kernels import _cuda, cuda_softmax

real = cuda_softmax.softmax_forward

def leaves_the_last_row_unwritten(x, mask=None, **kw):
    y = _cuda.empty(np, x.shape, x.dtype)          # as the wrappers allocate: NaN under nan_fill
    y[:-1] = real(x[:-1], mask, **kw)
    return y

cuda_softmax.softmax_forward = leaves_the_last_row_unwritten
from benchmarks import gpu_check
sys.exit(gpu_check.main(["--simulate", "--parts", "compare", "--only", "softmax_forward", "--out", sys.argv[1]]))
"""


def test_simulate_fails_on_a_kernel_that_leaves_an_element_unwritten(tmp_path):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    done = subprocess.run([sys.executable, "-c", PLANTED, str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "FAIL softmax_forward" in out and "never written" in out, out
    assert "compare: FAILED" in out


@pytest.mark.parametrize("name", sorted(dispatch._TABLE))
def test_every_table_kernel_has_cases_its_cpu_kernel_runs(name):
    cpu_mod = dispatch._TABLE[name][0]
    fn = getattr(importlib.import_module(f"minitransformer.kernels.{cpu_mod}"), name)
    for case in kernel_cases.cases(name, "simulate"):
        args = [a.copy() if isinstance(a, np.ndarray) else a for a in case.args]
        results = kernel_cases.flatten(fn(*args)) + [args[i] for i in case.inplace]
        assert any(r is not None for r in results), f"{name}: the case produced nothing to compare"


def test_an_unknown_kernel_name_asks_for_a_case():
    with pytest.raises(KeyError, match="add one to benchmarks/kernel_cases.py"):
        kernel_cases.cases("no_such_kernel")


def test_compare_arrays_names_unwritten_elements_and_differences():
    want = np.array([1.0, -np.inf, 2.0])
    assert gpu_check._compare_arrays(want.copy(), want, 1e-5) is None
    assert "never written" in gpu_check._compare_arrays(np.array([1.0, -np.inf, np.nan]), want, 1e-5)
    assert "infinities" in gpu_check._compare_arrays(np.array([1.0, 0.0, 2.0]), want, 1e-5)
    assert "relative error" in gpu_check._compare_arrays(np.array([1.0, -np.inf, 2.1]), want, 1e-5)
    assert "shape" in gpu_check._compare_arrays(np.zeros(2), want, 1e-5)


def test_bad_parts_are_refused():
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--parts", "nonsense"])


def test_resources_records_every_attention_kernel_at_both_head_sizes_without_a_gpu():
    found = cuda_resources.launches()
    flash = {(launch.name, launch.detail) for launch in found if launch.module == "cuda_flash_attention"}
    assert flash == {(k, f"D={d}") for k in ("_forward_kernel", "_dkdv_kernel", "_dq_kernel") for d in (64, 128)}
    modules = {launch.module for launch in found}
    assert {dispatch._TABLE[n][1] for n in CUDA_NAMES} <= modules | {"cuda_flash_attention"}


def test_ptxas_output_is_parsed():
    text = ("ptxas info    : Compiling entry function '_Z6kernel' for 'sm_90'\n"
            "ptxas info    : Function properties for _Z6kernel\n"
            "    16 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads\n"
            "ptxas info    : Used 255 registers, used 1 barriers, 43776 bytes smem, 400 bytes cmem[0]\n")
    assert cuda_resources.parse_ptxas(text) == dict(registers=255, spill_stores=8, spill_loads=12, stack=16,
                                                    shared=43776)
    with pytest.raises(ValueError, match="no entry function"):
        cuda_resources.parse_ptxas("ptxas fatal")


def test_resources_refuse_to_run_under_the_simulator():
    done = _simulate([], code="import sys; from benchmarks import cuda_resources; sys.exit(cuda_resources.main([]))")
    assert done.returncode == 2 and "simulator" in done.stdout
