"""minitransformer: transformer pre-training from scratch on NumPy and CuPy.

Reading order (each layer imports only those before it):
``backend`` -> ``autograd`` -> ``functional`` -> ``nn`` -> ``models``;
``data`` and ``objectives`` (integer arrays only) -> ``optim`` -> ``train`` / ``generate`` /
``hf``; ``cli`` on top. Fast kernels live in ``minitransformer.kernels``.
"""
from __future__ import annotations

import importlib
import os
import sys

# OpenBLAS's idle threads spin for about 2^28 cycles (a tenth of a second) after each
# matrix product before they sleep. With as many threads as cores, that spinning takes the
# cores from the Numba kernel that runs next (GELU, layer norm, attention): at GPT-2 small
# on two cores, 8% of a training step. OpenBLAS reads the spin time when it loads, which
# NumPy's import does, so this comes first: idle BLAS threads sleep at once (2^4 cycles),
# unless the environment already says otherwise. A program that imported NumPy before this
# package keeps OpenBLAS's default (``backend.BLAS_THREADS_SLEEP`` says which).
_BLAS_SLEEP = "numpy" not in sys.modules and "OPENBLAS_THREAD_TIMEOUT" not in os.environ
if _BLAS_SLEEP:
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = "4"

from minitransformer import autograd, backend, functional, kernels  # noqa: E402
from minitransformer.autograd import (  # noqa: E402
    Function, GradcheckError, Tensor, concatenate, enable_grad, gradcheck, is_grad_enabled,
    matmul, maximum, no_grad, split, stack, tensor, where,
)
from minitransformer.backend import manual_seed  # noqa: E402

backend.BLAS_THREADS_SLEEP = _BLAS_SLEEP or os.environ.get("OPENBLAS_THREAD_TIMEOUT") == "4"

__version__ = "0.1.0"

# Subpackages imported on first use, so ``import minitransformer`` stays quick.
_LAZY = ("nn", "models", "data", "objectives", "optim", "train", "generate", "hf", "testing",
         "scaling", "families", "finetune", "dist")


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'minitransformer' has no attribute {name!r}")


__all__ = [
    "Tensor", "tensor", "Function", "no_grad", "enable_grad", "is_grad_enabled", "gradcheck",
    "GradcheckError", "manual_seed", "concatenate", "stack", "split", "where", "maximum",
    "matmul", "autograd", "functional", "kernels", "backend", *_LAZY,
]
