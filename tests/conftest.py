"""Test-suite settings shared by every test.

Hypothesis profiles: "ci" (derandomized, so CI is repeatable) is chosen under CI=true;
"dev" runs ten times more examples for longer local runs (HYPOTHESIS_PROFILE=dev);
"default" is like "ci" but random.
"""
import os

import pytest
from hypothesis import HealthCheck, settings

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", derandomize=True, print_blob=True, **_common)
settings.register_profile("default", **_common)
settings.register_profile("dev", max_examples=1000, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default"))


def pytest_collection_modifyitems(config, items):
    from minitransformer import backend

    if backend.has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU with CuPy; none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
