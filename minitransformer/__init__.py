"""minitransformer: transformer pre-training from scratch on NumPy and CuPy.

Reading order (each layer imports only those before it):
``backend`` -> ``autograd`` -> ``functional`` -> ``nn`` -> ``models``;
``data`` and ``objectives`` (integer arrays only) -> ``optim`` -> ``train`` / ``generate`` /
``hf``; ``cli`` on top. Fast kernels live in ``minitransformer.kernels``.
"""
from __future__ import annotations

import importlib

from minitransformer import autograd, backend, functional, kernels
from minitransformer.autograd import (
    Function, GradcheckError, Tensor, concatenate, enable_grad, gradcheck, is_grad_enabled,
    matmul, maximum, no_grad, split, stack, tensor, where,
)
from minitransformer.backend import manual_seed

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
