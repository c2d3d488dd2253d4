"""Data parallelism: K processes train one model as if they were one.

Launched as ``mpiexec -n K minitransformer pretrain ...``, each of the K processes
("ranks") holds a full copy of the model. At every optimizer step the global batch of B
sequences is cut into K contiguous slices of rows, and rank r runs forward and backward on
its slice only. The loss of the step is

    L = (sum over every rank and every target token of the token loss) / N,
    N = the non-ignored targets of the whole global batch,

so each rank scales its own summed loss by 1/N (N is one integer all-reduce before the
backward pass) and the *sum over ranks* of the local gradients is exactly dL/dw: what one
process on the whole batch computes, up to the order of floating-point additions. Ranks
holding more or fewer real tokens than others need no special care.

That sum is an all-reduce. Gradients are packed into a few large contiguous buckets, one
message per bucket instead of one per parameter (a message costs a fixed latency plus its
bytes over the bandwidth, so few large ones are cheap), each bucket is summed in place,
and every ``.grad`` becomes a view of its bucket. Afterwards every rank holds the same
gradient, clips it by the same norm and takes the same optimizer step, so the replicas stay
identical without ever sending weights. (The buckets are reduced after the backward pass,
not overlapped with it: overlap needs a "this gradient is final" hook in the autograd
engine, which it does not have, and on a CPU whose cores all compute it would gain nothing.)

ZeRO stage 1 (Rajbhandari et al., 2020; ``zero1=True``). Adam keeps two numbers per weight,
so its state is twice the model. With ZeRO-1 the parameters, concatenated in a fixed order,
form one flat vector of P numbers and rank r owns the slice [r S, (r + 1) S), S = ceil(P / K):
it keeps the optimizer state of that slice only (memory / K), steps that slice only, and
then every rank all-gathers the updated slices from their owners. Adam is elementwise, so
the result is bit for bit the unsharded one. For a checkpoint the slices are gathered to
rank 0 and saved under the usual names, so a checkpoint does not depend on the number of
ranks and a run can resume on another number of them (with the same global batch).

Stalls. MPI has no timeouts: a collective waits forever for a rank that never comes. Here
every collective is non-blocking and polled against a deadline, and each rank, as it enters
a collective, posts a tiny "arrived" message to every other rank. When the deadline passes,
the ranks whose message is missing are the ones named in the error (``RankTimeout``). An
abandoned collective leaves MPI in an undefined state, so the job must then end: the CLI
prints the message and aborts the whole job (``Communicator.abort``). Checkpoints are
written by rank 0 only, between collectives, and atomically, so the last one stays good.

Devices. NumPy gradients travel through MPI. CuPy gradients travel through NCCL
(``cupy.cuda.nccl``), GPU to GPU, one GPU per rank, set up over MPI; without NCCL they are
staged through host memory and MPI.

Threads. K ranks on one machine each running a BLAS with one thread per core would
oversubscribe the cores K times over; ``init`` gives each rank cores / (ranks on the node)
threads, unless the user set OMP_NUM_THREADS or OPENBLAS_NUM_THREADS.

mpi4py is optional (the ``dist`` extra): nothing here imports it until ``init`` finds the
process was started by an MPI launcher.
"""
from __future__ import annotations

import ctypes
import os
import sys
import time
import zlib

import numpy

from minitransformer import backend, optim

# Set by MPI launchers in every process they start (MPICH/Intel MPI, Open MPI, PMIx, MVAPICH).
LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE")
DEFAULT_TIMEOUT = 600.0       # seconds a rank waits for the others at one collective
DEFAULT_BUCKET_MB = 25.0      # gradient bucket size (the same default as PyTorch's DDP)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
_ARRIVE_TAG = 7

# What each collective is called in messages (a rank out of step is told what the others are in).
TARGETS = "the target-count all-reduce"
LOSS = "the loss all-reduce"
BARRIER = "a barrier"
GRADIENTS = "the gradient all-reduce"
PARAMETERS = "the ZeRO-1 parameter all-gather"
STATE = "the ZeRO-1 optimizer-state gather"
NCCL_SETUP = "the NCCL set-up"
_NAMES = {zlib.crc32(w.encode()): w for w in (TARGETS, LOSS, BARRIER, GRADIENTS, PARAMETERS, STATE, NCCL_SETUP)}


