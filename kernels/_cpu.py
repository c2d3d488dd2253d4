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

import os
import threading
import time

import numpy as np
from llvmlite import ir
from numba import get_num_threads, njit, types
from numba.core import cgutils
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
# kernels, in every fresh process that finds no cache).
#
# Handing a share to a thread that sleeps costs the operating system's wake-up: 100 us on
# a 2-core virtual machine (Intel Xeon; 54 us on an AMD EPYC), a tenth of a 1 ms kernel,
# and the woken thread may even be queued behind the caller on its core and start only
# when the caller's share is done. So the threads here wait the way OpenMP's do: after a
# share, a thread spins on a flag in memory for a while (``SPIN_SECONDS``), where a new
# share reaches it in about a microsecond, and only then sleeps. The flags are read and
# written inside Numba code, without the interpreter's lock; each side runs Python (and
# so holds that lock) only while the other is inside a kernel or spinning, so neither
# waits for the lock in the common case:
#
#   caller                                   worker (spinning in _post_and_await)
#   task = (kernel, share, args); GO = n     sees GO = n, waits GRACE (the caller's call
#   kernel(share 0) .......................  into its kernel), then kernel(share) ......
#   _await(DONE >= n) (spinning)             _post_and_await: DONE = n, then spins on GO
#
# A worker that spun ``SPIN_SECONDS`` without news sleeps on a condition variable, and
# the caller wakes it when it posts the next share (both under the condition's lock, so
# no wake-up is lost). While spinning, a worker yields its core to any other thread that
# wants it (a product library's, say) after its first rounds.
# ---------------------------------------------------------------------------------------

SPIN_SECONDS = 200e-6      # how long an idle worker spins before it sleeps (OpenMP's threads,
                           # as the package sets them, spin 0.1-0.2 ms: minitransformer/__init__.py)
GRACE_SECONDS = 5e-6       # how long a worker lets the caller enter its own share first
_FIRST_SPIN_SECONDS = 20e-6   # of which spun before each round yields the core
_GO, _DONE = 0, 8          # a worker's flags, a cache line apart: (GO, DONE) of 8 int64s


def _element_pointer(context, builder, array_type, array, index):
    ary = context.make_array(array_type)(context, builder, array)
    return cgutils.get_item_pointer(context, builder, array_type, ary, [index])


@intrinsic
def _load_acquire(_typingctx, flags, index):
    """flags[index] read as an atomic load: never cached in a register, so a spinning loop
    sees another thread's store."""
    if flags != types.int64[::1]:
        return None

    def codegen(context, builder, signature, args):
        ptr = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        return builder.load_atomic(ptr, "acquire", 8)

    return types.int64(flags, index), codegen


@intrinsic
def _store_release(_typingctx, flags, index, value):
    """flags[index] = value as an atomic store: visible to another thread's atomic load once
    everything written before it is."""
    if flags != types.int64[::1]:
        return None

    def codegen(context, builder, signature, args):
        ptr = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        builder.store_atomic(args[2], ptr, "release", 8)
        return context.get_dummy_value()

    return types.void(flags, index, value), codegen


# POSIX's sched_yield(), called from inside Numba code: hands the core to another thread
# that is ready to run on it, if any, and returns at once otherwise.
_sched_yield = types.ExternalFunction("sched_yield", types.int32())


@njit(nogil=True, cache=True)
def _await(flags, index, value, spins, yields):
    """Spin until flags[index] >= value: True, or False after ``spins`` rounds of reading
    the flag and then ``yields`` rounds that also yield the core (-1: no limit)."""
    i = 0
    while _load_acquire(flags, index) < value:
        i += 1
        if i > spins:
            if i - spins == yields + 1:
                return False
            _sched_yield()
    return True


@njit(nogil=True, cache=True)
def _post_and_await(flags, post_index, post_value, index, value, spins, yields):
    """flags[post_index] = post_value, then ``_await(flags, index, value, ...)``."""
    _store_release(flags, post_index, post_value)
    return _await(flags, index, value, spins, yields)


def _rounds_per_second(spins: int, yields: int) -> float:
    """How many rounds of ``_await`` this machine runs per second, reading only
    (``yields`` 0) or also yielding (``spins`` 0)."""
    flags = np.zeros(16, np.int64)
    _await(flags, _GO, 1, 10, 10)                       # compiled (or loaded) before timing
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        _await(flags, _GO, 1, spins, yields)
        best = min(best, time.perf_counter() - start)
    return (spins + yields) / max(best, 1e-9)


