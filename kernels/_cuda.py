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
- :func:`warp_reduce`: the same reduction for a real GPU, by warp shuffles (the 32 threads
  of a warp exchange registers directly), then across the warps through a shared array of
  one float per warp. The simulator has no shuffles, so :func:`reduction` picks one of the
  two by :func:`simulating`, and a kernel builder takes that choice as a parameter.
- :func:`row_layout`, :func:`grid_for` and :func:`row_mask`, for the row-per-block kernels
  (softmax, cross-entropy, the norms); :func:`grid_for_elements` for the elementwise ones.
- :func:`empty` and :func:`nan_fill`: how a wrapper allocates an output its kernel writes
  whole, with a debug mode that pre-fills it with NaN, so an element the kernel never writes
  shows in a comparison with the CPU kernel instead of passing on whatever memory held.

The CPU kernels' runtime is ``_cpu.py``.
"""
from __future__ import annotations

import contextlib
import functools
import math
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


# ---------------------------------------------------------------------------------------
# Reductions by warp shuffles, and the choice between the two reductions.
#
# The 32 threads of a warp can read each other's registers with ``shfl_xor_sync`` (which
# also brings the lanes its mask names together): after five exchanges at distances 16, 8,
# 4, 2, 1 (a butterfly), every lane holds the warp's max or sum, with no shared memory and
# no block barrier. The block then
# needs one float per warp in shared memory and one barrier, against log2(threads) barriers
# for the tree of :func:`block_reduce`.
# ---------------------------------------------------------------------------------------

WARP = 32
# -inf as a constant the kernels convert to their float type, ``ft(NEG_INF)``; written
# ``ft(-math.inf)`` inside a kernel, the negation would be float64 arithmetic on the device.
NEG_INF = -math.inf
_FULL_MASK = 0xFFFFFFFF            # every lane of the warp takes part in each shuffle

# Elements of a row one thread keeps in registers (a local array of compile-time length,
# indexed by unrolled loops, so the compiler keeps it in registers). A wider row takes the
# looped path, which reads the row from memory again instead. Compiled for sm_90, the row
# kernels use 64-160 registers per thread at 8 elements, and over 250 at 16 (one block of
# 256 threads per multiprocessor): 8 keeps several blocks resident.
MAX_PER_THREAD = 8
# The most threads ``row_layout`` gives a row: 256 threads of at most 255 registers each
# (the most a thread can have) fit in a multiprocessor's 65536, so every row kernel can
# launch whatever registers it needs. Rows in registers: up to 256 x 8 = 2048 elements.
MAX_ROW_THREADS = 256


def simulating() -> bool:
    """Whether numba.cuda is Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1), which has no shuffles."""
    from numba import config

    return bool(config.ENABLE_CUDASIM)


@functools.lru_cache(maxsize=None)
def warp_reduce():
    """A device function reduce(red, tid, value, threads, is_max) -> the block's max or sum.

    The interface of :func:`block_reduce`, for ``threads`` a multiple of 32; ``red`` is a
    shared array of at least threads / 32 floats. Every lane ends with the same result, and
    the warps' partial results are combined in the same order in every thread, so all
    threads agree bit for bit. As in :func:`block_reduce`, a barrier follows the first
    write and ends the call, even for a single warp: shared memory a thread writes before
    the call is visible to all after it, and nobody writes it again before all have
    returned. Needs a GPU (the simulator has no warp shuffles).
    """
    bind_cuda(globals())

    @cuda.jit(device=True)
    def reduce(red, tid, value, threads, is_max):
        offset = WARP // 2
        while offset > 0:
            other = cuda.shfl_xor_sync(_FULL_MASK, value, offset)
            value = max(value, other) if is_max else value + other
            offset //= 2
        n_warps = threads // WARP
        if tid % WARP == 0:
            red[tid // WARP] = value
        cuda.syncthreads()
        result = red[0]
        for w in range(1, n_warps):
            result = max(result, red[w]) if is_max else result + red[w]
        cuda.syncthreads()   # red may be reused as soon as this returns
        return result

    return reduce


def reduction(shuffle: bool):
    """The block reduction to build a kernel on: by warp shuffles, or through shared memory."""
    return warp_reduce() if shuffle else block_reduce()


def scratch_length(threads: int, shuffle: bool) -> int:
    """Floats of shared memory the reduction of :func:`reduction` needs."""
    return max(1, threads // WARP) if shuffle else threads


def check_threads(threads: int, shuffle: bool, name: str) -> None:
    """Refuse a block size the chosen reduction cannot use."""
    if threads < 1 or threads > 1024 or threads & (threads - 1):
        raise ValueError(f"{name}: threads={threads} must be a power of two from 1 to 1024 "
                         "(the block reduction halves it); leave it unset to choose one")
    if shuffle and threads % WARP:
        raise ValueError(f"{name}: threads={threads} must be a multiple of {WARP} for the "
                         "warp-shuffle reduction a GPU runs; pass 32 or more, or leave it unset")


def row_layout(width: int, threads=None, shuffle: bool = False, name: str = "kernel"):
    """(threads, per_thread) for a row-per-block kernel over rows of ``width`` elements.

    ``per_thread`` is how many elements of a row each thread keeps in registers, or 0 when
    the row is wider than ``MAX_PER_THREAD`` per thread (the looped path). Unset, ``threads``
    is the smallest power of two from ``THREADS`` to ``MAX_ROW_THREADS`` that holds the row
    in registers, or the largest for a row too wide to hold. A larger block size, given,
    may ask more registers of a multiprocessor than it has, and the launch then fails.
    """
    if threads is None:
        threads = THREADS
        while threads < MAX_ROW_THREADS and threads * MAX_PER_THREAD < width:
            threads *= 2
    check_threads(threads, shuffle, name)
    per_thread = -(-width // threads)
    return threads, (per_thread if per_thread <= MAX_PER_THREAD else 0)


def grid_for_elements(n: int, threads: int) -> int:
    """Blocks for an elementwise kernel over n elements; a grid-stride loop covers the rest."""
    return max(1, min(-(-n // threads), 65535))
