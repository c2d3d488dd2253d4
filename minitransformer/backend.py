"""Where arrays live: NumPy on the CPU, CuPy on a CUDA GPU.

Every op asks ``xp(*arrays)`` for the array module of its inputs and computes with that, so
one code path serves both devices. CuPy is optional: it is imported only when a CUDA array
or device is asked for, and its absence never breaks an import.

Besides NumPy and CuPy, an extra array type can be registered with its module
(``register_array_module``); the test suite uses this for a "strict" CPU backend whose
arrays, like CuPy's, refuse silent conversion to NumPy.
"""
from __future__ import annotations

import threading

import numpy

_cupy = None            # the cupy module once imported, False if it is not installed
# True when OpenBLAS's idle threads sleep at once instead of spinning (set by the package's
# __init__, which asks for it before NumPy loads OpenBLAS).
BLAS_THREADS_SLEEP = False
# True when GNU OpenMP's idle threads (MKL's, PyTorch's) spin 10,000 rounds, not 300,000,
# before they sleep (also set by the package's __init__, before anything loads OpenMP).
OPENMP_SPIN_SHORT = False
_EXTRA = {}             # array type -> (array module, device name)
_default_rng = numpy.random.default_rng(0)


def cupy_module():
    """The cupy module, or None if CuPy is not installed or has no usable GPU."""
    global _cupy
    if _cupy is None:
        try:
            import cupy  # noqa: F401

            cupy.cuda.runtime.getDeviceCount()
            _cupy = cupy
        except Exception:  # ImportError, or CUDA present but no driver/device
            _cupy = False
    return _cupy or None


def has_cuda() -> bool:
    return cupy_module() is not None


def register_array_module(array_type, module, device: str) -> None:
    """Teach ``xp`` and ``device_of`` about another array type (used by the test suite)."""
    _EXTRA[array_type] = (module, device)


def _is_cupy(a) -> bool:
    return type(a).__module__.startswith("cupy")


def xp(*arrays):
    """The array module (numpy, cupy, or a registered one) of the first array among ``arrays``."""
    for a in arrays:
        t = type(a)
        if t is numpy.ndarray:
            return numpy
        if t in _EXTRA:
            return _EXTRA[t][0]
        if _is_cupy(a):
            return cupy_module()
    return numpy


def device_of(a) -> str:
    """"cpu", "cuda", or a registered device name."""
    t = type(a)
    if t in _EXTRA:
        return _EXTRA[t][1]
    return "cuda" if _is_cupy(a) else "cpu"


def is_native(a) -> bool:
    """True for a plain NumPy or CuPy array (the kinds the Numba kernels accept)."""
    return type(a) is numpy.ndarray or _is_cupy(a)


def module_for_device(device: str):
    """The array module that holds arrays on ``device`` ("cpu" or "cuda")."""
    if device == "cpu":
        return numpy
    if device == "cuda" or device.startswith("cuda:"):
        cp = cupy_module()
        if cp is None:
            raise RuntimeError(
                "device 'cuda' needs CuPy and a CUDA GPU, and none was found; install the "
                "GPU extra with pip install -e \".[cuda]\" on a machine with an NVIDIA GPU, "
                "or use device='cpu'"
            )
        return cp
    for module, name in _EXTRA.values():
        if name == device:
            return module
    raise ValueError(f"unknown device {device!r}; expected 'cpu' or 'cuda'")


def to_device(a, device: str):
    """Copy array ``a`` to ``device`` (a no-op when it is already there)."""
    if device_of(a) == device:
        return a
    if device == "cpu":
        if _is_cupy(a):
            return a.get()
        return numpy.asarray(_EXTRA[type(a)][0].to_numpy(a))
    mod = module_for_device(device)
    host = to_device(a, "cpu")
    return mod.asarray(host)


def to_numpy(a):
    """A NumPy copy (or view) of array ``a`` from any device.

    A copy from a device also brings back the verdict of the checks waiting there
    (``check_later``), in the same transfer, and raises the first that failed.
    """
    pending = _pending_on(device_of(a)) if device_of(a) != "cpu" else []
    if not pending:
        return to_device(a, "cpu")
    flag = _any_failed(pending).reshape(1).astype(a.dtype)
    both = to_device(xp(a).concatenate([a.reshape(-1), flag]), "cpu")       # (n,) + (1,) -> (n + 1,)
    _settle(pending, failed=bool(both[-1]))
    return both[:-1].reshape(a.shape)


# ---------------------------------------------------------------------------------------
# Checks that wait for the next transfer.
#
# Reading a device value on the host (``bool(bad.any())``) waits for the device to finish
# everything queued before it: a check of the targets in every micro-batch would stall the
# GPU as often. A check of a device array is computed on the device instead and waits; the
# next ``to_numpy`` from that device brings its verdict back with the copy it makes anyway
# (in a training step: the logged loss), and raises if it failed. On the host a check costs
# nothing and raises at once.
# ---------------------------------------------------------------------------------------