class RankTimeout(RuntimeError):
    """Some rank did not reach a collective in time; ``ranks`` are the ones that did not arrive."""

    def __init__(self, message: str, ranks=()):
        super().__init__(message)
        self.ranks = tuple(ranks)


def launched_under_mpi(environ=None) -> bool:
    """True when an MPI launcher (mpiexec, mpirun, srun with PMI) started this process."""
    env = os.environ if environ is None else environ
    return any(name in env for name in LAUNCHER_VARIABLES)


def split_rows(batch_size: int, size: int, rank: int) -> tuple[int, int]:
    """Rows [lo, hi) of a global batch that ``rank`` of ``size`` takes: contiguous slices whose
    lengths differ by at most one, covering the batch exactly once."""
    if batch_size < size:
        raise ValueError(f"a global batch of {batch_size} sequences cannot be split over {size} ranks; "
                         f"use a batch size of at least {size} (--batch-size) or fewer ranks")
    base, extra = divmod(batch_size, size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def init(timeout: float | None = DEFAULT_TIMEOUT, zero1: bool = False, bucket_mb: float = DEFAULT_BUCKET_MB,
         device: str = "cpu", limit_threads: bool = True):
    """The communicator of this process.

    Under an MPI launcher: a ``Communicator`` over all ranks (even just one). Otherwise a
    ``SingleProcess`` that does nothing, so one script runs either way.
    ``timeout``: seconds to wait for the other ranks at each collective (None: forever).
    ``zero1``: shard the optimizer state over the ranks. ``device``: "cuda" picks this rank's
    GPU (local rank modulo the GPUs on the node) before any array is made there.
    """
    if not launched_under_mpi():
        return SingleProcess()
    try:
        from mpi4py import MPI
    except ImportError:
        raise RuntimeError("this process was started by an MPI launcher (mpiexec), but mpi4py is not "
                           "installed; install the dist extra: pip install 'minitransformer[dist]'") from None
    comm = Communicator(MPI.COMM_WORLD, timeout=timeout, zero1=zero1, bucket_mb=bucket_mb)
    if limit_threads:
        comm.threads = limit_threads_per_rank(comm.local_size)
    if device != "cpu":
        comm.select_device(device)
    return comm


# ---------------------------------------------------------------------------------------
# One process: the same interface, doing nothing
# ---------------------------------------------------------------------------------------

class SingleProcess:
    """The communicator of a run that is not data-parallel: every collective is the identity."""

    rank, size, local_rank, local_size = 0, 1, 0, 1
    distributed = False
    zero1 = False

    def __init__(self):
        self.stats: dict = {}
        self.threads = None

    def row_range(self, batch_size: int) -> tuple[int, int]:
        return 0, batch_size

    def sum_int(self, n: int, what: str = TARGETS, timeout=None) -> int:
        return int(n)

    def sum_float(self, x: float) -> float:
        return float(x)

    def allreduce_gradients(self, model) -> None:
        pass

    def barrier(self, timeout=None) -> None:
        pass

    def wrap_optimizer(self, optimizer):
        return optimizer

    def gather_optimizer_state(self, optimizer) -> None:
        pass

    def abort(self, code: int = 1):
        raise SystemExit(code)


# ---------------------------------------------------------------------------------------
# K processes over MPI
# ---------------------------------------------------------------------------------------

class Communicator:
    """Collectives over the ranks of an MPI communicator, each guarded by a timeout.

    What a training loop calls: ``row_range``, ``sum_int``, ``sum_float``,
    ``allreduce_gradients``, ``barrier``, ``wrap_optimizer``, ``gather_optimizer_state``.
    ``stats`` accumulates, per kind of collective, calls, bytes, the seconds spent waiting
    for the other ranks to arrive, and the seconds from then until done (the transfer).
    """

    distributed = True

    def __init__(self, mpi_comm, timeout: float | None = DEFAULT_TIMEOUT, zero1: bool = False,
                 bucket_mb: float = DEFAULT_BUCKET_MB, gpu_backend: str = "auto"):
        from mpi4py import MPI

        if timeout is not None and not timeout > 0:
            raise ValueError(f"the data-parallel timeout must be a positive number of seconds (or None), got {timeout!r}")
        if not bucket_mb > 0:
            raise ValueError(f"bucket_mb must be positive, got {bucket_mb!r}")
        if gpu_backend not in ("auto", "nccl", "mpi"):
            raise ValueError(f"gpu_backend must be 'auto', 'nccl' or 'mpi', got {gpu_backend!r}")
        self.MPI = MPI
        self.comm = mpi_comm.Dup()          # our collectives never meet the user's messages
        self._arrivals = mpi_comm.Dup()     # nor the arrival notes
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        node = mpi_comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()
        self.timeout = timeout
        self.zero1 = bool(zero1)
        self.bucket_bytes = int(bucket_mb * 2 ** 20)
        self.gpu_backend = gpu_backend
        self.threads = None                 # what limit_threads_per_rank did, when init ran it
        self.stats: dict = {}
        self._seq = 0                       # collectives entered so far (the same on every rank)
        self._names = dict(_NAMES)          # checksum of a collective's description -> description
        self._layouts: dict = {}
        self._nccl = None
        if self.size > 1:
            _abort_on_uncaught_exception(self)

    # ------------------------------------------------------------------ batch split
    def row_range(self, batch_size: int) -> tuple[int, int]:
        """Rows [lo, hi) of each global batch that this rank trains on."""
        return split_rows(batch_size, self.size, self.rank)

    # ------------------------------------------------------------------ guarded collectives
    def _collective(self, what: str, kind: str, start, nbytes: int = 0, timeout="default") -> None:
        """Start a collective (``start()`` returns a function telling whether it is done), note
        our arrival to every other rank, and wait for both under the deadline."""
        timeout = self.timeout if timeout == "default" else timeout
        self._seq += 1
        t0 = time.perf_counter()
        peers = [p for p in range(self.size) if p != self.rank]
        code = zlib.crc32(what.encode())
        self._names[code] = what
        note = numpy.array([self._seq, code], dtype=numpy.int64)   # which collective, and which kind
        inbox = numpy.zeros((len(peers), 2), dtype=numpy.int64)
        sends = [self._arrivals.Isend(note, dest=p, tag=_ARRIVE_TAG) for p in peers]
        recvs = [self._arrivals.Irecv(inbox[i], source=p, tag=_ARRIVE_TAG) for i, p in enumerate(peers)]
        done = start()
        deadline = None if timeout is None else time.monotonic() + timeout
        # Waiting for latecomers: sleep between polls, so a waiting rank leaves its core to
        # ranks still computing on the same machine.
        everyone = sends + recvs
        if not _poll(lambda: self.MPI.Request.Testall(everyone), deadline, max_pause=1e-3):
            missing = [p for p, r in zip(peers, recvs) if not r.Test()]
            self._timed_out(what, timeout, missing)
        astray = [(p, int(s), int(c)) for p, (s, c) in zip(peers, inbox) if s != self._seq or c != code]
        if astray:
            raise RuntimeError(
                f"ranks out of step: this rank ({self.rank}) is at collective #{self._seq}, {what}, but "
                + ", ".join(f"rank {p} at #{s}, {self._names.get(c, 'another collective')}" for p, s, c in astray)
                + "; every rank must run the same steps in the same order")
        t1 = time.perf_counter()
        # Everyone is in: poll without sleeping, since each poll also moves the transfer on.
        if not _poll(done, deadline, max_pause=0.0):
            self._timed_out(what, timeout, [])
        t2 = time.perf_counter()
        s = self.stats.setdefault(kind, {"calls": 0, "bytes": 0, "wait_s": 0.0, "transfer_s": 0.0})
        s["calls"] += 1
        s["bytes"] += int(nbytes)
        s["wait_s"] += t1 - t0
        s["transfer_s"] += t2 - t1

    def _timed_out(self, what, timeout, missing):
        if self._nccl is not None:
            self._nccl.abort()
        if missing:
            who = ("rank " if len(missing) == 1 else "ranks ") + ", ".join(map(str, missing))
            msg = (f"data-parallel timeout: {who} of {self.size} did not reach {what} within {timeout:g} s "
                   f"(rank {self.rank} waited there); it is stalled, dead, or much slower than the others "
                   "(if it is only slow, raise the timeout: --dist-timeout)")
        else:
            msg = (f"data-parallel timeout: every rank reached {what}, but it did not complete within "
                   f"{timeout:g} s (rank {self.rank} waited); the interconnect or a GPU is stuck")
        raise RankTimeout(msg, missing)

    def _mpi(self, make_requests):
        """``start`` for an MPI non-blocking collective."""
        def start():
            requests = make_requests()
            return lambda: self.MPI.Request.Testall(requests)
        return start

    def sum_int(self, n: int, what: str = TARGETS, timeout="default") -> int:
        """The sum of ``n`` over all ranks."""
        buf = numpy.array([n], dtype=numpy.int64)
        self._collective(what, "scalars",
                         self._mpi(lambda: [self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)]),
                         8, timeout)
        return int(buf[0])

    def sum_float(self, x: float) -> float:
        """The sum of ``x`` over all ranks, in float64."""
        buf = numpy.array([x], dtype=numpy.float64)
        self._collective(LOSS, "scalars",
                         self._mpi(lambda: [self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)]), 8)
        return float(buf[0])

    def barrier(self, timeout="default") -> None:
        """Wait until every rank is here (``timeout=None``: however long it takes)."""
        self._collective(BARRIER, "barrier", self._mpi(lambda: [self.comm.Ibarrier()]), timeout=timeout)

    def abort(self, code: int = 1):
        """End every rank of the job now (after a timeout, MPI cannot be used any more)."""
        sys.stdout.flush()
        sys.stderr.flush()
        self.MPI.COMM_WORLD.Abort(code)
        os._exit(code)                      # some MPIs return from Abort before the launcher kills us

    # ------------------------------------------------------------------ arrays of any device
    def _sum_arrays(self, buffers, what, kind) -> None:
        """Sum each buffer (NumPy or CuPy) in place over the ranks: one message per buffer."""
        nbytes = sum(b.nbytes for b in buffers)
        if type(buffers[0]) is numpy.ndarray:
            self._collective(what, kind, self._mpi(
                lambda: [self.comm.Iallreduce(self.MPI.IN_PLACE, b, op=self.MPI.SUM) for b in buffers]), nbytes)
        elif self._use_nccl(buffers[0]):
            self._collective(what, kind, lambda: self._nccl.allreduce(buffers), nbytes)
        else:                               # device arrays without NCCL: through host memory
            host = [backend.to_numpy(b) for b in buffers]
            self._sum_arrays(host, what, kind)
            for b, h in zip(buffers, host):
                b[...] = backend.xp(b).asarray(h)

    def _gather_arrays(self, send, recv, what, kind) -> None:
        """All-gather: ``recv`` (K times ``send``'s length) holds every rank's ``send``, in rank order."""
        if type(send) is numpy.ndarray:
            self._collective(what, kind, self._mpi(lambda: [self.comm.Iallgather(send, recv)]), recv.nbytes)
        elif self._use_nccl(send):
            self._collective(what, kind, lambda: self._nccl.allgather(send, recv), recv.nbytes)
        else:
            host = backend.to_numpy(recv).copy()
            self._gather_arrays(backend.to_numpy(send), host, what, kind)
            recv[...] = backend.xp(recv).asarray(host)

    def _gather_to_root(self, send, recv, root: int, what) -> None:
        """Gather host arrays to ``root`` (``recv`` is used there only)."""
        self._collective(what, "state_gather", self._mpi(
            lambda: [self.comm.Igather(send, recv if self.rank == root else None, root=root)]), send.nbytes * self.size)

    # ------------------------------------------------------------------ gradients
    def _buckets(self, params):
        key = tuple((id(p), p.data.shape, p.data.dtype.str, backend.device_of(p.data)) for p in params)
        layout = self._layouts.get(key)
        if layout is None:
            layout = self._layouts[key] = _BucketLayout(params, self.bucket_bytes)
        return layout

    def allreduce_gradients(self, model) -> None:
        """Sum every parameter's gradient over the ranks, in place, in a few large buckets.

        A parameter no rank has a gradient for keeps ``.grad = None`` (as it would in one
        process, where the optimizer then skips it); one that only some ranks have is zero
        on the others. Each ``.grad`` is afterwards a view into a bucket that the next call
        overwrites.
        """
        params = [p for _, p in model.named_parameters()]
        layout = self._buckets(params)
        layout.pack()
        self._sum_arrays(layout.buffers, GRADIENTS, "grad_allreduce")
        layout.unpack()

    # ------------------------------------------------------------------ ZeRO-1
    def wrap_optimizer(self, optimizer):
        """``optimizer`` itself, or with ``zero1`` its state sharded over the ranks."""
        return ZeroOptimizer(optimizer, self) if self.zero1 else optimizer

    def gather_optimizer_state(self, optimizer) -> None:
        """Before rank 0 saves a checkpoint: every rank calls this, so that a sharded
        optimizer's ``state_dict()`` on rank 0 holds the whole state."""
        if isinstance(optimizer, ZeroOptimizer):
            optimizer.gather_state()

    # ------------------------------------------------------------------ GPUs
    def select_device(self, device: str = "cuda") -> None:
        """Use GPU (local rank modulo GPUs on this node) for everything this rank allocates."""
        cp = backend.module_for_device(device)
        count = cp.cuda.runtime.getDeviceCount()
        cp.cuda.Device(self.local_rank % count).use()

    def _use_nccl(self, array) -> bool:
        if self.gpu_backend == "mpi":
            return False
        if self._nccl is None:
            try:
                from cupy.cuda import nccl
                ok = bool(getattr(nccl, "available", True))
            except ImportError:
                ok = False
            if not ok:
                if self.gpu_backend == "nccl":
                    raise RuntimeError("gpu_backend='nccl' but CuPy was built without NCCL; install "
                                       "cupy-cuda12x with NCCL, or use gpu_backend='mpi'")
                self.gpu_backend = "mpi"
                return False
            self._nccl = _Nccl(self)
        return True


