"""The runtime the CPU kernels share: a SIMD exponential, row reductions, a thread runner.

Every CPU kernel in this package is a serial Numba function over a range of work units,
called from several threads at once by :func:`run_parallel`, on arrays handed over by
:func:`readonly`. What they have in common lives here, in reading order:

- :func:`fast_exp`. Numba has no vectorised ``exp`` without Intel's SVML, and a scalar
  libm call costs 2-5 ns, more than reading the float. This exponential is written as plain
  arithmetic that LLVM turns into SIMD code (about 0.4 ns per float32 here). The softmax,
  attention, cross-entropy and GELU kernels use it.
- :func:`row_max` and :func:`exp_sub_sum`, the two passes of a row softmax, shared by the
  softmax and cross-entropy kernels, and :func:`exp_sub_total`, the second pass of a
  log-sum-exp, which stores nothing.
- :func:`run_parallel`, which deals work units to a pool of threads.
- The Python-side helpers every wrapper uses: :func:`readonly` (how an input is handed to a
  kernel), :func:`compute_dtype`, and :func:`row_mask` (a broadcast mask compacted to rows,
  shared with the CUDA softmax).

Fast-math flags (``FASTMATH``): ``reassoc`` lets sums vectorise, ``contract`` fuses
multiply-adds. ``nnan``/``ninf`` are left out on purpose, because masked scores are -inf
and must stay -inf.

The CUDA kernels' runtime is ``_cuda.py``.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from llvmlite import ir
from numba import config, get_num_threads, njit, types
from numba.extending import intrinsic, overload

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


# ---------------------------------------------------------------------------------------
# A vectorisable exponential.
#
# exp(x) = 2**n * exp(r) with n = round(x / ln 2) and r = x - n ln 2 in [-ln2/2, ln2/2]
# (Cody and Waite: ln 2 split in a high part with trailing zero bits and a small low part,
# so n * ln2_hi is exact). exp(r) is its Taylor polynomial, of degree 7 for float32 and 12
# for float64: relative errors of at most 3 units in the last place in float32 and 5e-14 in
# float64 (fastmath may reassociate the two-part reduction; tests/kernels/test_fast_exp.py
# pins both bounds). 2**n is built from its bits, (n + exponent bias) << mantissa bits,
# reinterpreted as a float.
# Arguments below the log of the smallest normal number give exactly 0 (so exp(-inf) = 0)
# where libm would give a subnormal: a difference of at most 1e-38.
#
# Every step is plain arithmetic or a select, so a loop that calls ``fast_exp`` (inlined)
# compiles to SIMD code: about 0.4 ns per float32 here, against 2-5 ns for a libm call.
# ---------------------------------------------------------------------------------------

@intrinsic
def _bits_as_float(_typingctx, bits):
    """Reinterpret an int32 as a float32, or an int64 as a float64 (no conversion)."""
    result = {types.int32: types.float32, types.int64: types.float64}.get(bits)
    if result is None:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(result))

    return result(bits), codegen


@intrinsic
def _pow2_f32(_typingctx, n):
    """2**n for a float32 ``n`` holding an integer in [-126, 127]: the bits (n + 127) << 23.

    Written as LLVM instructions because Numba widens int32 arithmetic to int64, which
    would halve the SIMD lanes of the loop around it (16 float32 lanes, but 8 int64 ones):
    kept in int32, a softmax's exponential loop runs about 1.4x faster."""
    if n != types.float32:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        k = builder.add(builder.fptosi(args[0], i32), ir.Constant(i32, 127))
        return builder.bitcast(builder.shl(k, ir.Constant(i32, 23)), ir.FloatType())

    return types.float32(n), codegen


