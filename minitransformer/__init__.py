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

# Idle threads of the libraries that multiply spin, waiting for the next product, before
# they sleep. With as many threads as cores, that spinning takes the cores from the Numba
# kernel that runs next (GELU, layer norm, attention), whose second thread then waits for
# a core or shares one. Both libraries read how long to spin when they load, so this comes
# first, and never overrides what the environment already says:
# - OpenBLAS (NumPy's) spins about 2^28 cycles, a tenth of a second, after each product: at
#   GPT-2 small on two cores, 8% of a training step. Its idle threads sleep at once (2^4
#   cycles) instead. It loads with NumPy; a program that imported NumPy before this package
#   keeps OpenBLAS's default (``backend.BLAS_THREADS_SLEEP`` says which).
# - GNU OpenMP (the threads of MKL's products, kernels/blas.py, and of PyTorch) spins
#   300,000 rounds, 4-6 ms on a 2-core Intel Xeon, after each parallel region: a GELU
#   after a product took 1.8x its time alone, a layer norm 1.9x. Its idle threads spin
#   10,000 rounds (0.1-0.2 ms there: enough for the next of two products in a row, and a
#   product costs 70 us more once they sleep) and then sleep. It loads with MKL or PyTorch;
#   when either came first, its default stands (``backend.OPENMP_SPIN_SHORT`` says which).
_BLAS_SLEEP = "numpy" not in sys.modules and "OPENBLAS_THREAD_TIMEOUT" not in os.environ
if _BLAS_SLEEP:
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = "4"
OPENMP_SPINCOUNT = "10000"


def _openmp_loaded() -> bool:
    """Whether GNU OpenMP is already in this process (read from Linux's map of it)."""
    try:
        with open("/proc/self/maps") as maps:
            return any("libgomp" in line for line in maps)
    except OSError:             # not Linux: no map to read, and no GNU OpenMP in MKL's wheels
        return False


_OPENMP_SHORT = (not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & os.environ.keys()
                 and not _openmp_loaded())
if _OPENMP_SHORT:
    os.environ["GOMP_SPINCOUNT"] = OPENMP_SPINCOUNT

from minitransformer import autograd, backend, functional, kernels  # noqa: E402
from minitransformer.autograd import (  # noqa: E402
    Function, GradcheckError, Tensor, concatenate, enable_grad, gradcheck, is_grad_enabled,
    matmul, maximum, no_grad, split, stack, tensor, where,
)
from minitransformer.backend import manual_seed  # noqa: E402

backend.BLAS_THREADS_SLEEP = _BLAS_SLEEP or os.environ.get("OPENBLAS_THREAD_TIMEOUT") == "4"
backend.OPENMP_SPIN_SHORT = (os.environ.get("GOMP_SPINCOUNT") == OPENMP_SPINCOUNT
                             and "OMP_WAIT_POLICY" not in os.environ)

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