class _BucketLayout:
    """Where each gradient lives in the flat buckets, and the buckets themselves.

    Parameters are taken in order, grouped by dtype, and cut into buckets of about
    ``bucket_bytes``. After the last bucket's gradients come one slot per parameter holding
    1 when this rank has a gradient for it, so the same all-reduce tells which parameters
    have a gradient on any rank.
    """

    def __init__(self, params, bucket_bytes: int):
        self.params = params
        xp = backend.xp(params[0].data)
        groups: dict = {}
        for i, p in enumerate(params):
            groups.setdefault(p.data.dtype.str, []).append(i)
        self.entries = []                   # per bucket: [(param index, offset, size)]
        sizes = []
        for indices in groups.values():
            current, used, itemsize = [], 0, params[indices[0]].data.dtype.itemsize
            for i in indices:
                n = params[i].data.size
                if current and (used + n) * itemsize > bucket_bytes:
                    self.entries.append(current)
                    sizes.append((used, params[indices[0]].data.dtype))
                    current, used = [], 0
                current.append((i, used, n))
                used += n
            self.entries.append(current)
            sizes.append((used, params[indices[0]].data.dtype))
        self.flag_offset = sizes[-1][0]
        sizes[-1] = (sizes[-1][0] + len(params), sizes[-1][1])
        self.buffers = [xp.empty(n, dtype=dt) for n, dt in sizes]

    def pack(self) -> None:
        flags = numpy.zeros(len(self.params))
        for buf, entries in zip(self.buffers, self.entries):
            for i, off, n in entries:
                g = self.params[i].grad
                if g is None:
                    buf[off:off + n] = 0
                else:
                    buf[off:off + n] = g.reshape(-1)
                    flags[i] = 1.0
        last = self.buffers[-1]
        last[self.flag_offset:] = backend.xp(last).asarray(flags, dtype=last.dtype)

    def unpack(self) -> None:
        has_grad = backend.to_numpy(self.buffers[-1][self.flag_offset:]) > 0
        for buf, entries in zip(self.buffers, self.entries):
            for i, off, n in entries:
                p = self.params[i]
                p.grad = buf[off:off + n].reshape(p.data.shape) if has_grad[i] else None