@njit(fastmath=FASTMATH, cache=True, inline="always")
def _exp_f32(x):
    lo = np.float32(-87.0)
    xc = min(max(x, lo), np.float32(88.0))
    n = np.floor(xc * np.float32(1.4426950408889634) + np.float32(0.5))
    r = xc - n * np.float32(0.693359375) - n * np.float32(-2.12194440e-4)
    p = np.float32(1.0 / 5040.0)
    p = p * r + np.float32(1.0 / 720.0)
    p = p * r + np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    # Below lo, exp(x) is taken as 0 (n is clamped there, so 2**n stays a normal number);
    # a product with 0 or 1, not a conditional, so that the loop stays branch-free.
    return p * _pow2_f32(n) * np.float32(x >= lo)


@njit(fastmath=FASTMATH, cache=True, inline="always")
def _exp_f64(x):
    lo = -708.0
    xc = min(max(x, lo), 709.0)
    n = np.floor(xc * 1.4426950408889634 + 0.5)
    r = xc - n * 6.93147180369123816490e-01 - n * 1.90821492927058770002e-10
    p = 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    bits = ((np.int64(n) + 1023) << 52) * np.int64(x >= lo)
    return p * _bits_as_float(bits)


def by_float_type(stub, f32, f64):
    """Make a call of ``stub(x)`` inside a Numba kernel compile to ``f32(x)`` or ``f64(x)``
    by the type of the scalar x (inlined, so the kernel's loop still vectorises). ``stub``
    is what Python calls outside a kernel. Returns ``stub``."""
    @overload(stub, jit_options={"fastmath": FASTMATH}, inline="always")
    def _typed(x):
        if x == types.float32:
            return lambda x: f32(x)
        if x == types.float64:
            return lambda x: f64(x)
        return None
    return stub


def fast_exp(x):
    """exp(x) of a float32 or float64 scalar; inside a Numba kernel, the SIMD-friendly version."""
    return np.exp(x)


by_float_type(fast_exp, _exp_f32, _exp_f64)


@njit(fastmath=FASTMATH, cache=True, inline="always")
def row_max(src, lanes):
    """max(src) of a 1-D array, -inf when empty; ``lanes`` is a scratch array of 16 floats.

    A single running max does not vectorise (LLVM must keep NaN semantics for it, which
    costs about 1 ns per entry); sixteen independent running maxima, one per SIMD lane, do,
    and run about six times faster.
    """
    neg_inf = src.dtype.type(-np.inf)
    lanes[:] = neg_inf
    n16 = src.size - src.size % 16
    for j0 in range(0, n16, 16):
        for lane in range(16):
            v = src[j0 + lane]
            lanes[lane] = v if v > lanes[lane] else lanes[lane]
    m = neg_inf
    for lane in range(16):
        m = lanes[lane] if lanes[lane] > m else m
    for j in range(n16, src.size):
        m = src[j] if src[j] > m else m
    return m


@njit(fastmath=FASTMATH, cache=True, inline="always")
def exp_sub_sum(src, shift, dst):
    """dst = exp(src - shift) for 1-D arrays; returns sum(dst)."""
    total = src.dtype.type(0.0)
    for j in range(src.size):
        e = fast_exp(src[j] - shift)
        dst[j] = e
        total += e
    return total


@njit(fastmath=FASTMATH, cache=True, inline="always")
def exp_sub_total(src, shift):
    """sum(exp(src - shift)) of a 1-D array, storing nothing (a log-sum-exp needs no more)."""
    total = src.dtype.type(0.0)
    for j in range(src.size):
        total += fast_exp(src[j] - shift)
    return total


# ---------------------------------------------------------------------------------------
# Running a kernel on several threads.
#
# A kernel here is a serial ``njit(nogil=True)`` function over a range of work units,
# kernel(first, stop, step, ...), and ``run_parallel`` calls it from as many threads as
# ``numba.get_num_threads()`` allows, each with its own share of the units. Numba's
# ``prange`` would do the same, but a parallel function is compiled together with all it
# calls and costs several times longer to compile (tens of seconds for the attention
# kernels, in every fresh process that finds no cache), and the threads here cost
# microseconds per call.
# ---------------------------------------------------------------------------------------