_MAX_PENDING = 64          # more than this many waiting: read them back (one transfer)
_local = threading.local()  # each thread's own (data-parallel ranks may be threads)


def _pending_list() -> list:
    if not hasattr(_local, "pending"):
        _local.pending = []
    return _local.pending


def _pending_on(device: str) -> list:
    """Take the waiting checks of ``device`` off the list: [(bad, explain), ...]."""
    pending = _pending_list()
    mine = [(bad, explain) for bad, explain, dev in pending if dev == device]
    pending[:] = [entry for entry in pending if entry[2] != device]
    return mine


def _any_failed(checks):
    """One boolean scalar on the device: did any of ``checks`` fail?"""
    flag = checks[0][0]
    for bad, _ in checks[1:]:
        flag = flag | bad
    return flag


def _settle(checks, failed: bool) -> None:
    """Raise the first failed check of ``checks`` (whose combined verdict was ``failed``)."""
    if not failed:
        return
    for bad, explain in checks:
        if bool(to_device(bad, "cpu")):       # the error path: one read per check is fine
            raise ValueError(explain())


def check_later(bad, explain) -> None:
    """Raise ``ValueError(explain())`` if the boolean scalar ``bad`` is True.

    On the host, now. On a device, at the next ``to_numpy`` from it, which reads ``bad``
    back with its copy; the caller should make the array it works on harmless where the
    check failed (e.g. ids replaced by a valid one), since the work goes on until then.
    ``explain`` runs only on failure and may read device arrays.
    """
    device = device_of(bad)
    if device == "cpu":
        if bool(bad):
            raise ValueError(explain())
        return
    pending = _pending_list()
    pending.append((bad, explain, device))
    if len(pending) > _MAX_PENDING:        # nobody has read from the device for a while
        for dev in sorted({entry[2] for entry in pending}):
            checks = _pending_on(dev)
            _settle(checks, failed=bool(to_device(_any_failed(checks), "cpu")))


# ---------------------------------------------------------------------------------------
# The few array functions NumPy and CuPy spell differently.
# ---------------------------------------------------------------------------------------

def erf(a):
    """The error function, elementwise, on the device of ``a`` (NumPy has none: SciPy's)."""
    mod = xp(a)
    if mod is numpy:
        from scipy.special import erf as _erf
    elif _is_cupy(a):
        from cupyx.scipy.special import erf as _erf
    else:
        _erf = mod.erf
    return _erf(a)


def scatter_add(out, index, values) -> None:
    """``out[index] += values`` in place, where repeated indices add up (unlike ``+=``)."""
    mod = xp(out)
    if _is_cupy(out):
        import cupyx

        cupyx.scatter_add(out, index, values)
    elif mod is numpy:
        numpy.add.at(out, index, values)
    else:
        mod.scatter_add(out, index, values)


# ---------------------------------------------------------------------------------------
# Seeding. One generator per device; ``manual_seed`` resets all of them.
# ---------------------------------------------------------------------------------------

def manual_seed(seed: int) -> None:
    """Seed every random stream the library uses (parameter init, dropout, sampling)."""
    global _default_rng
    _default_rng = numpy.random.default_rng(seed)
    cp = _cupy or None
    if cp is not None:
        cp.random.seed(seed)


def rng() -> numpy.random.Generator:
    """The library's host random generator (draws happen on the CPU, then move to the device)."""
    return _default_rng


def next_seed() -> int:
    """A fresh 63-bit seed from the library's generator (for counter-based dropout)."""
    return int(_default_rng.integers(0, 2**63 - 1))


def default_float():
    return numpy.float32


# ---------------------------------------------------------------------------------------
# Host memory. A training step allocates the same large arrays every step (activations,
# gradients, logits). glibc serves each array over 32 MiB (and, by its default, many
# smaller ones) with a fresh mmap and returns it on free, so the next step pays the kernel
# to fault in and zero every page again: at GPT-2 small on two cores, 0.5-1.4 s of system
# time per 4 s step. Keeping freed memory in the process makes the next step reuse it.
# ---------------------------------------------------------------------------------------

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4         # mallopt parameters (malloc.h)
_kept = None


def keep_freed_memory() -> bool:
    """Ask the C allocator to keep freed memory for the next allocation, process-wide.

    Serves every allocation from the heap (no per-array mmap) and never trims the heap,
    so a loop that allocates the same sizes each step stops paying page faults after its
    first step. The peak resident memory stays the loop's peak; memory freed after it is
    not given back to the system until the process ends, which suits a training process
    and is why only the command-line training entry points (and the benchmarks) call it.
    Returns True when the allocator took the settings (glibc), False elsewhere, where it
    changes nothing. Idempotent.
    """
    global _kept
    if _kept is None:
        _kept = False
        try:
            import ctypes
            import ctypes.util

            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):          # not glibc (macOS, Windows, musl)
            return False
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        _kept = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _kept