class _Nccl:
    """Sums and gathers of CuPy arrays through NCCL, on the current CUDA stream."""

    def __init__(self, comm: Communicator):
        import cupy
        from cupy.cuda import nccl

        self.cupy, self.nccl = cupy, nccl
        uid = numpy.zeros(nccl.NCCL_UNIQUE_ID_BYTES if hasattr(nccl, "NCCL_UNIQUE_ID_BYTES") else 128,
                          dtype=numpy.int64)
        if comm.rank == 0:
            uid[:] = nccl.get_unique_id()
        comm._collective(NCCL_SETUP, "setup",
                         comm._mpi(lambda: [comm.comm.Ibcast(uid, root=0)]))
        self.comm = nccl.NcclCommunicator(comm.size, tuple(int(c) for c in uid), comm.rank)
        self.types = {numpy.dtype("float16"): nccl.NCCL_FLOAT16, numpy.dtype("float32"): nccl.NCCL_FLOAT32,
                      numpy.dtype("float64"): nccl.NCCL_FLOAT64, numpy.dtype("int64"): nccl.NCCL_INT64}

    def _type(self, a):
        if a.dtype not in self.types:
            raise TypeError(f"NCCL collectives take {sorted(map(str, self.types))} arrays, got {a.dtype}")
        return self.types[a.dtype]

    def _launched(self):
        """A 'done?' function for the work just queued on the current stream."""
        event = self.cupy.cuda.Event(disable_timing=True)
        event.record()
        return lambda: event.done

    def allreduce(self, buffers):
        stream = self.cupy.cuda.get_current_stream().ptr
        for b in buffers:
            self.comm.allReduce(b.data.ptr, b.data.ptr, b.size, self._type(b), self.nccl.NCCL_SUM, stream)
        return self._launched()

    def allgather(self, send, recv):
        stream = self.cupy.cuda.get_current_stream().ptr
        self.comm.allGather(send.data.ptr, recv.data.ptr, send.size, self._type(send), stream)
        return self._launched()

    def abort(self):
        try:
            self.comm.abort()
        except Exception:  # already broken: nothing more to release
            pass