_pool = None
_pool_lock = threading.Lock()


def _thread_pool():
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(1, config.NUMBA_NUM_THREADS - 1),
                                       thread_name_prefix="minitransformer-kernel")
        return _pool


def run_parallel(kernel, n_units, *args, contiguous=False):
    """Run ``kernel(first, stop, step, *args)`` over the units 0 .. n_units-1 on threads.

    Strided shares (thread t takes t, t + n, t + 2n, ...) balance units of uneven cost,
    such as the query tiles of causal attention; contiguous shares keep each thread on its
    own stretch of memory. The calling thread runs the first share itself.
    """
    if n_units <= 1:          # no hand-off (and no lock in get_num_threads) for one unit
        kernel(0, n_units, 1, *args)
        return
    n_threads = max(1, min(get_num_threads(), n_units))
    if contiguous:
        bounds = [n_units * t // n_threads for t in range(n_threads + 1)]
        shares = [(bounds[t], bounds[t + 1], 1) for t in range(n_threads)]
    else:
        shares = [(t, n_units, n_threads) for t in range(n_threads)]
    if n_threads == 1:
        kernel(*shares[0], *args)
        return
    futures = [_thread_pool().submit(kernel, *share, *args) for share in shares[1:]]
    kernel(*shares[0], *args)
    for future in futures:
        future.result()


# ---------------------------------------------------------------------------------------
# Shared helpers for the Python-side wrappers.
# ---------------------------------------------------------------------------------------

def readonly(a, dtype=None):
    """``a`` as a C-contiguous, read-only NumPy view (copied only if layout or dtype differ).

    The CPU kernels only read their inputs. Numba compiles one version of a kernel per
    argument type, and read-only is part of the type, so handing every input over as
    read-only keeps it to one version per dtype, whether the caller's array was writeable
    or a broadcast view, and needs no defensive copy.
    """
    out = np.ascontiguousarray(a, dtype=dtype).view()
    out.flags.writeable = False
    return out


def compute_dtype(dtype):
    """The dtype a kernel computes in: float32 and float64 as they are, anything else float32."""
    return np.dtype(dtype) if np.dtype(dtype) in (np.float32, np.float64) else np.dtype(np.float32)


def row_mask(mask, shape, xp=np, finish=readonly):
    """A mask broadcastable to ``shape``, compacted for row-wise kernels.

    Returns ``(rows, index)``: ``rows`` is a C-contiguous (R, C) bool array with C = 1 or
    shape[-1], and ``index[r]`` is the row of ``rows`` that applies to row r of the input
    viewed as (N, shape[-1]). Broadcast axes are never materialised, so a (B, 1, 1, T) mask
    over (B, H, T, T) scores costs B*T bytes, not B*H*T*T.

    ``xp`` and ``finish`` (how an array is handed to a kernel) let the CUDA softmax
    share this: ``_cuda.row_mask`` passes CuPy and ``_cuda.contiguous``.
    """
    mask = xp.asarray(mask)
    if mask.dtype != np.bool_:
        raise TypeError(f"softmax: mask dtype {mask.dtype} must be bool (True = allowed); "
                        "convert it with mask.astype(bool)")
    try:
        np.broadcast_shapes(mask.shape, shape)
    except ValueError:
        raise ValueError(f"softmax: mask shape {mask.shape} does not broadcast to the input "
                         f"shape {tuple(shape)}; give a mask broadcastable to it") from None
    if mask.ndim > len(shape):
        mask = mask.reshape(mask.shape[mask.ndim - len(shape):])
    mask = mask.reshape((1,) * (len(shape) - mask.ndim) + mask.shape)
    rows = finish(mask.reshape(-1, mask.shape[-1]))                      # (R, C)
    ids = xp.arange(rows.shape[0], dtype=xp.int64).reshape(mask.shape[:-1])
    index = finish(xp.broadcast_to(ids, tuple(shape[:-1])).reshape(-1))  # (N,)
    return rows, index

