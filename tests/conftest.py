"""Test-suite settings shared by every test.

The ``gpu`` marker and the fixtures (``array_module``, ``kernel_mode``, ``strict_device``)
come from the library's own pytest plugin (minitransformer.testing.plugin), which pytest
loads wherever the package is installed, so this suite tests the kit its users get.

Hypothesis: the plugin offers its profiles and this suite chooses one: "minitransformer-ci"
(derandomized, so CI is repeatable) under CI=true; "minitransformer-dev" runs many more
examples (HYPOTHESIS_PROFILE=minitransformer-dev); otherwise "default" is like the CI
profile but random.
"""
# ruff: noqa: E402
import os

# No test reaches a model hub: huggingface_hub (read through transformers and mt.hf.hub)
# reads this at import, which comes after this file. Hub tests use a cache built on disk.
os.environ["HF_HUB_OFFLINE"] = "1"

from hypothesis import HealthCheck, settings

settings.register_profile("default", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "minitransformer-ci" if os.environ.get("CI") else "default"))
