"""Which implementation a fused op runs, and where its kernel lives (see the package docstring)."""
from __future__ import annotations

import contextlib
import functools
import importlib

from minitransformer import backend

MODES = ("auto", "reference", "numba")
_mode = "auto"

# name -> (module for the CPU, module for CUDA); each module defines a function of that name.
# None: that device has no kernel for the op, and "auto" runs the reference there. Every
# module named here exists (tests/kernels/test_dispatch.py checks it), so an ImportError
# from one is a broken kernel and surfaces instead of silently falling back.
_TABLE = {
    "softmax_forward": ("softmax", "cuda_softmax"),
    "softmax_backward": ("softmax", "cuda_softmax"),
    "cross_entropy_forward": ("cross_entropy", "cuda_cross_entropy"),
    "cross_entropy_backward": ("cross_entropy", "cuda_cross_entropy"),
    "attention_forward": ("attention", "cuda_flash_attention"),
    "attention_backward": ("attention", "cuda_flash_attention"),
    "gelu_forward": ("gelu", "cuda_gelu"),
    "gelu_backward": ("gelu", "cuda_gelu"),
    "layer_norm_forward": ("layer_norm", "cuda_layer_norm"),
    "layer_norm_backward": ("layer_norm", "cuda_layer_norm"),
    "rms_norm_forward": ("layer_norm", "cuda_layer_norm"),
    "rms_norm_backward": ("layer_norm", "cuda_layer_norm"),
    "embedding_backward": ("embedding", "cuda_embedding"),
    "adamw_update": ("adamw", "cuda_adamw"),
}


def use(mode: str) -> None:
    """Choose which implementation the fused ops run: "auto", "reference" or "numba"."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"kernels.use: mode {mode!r} is not one of {MODES}")
    _mode = mode


def mode() -> str:
    return _mode


@contextlib.contextmanager
def using(new_mode: str):
    """Run a block under another kernel mode, restoring the previous one after."""
    old = _mode
    use(new_mode)
    try:
        yield
    finally:
        use(old)


@functools.lru_cache(maxsize=None)
def _module_for(name: str, device: str):
    """The module holding ``name``'s kernel for ``device``, or None where the table has none.

    A module's ImportError is not caught: the table names only modules that exist, so an
    import that fails is a bug to see, not a reason to run the reference quietly.
    """
    cpu_mod, cuda_mod = _TABLE[name]
    mod_name = cpu_mod if device == "cpu" else cuda_mod
    if mod_name is None:
        return None
    return importlib.import_module(f"{__package__}.{mod_name}")


def get(name: str, array):
    """The kernel function ``name`` for ``array``'s device, or None to run the reference.

    None in "reference" mode, and in "auto" mode when the device has no kernel (for example
    a test-only array type). In "numba" mode a missing kernel is an error.
    """
    if _mode == "reference":
        return None
    if name not in _TABLE:
        raise KeyError(f"kernels.get: no kernel named {name!r}; known: {sorted(_TABLE)}")
    device = backend.device_of(array)
    fn = None
    if device in ("cpu", "cuda") and backend.is_native(array):
        mod = _module_for(name, device)
        fn = getattr(mod, name) if mod is not None else None
    if fn is None and _mode == "numba":
        raise RuntimeError(
            f"kernels: mode is 'numba' but there is no {name} kernel for device {device!r}; "
            "use mt.kernels.use('auto') to fall back to the reference"
        )
    return fn