def _poll(done, deadline, max_pause: float) -> bool:
    """Call ``done()`` until it is true (True) or the deadline passes (False), pausing
    between calls for a time that doubles from 10 us up to ``max_pause``."""
    pause = 0.0
    while not done():
        if deadline is not None and time.monotonic() > deadline:
            return bool(done())
        if pause:
            time.sleep(pause)
        pause = min(max_pause, pause * 2 or 1e-5)
    return True


_HOOKED = []


def _abort_on_uncaught_exception(comm) -> None:
    """An exception that ends one rank would leave the others waiting in the next collective
    until the timeout; instead, after printing it, end the whole job at once."""
    if _HOOKED:
        return
    previous = sys.excepthook

    def hook(kind, value, tb):
        previous(kind, value, tb)
        comm.abort(1)

    sys.excepthook = hook
    _HOOKED.append(hook)


# ---------------------------------------------------------------------------------------
# ZeRO stage 1: the optimizer state sharded over the ranks
# ---------------------------------------------------------------------------------------

class _Piece:
    """The elements [a, b) of a parameter's flattened values that this rank updates. The
    optimizer sees it as a parameter; ``data`` and ``grad`` are views, set before each step."""

    def __init__(self, param, a: int, b: int):
        self.param, self.a, self.b = param, a, b
        self.data = self.grad = None
        self.refresh()

    def refresh(self) -> None:
        p = self.param
        if not p.data.flags.c_contiguous:   # a flat view needs contiguous memory
            p.data = backend.xp(p.data).ascontiguousarray(p.data)
        self.data = p.data.reshape(-1)[self.a:self.b]
        self.grad = None if p.grad is None else p.grad.reshape(-1)[self.a:self.b]

    @property
    def shape(self):
        return (self.b - self.a,)

    @property
    def dtype(self):
        return self.param.data.dtype


