"""Without NCCL a multi-GPU run still trains, its gradients staged through host memory, and
it says so, once: that path is much slower, and nothing else would show why.

NCCL is made absent or present by what ``from cupy.cuda import nccl`` finds (stand-in
modules in ``sys.modules``); the NCCL path itself needs two GPUs and is not run here.
"""
import sys
import types
import warnings

import pytest

from minitransformer.dist import communicator, nccl


def _ranks(size: int, gpu_backend: str = "auto") -> communicator.Communicator:
    """The part of a communicator that chooses the GPU path (no MPI needed to choose)."""
    comm = communicator.Communicator.__new__(communicator.Communicator)
    comm.size, comm.gpu_backend, comm._nccl = size, gpu_backend, None
    return comm


@pytest.fixture
def cupy_without_nccl(monkeypatch):
    """CuPy present, its NCCL module failing to import (the library is missing)."""
    cupy, cuda = types.ModuleType("cupy"), types.ModuleType("cupy.cuda")
    cupy.cuda, cupy.__path__, cuda.__path__ = cuda, [], []   # packages with nothing in them
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "cupy.cuda", cuda)
    monkeypatch.delitem(sys.modules, "cupy.cuda.nccl", raising=False)   # import -> ImportError
    monkeypatch.setattr(nccl, "_warned", False)


@pytest.mark.usefixtures("cupy_without_nccl")
def test_a_multi_gpu_run_without_nccl_warns_once_and_goes_through_the_host():
    assert not nccl.available()
    comm = _ranks(2)
    with pytest.warns(nccl.HostFallbackWarning, match=r"through host memory.*pip install -e \"\.\[nccl\]\""):
        assert comm._use_nccl(object()) is False
    assert comm.gpu_backend == "mpi" and not comm.uses_nccl
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _ranks(2)._use_nccl(object()) is False        # a second communicator: no second warning


@pytest.mark.usefixtures("cupy_without_nccl")
@pytest.mark.parametrize("size,gpu_backend", [(1, "auto"), (2, "mpi")])
def test_no_warning_where_nothing_is_lost(size, gpu_backend):
    """One rank sends nothing; gpu_backend='mpi' chose the host path on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _ranks(size, gpu_backend)._use_nccl(object()) is False


@pytest.mark.usefixtures("cupy_without_nccl")
def test_asking_for_nccl_without_it_is_an_error_that_says_how_to_install_it():
    with pytest.raises(RuntimeError, match=r"finds no NCCL; install it with pip install -e \"\.\[nccl\]\""):
        _ranks(2, "nccl")._use_nccl(object())


def test_nccl_is_found_where_cupy_has_it(monkeypatch):
    cupy, cuda, module = types.ModuleType("cupy"), types.ModuleType("cupy.cuda"), types.ModuleType("cupy.cuda.nccl")
    module.available = True
    cupy.cuda, cuda.nccl = cuda, module
    for name, m in (("cupy", cupy), ("cupy.cuda", cuda), ("cupy.cuda.nccl", module)):
        monkeypatch.setitem(sys.modules, name, m)
    assert nccl.available()
    module.available = False                 # a CuPy built without it
    assert not nccl.available()
