"""The pytest plugin, loaded automatically where minitransformer is installed (a ``pytest11``
entry point: a conftest must not list it again).

It gives every suite:

- the ``gpu`` marker: a test marked ``@pytest.mark.gpu`` runs where CuPy sees a CUDA GPU and is
  skipped, with the reason shown, everywhere else;
- ``array_module``: the array module a test should build its inputs with (NumPy; CuPy when
  ``--array-module cupy`` is given, which needs a GPU);
- ``kernel_mode``: a test using it runs twice, under ``mt.kernels.using("reference")`` and
  ``"numba"``, so the plain code and the fast kernel are both checked; yields the mode;
- ``strict_device``: the strict device's module (``minitransformer.testing.strict``), with
  the device registered: put arrays on it with ``to_strict`` or ``.to("strict")``, and any
  NumPy call on a device array fails as it would on a GPU.

Hypothesis profiles are offered, never imposed: ``minitransformer-ci`` (derandomized, no
deadline: kernels compile on first call) and ``minitransformer-dev`` (1,000 examples) are
registered, and a suite chooses one with ``--hypothesis-profile=minitransformer-ci``.
Nothing here imports numpy or the library until a test asks for it.
"""
from __future__ import annotations

import pytest

PROFILES = ("minitransformer-ci", "minitransformer-dev")


def _register_profiles() -> None:
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:
        return
    common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.register_profile("minitransformer-ci", derandomize=True, print_blob=True, **common)
    settings.register_profile("minitransformer-dev", max_examples=1000, **common)


_register_profiles()


def pytest_addoption(parser):
    group = parser.getgroup("minitransformer")
    group.addoption("--array-module", default="numpy", choices=("numpy", "cupy"),
                    help="the array module the array_module fixture gives (cupy needs a CUDA GPU)")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU and CuPy; skipped, with the reason, where there is none")


def pytest_collection_modifyitems(config, items):
    gpu_tests = [item for item in items if "gpu" in item.keywords]
    if not gpu_tests:
        return
    from minitransformer import backend

    if backend.has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU with CuPy; none on this machine")
    for item in gpu_tests:
        item.add_marker(skip)


@pytest.fixture
def array_module(request):
    """NumPy, or CuPy under ``--array-module cupy``."""
    name = request.config.getoption("--array-module")
    if name == "numpy":
        import numpy

        return numpy
    from minitransformer import backend

    if not backend.has_cuda():
        pytest.skip("--array-module cupy needs a CUDA GPU with CuPy; none on this machine")
    return backend.cupy_module()


@pytest.fixture(params=["reference", "numba"])
def kernel_mode(request):
    """Runs the test under each kernel mode in turn; yields the mode's name."""
    from minitransformer import kernels

    with kernels.using(request.param):
        yield request.param


@pytest.fixture
def strict_device():
    """The strict device's module, registered as the device ``"strict"``."""
    from minitransformer.testing import strict

    return strict