class ZeroOptimizer:
    """An AdamW or SGD whose state is split over the ranks (ZeRO stage 1).

    Flatten all parameters, in order, into one vector of P numbers; rank r owns the slice
    [r S, min((r + 1) S, P)), S = ceil(P / K). ``step`` updates the owned slice with the
    wrapped optimizer's rule (its state exists for that slice only), then all-gathers the
    slices so every rank has every updated weight. ``state_dict`` and ``load_state_dict``
    use the unsharded optimizer's names and shapes.
    """

    SLOTS = {optim.AdamW: ("m", "v"), optim.SGD: ("u",)}

    def __init__(self, optimizer, comm: Communicator):
        kind = type(optimizer)
        if kind not in self.SLOTS:
            raise TypeError(f"ZeRO-1 shards AdamW or SGD state, got {kind.__name__}; "
                            "use one of those or train without --zero1")
        dtypes = sorted({str(p.dtype) for _, p in optimizer.params})
        if len(dtypes) > 1:
            raise ValueError(f"ZeRO-1 needs every parameter in one dtype, got {', '.join(dtypes)}; "
                             "cast the model with model.astype(...) first")
        self.comm = comm
        self.kind, self.slots = kind, self.SLOTS[kind]
        self.params = optimizer.params
        self.lr = optimizer.lr
        self.step_count = optimizer.step_count
        if kind is optim.AdamW:
            self._hyper = dict(betas=(optimizer.beta1, optimizer.beta2), eps=optimizer.eps)
        else:
            self._hyper = dict(momentum=optimizer.momentum)
        self._hyper.update(weight_decay=optimizer.weight_decay, no_decay=optimizer.no_decay)
        self.sizes = [p.size for _, p in self.params]
        self.offsets = numpy.concatenate([[0], numpy.cumsum(self.sizes)]).astype(int).tolist()
        self.total = self.offsets[-1]
        self.shard = -(-self.total // comm.size)
        self.lo = min(self.total, comm.rank * self.shard)
        self.hi = min(self.total, self.lo + self.shard)
        self.pieces = []                    # (name, _Piece) this rank owns, in order
        for (name, p), start, n in zip(self.params, self.offsets, self.sizes):
            a, b = max(self.lo, start) - start, min(self.hi, start + n) - start
            if a < b:
                self.pieces.append((name, _Piece(p, a, b)))
        self.inner = self._new_inner()
        self._gathered = None               # (step_count, full state) on rank 0 after gather_state

    def _new_inner(self):
        if not self.pieces:
            return None
        inner = self.kind(self.pieces, lr=self.lr, **self._hyper)
        inner.step_count = self.step_count
        return inner

    def _follow_device(self) -> None:
        """Keep the state on the parameters' device (the model may move after construction)."""
        name, piece = self.pieces[0]
        device = backend.device_of(piece.data)
        for slot in self.slots:
            table = getattr(self.inner, slot)
            if backend.device_of(table[name]) != device:
                for key in table:
                    table[key] = backend.to_device(table[key], device)

    def zero_grad(self) -> None:
        for _, p in self.params:
            p.grad = None

    def step(self) -> None:
        self.step_count += 1
        if self.inner is not None:
            for _, piece in self.pieces:
                piece.refresh()
            self._follow_device()
            self.inner.lr = self.lr
            self.inner.step_count = self.step_count - 1
            self.inner.step()
        self._all_gather_parameters()

    def _flat_of_own(self, arrays, xp, dtype):
        """This rank's slice as one padded vector of length S, from per-piece ``arrays``."""
        out = xp.zeros(self.shard, dtype=dtype)
        at = 0
        for a in arrays:
            out[at:at + a.size] = a.reshape(-1)
            at += a.size
        return out

    def _all_gather_parameters(self) -> None:
        first = self.params[0][1].data
        xp = backend.xp(first)
        send = self._flat_of_own([piece.data for _, piece in self.pieces], xp, first.dtype)
        full = xp.empty(self.shard * self.comm.size, dtype=first.dtype)
        self.comm._gather_arrays(send, full, PARAMETERS, "zero1_allgather")
        for (_, p), start, n in zip(self.params, self.offsets, self.sizes):
            p.data[...] = full[start:start + n].reshape(p.data.shape)

    def state_bytes(self) -> int:
        """Bytes of optimizer state this rank holds."""
        if self.inner is None:
            return 0
        return sum(int(getattr(self.inner, s)[n].nbytes) for s in self.slots for n, _ in self.pieces)

    def gather_state(self, root: int = 0) -> None:
        """Collective: bring every rank's slice of the state to ``root`` for ``state_dict``."""
        dtype = numpy.dtype(self.params[0][1].data.dtype)
        k = len(self.slots)
        send = numpy.zeros(k * self.shard, dtype=dtype)
        for i, slot in enumerate(self.slots):
            own = [backend.to_numpy(getattr(self.inner, slot)[n]) for n, _ in self.pieces] if self.inner else []
            send[i * self.shard:(i + 1) * self.shard] = self._flat_of_own(own, numpy, dtype)
        recv = numpy.empty(self.comm.size * k * self.shard, dtype=dtype) if self.comm.rank == root else None
        self.comm._gather_to_root(send, recv, root, STATE)
        if self.comm.rank != root:
            self._gathered = None
            return
        by_rank = recv.reshape(self.comm.size, k, self.shard)
        state = {"step_count": numpy.asarray(self.step_count, dtype=numpy.int64)}
        for i, slot in enumerate(self.slots):
            flat = by_rank[:, i, :].reshape(-1)[:self.total]
            for (name, p), start, n in zip(self.params, self.offsets, self.sizes):
                state[f"{slot}.{name}"] = flat[start:start + n].reshape(p.shape).copy()
        self._gathered = (self.step_count, state)

    def state_dict(self) -> dict:
        """The whole (unsharded) state, on the rank that ran ``gather_state`` at this step."""
        if self._gathered is None or self._gathered[0] != self.step_count:
            raise RuntimeError("ZeroOptimizer.state_dict: the optimizer state is sharded over the ranks; "
                               "call gather_state() on every rank first (Trainer does this before saving) "
                               "and read it on rank 0")
        return self._gathered[1]

    def load_state_dict(self, state: dict) -> None:
        """Load an unsharded state (any rank count saved it) and keep this rank's slice."""
        expected = {f"{slot}.{name}": p for slot in self.slots for name, p in self.params}
        missing = sorted(set(expected) - set(state))
        if missing or "step_count" not in state:
            raise ValueError(f"optimizer state is missing {len(missing)} entries, e.g. {missing[:3]}; "
                             "was it saved for another model or another optimizer?")
        for key, p in expected.items():
            if tuple(state[key].shape) != tuple(p.shape):
                raise ValueError(f"optimizer state {key} has shape {tuple(state[key].shape)}, "
                                 f"the parameter has {tuple(p.shape)}")
        self.step_count = int(numpy.asarray(state["step_count"]).reshape(-1)[0])
        if self.inner is not None:
            own = {"step_count": state["step_count"]}
            for slot in self.slots:
                for name, piece in self.pieces:
                    own[f"{slot}.{name}"] = numpy.asarray(state[f"{slot}.{name}"]).reshape(-1)[piece.a:piece.b]
            self.inner.load_state_dict(own)
        self._gathered = None


# ---------------------------------------------------------------------------------------
# Threads per rank
# ---------------------------------------------------------------------------------------

def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def limit_threads_per_rank(ranks_on_node: int) -> dict:
    """Give BLAS, OpenMP and Numba cores // ranks_on_node threads each in this process.

    Left alone when the user set OMP_NUM_THREADS or OPENBLAS_NUM_THREADS. The libraries are
    usually loaded already (NumPy loads its BLAS on import), so besides the environment (for
    anything loaded later) their thread setters are called directly. Returns
    {library: threads} for what was set.
    """
    if ranks_on_node <= 1 or any(v in os.environ for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")):
        return {}
    n = max(1, available_cores() // ranks_on_node)
    for var in THREAD_VARIABLES:
        os.environ[var] = str(n)
    done = {}
    for path in _loaded_libraries():
        name = os.path.basename(path)
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for setter in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                       "openblas_set_num_threads64_", "openblas_set_num_threads",
                       "MKL_Set_Num_Threads", "omp_set_num_threads"):
            fn = getattr(lib, setter, None)
            if fn is not None:
                fn(ctypes.c_int(n))
                done[name] = n
                break
    if "numba" in sys.modules:
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        done["numba"] = n
    return done


def blas_threads() -> dict:
    """{library: threads} of the OpenBLAS libraries loaded in this process."""
    out = {}
    for path in _loaded_libraries():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for getter in ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
                       "openblas_get_num_threads64_", "openblas_get_num_threads"):
            fn = getattr(lib, getter, None)
            if fn is not None:
                out[os.path.basename(path)] = int(fn())
                break
    return out


def _loaded_libraries() -> list:
    """Shared libraries with a thread pool loaded in this process (Linux: from /proc/self/maps)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if ".so" in line}
    except OSError:
        return []
    keys = ("openblas", "libmkl_rt", "libgomp", "libomp", "libiomp")
    return sorted(p for p in paths if any(k in os.path.basename(p).lower() for k in keys))
