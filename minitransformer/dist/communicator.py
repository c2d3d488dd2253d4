"""The communicator: collectives over K MPI processes, each guarded by a deadline.

Data parallelism needs few collectives: integer and float sums (the target count and the
loss of a step), sums of arrays in place (the gradient buckets), all-gathers and a gather to
one rank (ZeRO-1), a broadcast (the NCCL set-up) and a barrier. NumPy arrays travel through
MPI; CuPy arrays through NCCL when CuPy has it (``nccl.py``), else staged through host memory.

Stalls. MPI has no timeouts: a collective waits forever for a rank that never comes. Here
every collective is non-blocking and polled against a deadline, and each rank, as it enters
a collective, posts a tiny "arrived" message to every other rank. When the deadline passes,
the ranks whose message is missing are the ones named in the error (``RankTimeout``). An
abandoned collective leaves MPI in an undefined state, so the job must then end: the CLI
prints the message and aborts the whole job (``Communicator.abort``). The arrival notes also
carry which collective each rank is in, so ranks that run different steps are told so
instead of exchanging the wrong buffers.

mpi4py is imported only when a ``Communicator`` is built.
"""
from __future__ import annotations

import os
import sys
import time
import zlib

import numpy

from minitransformer import backend
from minitransformer.dist import nccl
from minitransformer.dist.buckets import BucketLayout
from minitransformer.dist.zero import PARAMETERS, STATE, ZeroOptimizer

DEFAULT_TIMEOUT = 600.0       # seconds a rank waits for the others at one collective
DEFAULT_BUCKET_MB = 25.0      # gradient bucket size (the same default as PyTorch's DDP)
_ARRIVE_TAG = 7

# What each collective is called in messages (a rank out of step is told what the others are in).
TARGETS = "the target-count all-reduce"
LOSS = "the loss all-reduce"
BARRIER = "a barrier"
GRADIENTS = "the gradient all-reduce"
STOP = "the stop-signal all-reduce"
SAVED = "the end of a checkpoint save"
_NAMES = {zlib.crc32(w.encode()): w
          for w in (TARGETS, LOSS, BARRIER, GRADIENTS, STOP, SAVED, PARAMETERS, STATE, nccl.NCCL_SETUP)}


class RankTimeout(RuntimeError):
    """Some rank did not reach a collective in time; ``ranks`` are the ones that did not arrive."""

    def __init__(self, message: str, ranks=()):
        super().__init__(message)
        self.ranks = tuple(ranks)


def split_rows(batch_size: int, size: int, rank: int) -> tuple[int, int]:
    """Rows [lo, hi) of a global batch that ``rank`` of ``size`` takes: contiguous slices whose
    lengths differ by at most one, covering the batch exactly once."""
    if batch_size < size:
        raise ValueError(f"a global batch of {batch_size} sequences cannot be split over {size} ranks; "
                         f"use a batch size of at least {size} (--batch-size) or fewer ranks")
    base, extra = divmod(batch_size, size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


class Communicator:
    """Collectives over the ranks of an MPI communicator, each guarded by a timeout.

    What a training loop calls: ``row_range``, ``sum_int``, ``max_int``, ``sum_float``,
    ``allreduce_gradients``, ``barrier``, ``wrap_optimizer``, ``gather_optimizer_state``.
    What the sharded optimizer and the NCCL set-up call: ``sum_arrays``, ``all_gather``,
    ``gather``, ``broadcast`` (each names its collective for the messages).
    ``stats`` accumulates, per kind of collective, calls, bytes, the seconds spent waiting
    for the other ranks to arrive, and the seconds from then until done (the transfer).
    """

    distributed = True

    def __init__(self, mpi_comm, timeout: float | None = DEFAULT_TIMEOUT, zero1: bool = False,
                 bucket_mb: float = DEFAULT_BUCKET_MB, gpu_backend: str = "auto"):
        from mpi4py import MPI

        if timeout is not None and not timeout > 0:
            raise ValueError("the data-parallel timeout must be a positive number of seconds (or None), "
                             f"got {timeout!r}")
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

    def max_int(self, n: int, what: str, timeout="default") -> int:
        """The largest ``n`` of all ranks (e.g. the stop signal one rank received: every rank
        then stops after the same step)."""
        buf = numpy.array([n], dtype=numpy.int64)
        self._collective(what, "scalars",
                         self._mpi(lambda: [self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.MAX)]),
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
    def sum_arrays(self, buffers, what, kind) -> None:
        """Sum each buffer (NumPy or CuPy) in place over the ranks: one message per buffer."""
        nbytes = sum(b.nbytes for b in buffers)
        if type(buffers[0]) is numpy.ndarray:
            self._collective(what, kind, self._mpi(
                lambda: [self.comm.Iallreduce(self.MPI.IN_PLACE, b, op=self.MPI.SUM) for b in buffers]), nbytes)
        elif self._use_nccl(buffers[0]):
            self._collective(what, kind, lambda: self._nccl.allreduce(buffers), nbytes)
        else:                               # device arrays without NCCL: through host memory
            host = [backend.to_numpy(b) for b in buffers]
            self.sum_arrays(host, what, kind)
            for b, h in zip(buffers, host):
                b[...] = backend.xp(b).asarray(h)

    def all_gather(self, send, recv, what, kind) -> None:
        """All-gather: ``recv`` (K times ``send``'s length) holds every rank's ``send``, in rank order."""
        if type(send) is numpy.ndarray:
            self._collective(what, kind, self._mpi(lambda: [self.comm.Iallgather(send, recv)]), recv.nbytes)
        elif self._use_nccl(send):
            self._collective(what, kind, lambda: self._nccl.allgather(send, recv), recv.nbytes)
        else:
            host = backend.to_numpy(recv).copy()
            self.all_gather(backend.to_numpy(send), host, what, kind)
            recv[...] = backend.xp(recv).asarray(host)

    def gather(self, send, recv, root: int, what) -> None:
        """Gather host arrays to ``root`` (``recv`` is used there only)."""
        self._collective(what, "state_gather", self._mpi(
            lambda: [self.comm.Igather(send, recv if self.rank == root else None, root=root)]),
            send.nbytes * self.size)

    def broadcast(self, array, root: int, what: str) -> None:
        """Copy the host array ``array`` of rank ``root`` into ``array`` on every rank."""
        self._collective(what, "setup", self._mpi(lambda: [self.comm.Ibcast(array, root=root)]))

    # ------------------------------------------------------------------ gradients
    def _buckets(self, params) -> BucketLayout:
        key = BucketLayout.key(params)
        layout = self._layouts.get(key)
        if layout is None:
            layout = self._layouts[key] = BucketLayout(params, self.bucket_bytes)
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
        self.sum_arrays(layout.buffers, GRADIENTS, "grad_allreduce")
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
            if not nccl.available():
                if self.gpu_backend == "nccl":
                    raise RuntimeError("gpu_backend='nccl' but CuPy finds no NCCL; install it with "
                                       "pip install -e \".[nccl]\", or use gpu_backend='mpi'")
                if self.size > 1:
                    nccl.warn_host_fallback()
                self.gpu_backend = "mpi"
                return False
            self._nccl = nccl.Nccl(self)
        return True

    @property
    def uses_nccl(self) -> bool:
        """True once CuPy arrays travel through NCCL (set up at the first GPU collective)."""
        return self._nccl is not None


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