class _Worker:
    """One thread that runs the shares posted to it (see the comment above)."""

    def __init__(self, pool, index):
        self.flags = np.zeros(16, np.int64)             # GO at 0, DONE at 8
        self.task = None                                # (kernel, share, args) of the last GO
        self.error = None                               # what that share raised, if anything
        self.asleep = False                             # guarded by wake
        self.wake = threading.Condition(threading.Lock())
        self.pool = pool
        self.thread = threading.Thread(target=self._loop, name=f"minitransformer-kernel-{index}",
                                       daemon=True)
        self.thread.start()

    def post(self, n, kernel, share, args):
        self.task = (kernel, share, args)
        with self.wake:
            self.flags[_GO] = n
            if self.asleep:
                self.wake.notify()

    def _loop(self):
        pool, flags = self.pool, self.flags
        done = 0                    # the number of the last share this worker ran
        while True:
            # DONE = done, then spin for a new GO. Shares are numbered by the pool, not by
            # worker: a worker made after others, or left out of a call that needed fewer
            # threads, sees numbers jump, and answers each with the number it was given.
            if _post_and_await(flags, _DONE, done, _GO, done + 1, pool.spins, pool.yields):
                _await(flags, _GO + 1, 1, pool.grace, 0)        # GO + 1 stays 0: a pause
            else:
                with self.wake:
                    self.asleep = True
                    while flags[_GO] <= done:
                        self.wake.wait()
                    self.asleep = False
            done = int(flags[_GO])
            kernel, share, args = self.task
            self.task = None
            try:
                kernel(*share, *args)
            except BaseException as error:              # handed to the caller, who raises it
                self.error = error
            # Hold no reference to the arrays once done: the autograd engine lets a leaf keep
            # a kernel's output as its gradient, without a copy, only when nothing else can.
            del kernel, share, args


class _Pool:
    """The worker threads of this process, made on first use."""

    def __init__(self):
        spin_rate, yield_rate = _rounds_per_second(20_000, 0), _rounds_per_second(0, 200)
        self.spins = max(1, int(_FIRST_SPIN_SECONDS * spin_rate))     # then each round yields
        self.yields = max(1, int((SPIN_SECONDS - _FIRST_SPIN_SECONDS) * yield_rate))
        self.grace = max(1, int(GRACE_SECONDS * spin_rate))
        self.workers = []
        self.posted = 0                                 # the number of the last GO
        self.busy = threading.Lock()                    # one caller at a time

    def run(self, kernel, shares, args):
        """Shares 1.. on workers, share 0 here; returns when all are done."""
        while len(self.workers) < len(shares) - 1:
            self.workers.append(_Worker(self, len(self.workers)))
        self.posted += 1
        n = self.posted
        workers = self.workers[:len(shares) - 1]
        for worker, share in zip(workers, shares[1:]):
            worker.post(n, kernel, share, args)
        try:
            kernel(*shares[0], *args)
        finally:
            for worker in workers:          # the workers use the arrays: wait even on error
                _await(worker.flags, _DONE, n, self.spins, -1)
        for worker in workers:
            error, worker.error = worker.error, None
            if error is not None:
                raise error


_pool = None
_pool_lock = threading.Lock()


def _the_pool():
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = _Pool()
        return _pool


def _forget_pool():
    """In a child made by fork: the parent's workers do not exist here; make new ones."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def run_parallel(kernel, n_units, *args, contiguous=False):
    """Run ``kernel(first, stop, step, *args)`` over the units 0 .. n_units-1 on threads.

    Strided shares (thread t takes t, t + n, t + 2n, ...) balance units of uneven cost,
    such as the query tiles of causal attention; contiguous shares keep each thread on its
    own stretch of memory. The calling thread runs the first share itself. A second
    caller while the workers are busy (another Python thread) runs its shares itself.
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
    pool = _the_pool() if n_threads > 1 else None
    if pool is None or not pool.busy.acquire(blocking=False):
        for share in shares:
            kernel(*share, *args)
        return
    try:
        pool.run(kernel, shares, args)
    finally:
        pool.busy.release()


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

