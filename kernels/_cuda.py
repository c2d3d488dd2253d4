"""The runtime the CUDA kernels share: numba.cuda on demand, launch helpers, a block reduction.

Every CUDA kernel in this package is built on first use, per dtype and tile size, by a
function cached with ``functools.lru_cache``, and launched on CuPy arrays (or NumPy arrays
under Numba's CUDA simulator). What they have in common lives here, in reading order:

- ``cuda``, :func:`cuda_module` and :func:`bind_cuda`: ``numba.cuda`` is imported only
  when a kernel is first built, so importing a kernel module needs no GPU, and the
  simulator (``NUMBA_ENABLE_CUDASIM=1``) can stand in for one.
- :func:`float_type`, :func:`contiguous` and :func:`launch_stream`: what a kernel computes
  in, how an array is handed to it, and which stream it runs on.
- :func:`block_reduce`: a block-wide max or sum as a tree over shared memory. It uses no
  warp shuffles, so the kernels built on it run under the simulator, where the tests check
  them.
- :func:`grid_for` and :func:`row_mask`, for the row-per-block kernels (softmax,
  cross-entropy).
- :func:`empty` and :func:`nan_fill`: how a wrapper allocates an output its kernel writes
  whole, with a debug mode that pre-fills it with NaN, so an element the kernel never writes
  shows in a comparison with the CPU kernel instead of passing on whatever memory held.

The CPU kernels' runtime is ``_cpu.py``.
"""
from __future__ import annotations

import contextlib
import functools
import os

import numpy as np

from minitransformer import backend

from . import _cpu

THREADS = 128


# numba.cuda, bound on first use. Kernels must refer to it as a global of their module,
# not a closure variable: the simulator runs a kernel by swapping its own module in for
# that global.
cuda = None


def cuda_module():
    """numba.cuda, imported on first use."""
    from numba import cuda as numba_cuda

    return numba_cuda


def bind_cuda(module_globals):
    """Set the global ``cuda`` of a kernel module to numba.cuda."""
    module_globals["cuda"] = cuda_module()


def float_type(dtype):
    """The NumPy scalar type a kernel computes in: float32 or float64."""
    return np.float64 if np.dtype(dtype) == np.float64 else np.float32


def contiguous(a, dtype=None, xp=np):
    """``a`` as a C-contiguous, writeable array of ``xp`` (copied only when needed).

    The CUDA simulator copies every argument back after a launch, which a read-only NumPy
    array refuses (hence not ``_cpu.readonly``).
    """
    out = xp.ascontiguousarray(a, dtype=dtype)
    if not getattr(out.flags, "writeable", True):
        out = out.copy()
    return out


def launch_stream(array):
    """The stream to launch on: CuPy's current stream for CuPy arrays, else the default."""
    if backend.device_of(array) == "cuda":
        cp = backend.cupy_module()
        ptr = cp.cuda.get_current_stream().ptr
        if ptr:
            return cuda_module().external_stream(ptr)
    return 0


@functools.lru_cache(maxsize=None)
def block_reduce():
    """A device function reduce(red, tid, value, threads, is_max) -> the block's max or sum.

    Every thread of the block must call it; ``red`` is a shared array of ``threads`` floats
    (a power of two). A tree over shared memory: log2(threads) steps, each halving the
    number of active threads.
    """
    bind_cuda(globals())

    @cuda.jit(device=True)
    def reduce(red, tid, value, threads, is_max):
        red[tid] = value
        cuda.syncthreads()
        step = threads // 2
        while step > 0:
            if tid < step:
                if is_max:
                    red[tid] = max(red[tid], red[tid + step])
                else:
                    red[tid] += red[tid + step]
            cuda.syncthreads()
            step //= 2
        result = red[0]
        cuda.syncthreads()   # red may be reused as soon as this returns
        return result

    return reduce


def grid_for(n_rows):
    """Blocks for a row-per-block kernel; rows beyond the grid are strided over."""
    return max(1, min(n_rows, 65535))


def row_mask(xp, mask, shape):
    """The (rows, index) pair of ``_cpu.row_mask``, on ``xp``'s device."""
    return _cpu.row_mask(mask, shape, xp=xp, finish=functools.partial(contiguous, xp=xp))


# The debug fill mode: on while ``nan_fill()`` is active, or for a whole process with
# MINITRANSFORMER_KERNEL_FILL=nan in the environment.
_fill_nan = os.environ.get("MINITRANSFORMER_KERNEL_FILL", "").strip().lower() == "nan"


@contextlib.contextmanager
def nan_fill(on: bool = True):
    """Pre-fill (``on``) every output the CUDA wrappers allocate with NaN, for the block."""
    global _fill_nan
    old, _fill_nan = _fill_nan, on
    try:
        yield
    finally:
        _fill_nan = old


def empty(xp, shape, dtype):
    """An output array the kernel writes whole: uninitialised, or all NaN under :func:`nan_fill`."""
    if _fill_nan:
        return xp.full(shape, np.nan, dtype=dtype)
    return xp.empty(shape, dtype=dtype)
