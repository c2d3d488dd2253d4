"""GPU to GPU: sums and gathers of CuPy arrays through NCCL (``cupy.cuda.nccl``).

One GPU per rank. NCCL's own communicator is set up over MPI: rank 0 draws a unique id and
broadcasts it, then every rank joins with (ranks, id, rank). Each operation is queued on the
current CUDA stream and returns a "done?" function, which the communicator polls against its
deadline like any other collective.
"""
from __future__ import annotations

import warnings

import numpy

NCCL_SETUP = "the NCCL set-up"


class HostFallbackWarning(RuntimeWarning):
    """A multi-GPU run sends its gradients through host memory: NCCL is missing."""


def available() -> bool:
    """True when CuPy finds NCCL (``cupy.cuda.nccl`` imports and says it is available)."""
    try:
        from cupy.cuda import nccl
    except ImportError:
        return False
    return bool(getattr(nccl, "available", True))


_warned = False


def warn_host_fallback() -> None:
    """Say once per process that GPU gradients will travel through host memory.

    Without NCCL every all-reduce copies each gradient bucket from the GPU to the host, sums
    it over MPI, and copies it back: correct, but the copies wait for the GPU, and the sums
    run at network and PCIe speed instead of GPU to GPU.
    """
    global _warned
    if _warned:
        return
    _warned = True
    warnings.warn(
        "data parallelism on GPUs without NCCL: CuPy finds no NCCL library, so gradients travel "
        "through host memory (GPU -> host -> MPI -> host -> GPU) at every step, which is slow; "
        "install it with pip install -e \".[nccl]\" (the nvidia-nccl-cu12 wheel), or pass "
        "gpu_backend='mpi' to choose the host path and silence this",
        HostFallbackWarning, stacklevel=3)


class Nccl:
    """Sums and gathers of CuPy arrays through NCCL, on the current CUDA stream.

    ``comm`` is the MPI communicator that sets it up (``rank``, ``size`` and ``broadcast``).
    """

    def __init__(self, comm):
        import cupy
        from cupy.cuda import nccl

        self.cupy, self.nccl = cupy, nccl
        uid = numpy.zeros(nccl.NCCL_UNIQUE_ID_BYTES if hasattr(nccl, "NCCL_UNIQUE_ID_BYTES") else 128,
                          dtype=numpy.int64)
        if comm.rank == 0:
            uid[:] = nccl.get_unique_id()
        comm.broadcast(uid, 0, NCCL_SETUP)
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
        """Sum each buffer in place over the ranks; returns a 'done?' function."""
        stream = self.cupy.cuda.get_current_stream().ptr
        for b in buffers:
            self.comm.allReduce(b.data.ptr, b.data.ptr, b.size, self._type(b), self.nccl.NCCL_SUM, stream)
        return self._launched()

    def allgather(self, send, recv):
        """``recv`` (K times ``send``'s length) gets every rank's ``send``; returns a 'done?' function."""
        stream = self.cupy.cuda.get_current_stream().ptr
        self.comm.allGather(send.data.ptr, recv.data.ptr, send.size, self._type(send), stream)
        return self._launched()

    def abort(self):
        try:
            self.comm.abort()
        except Exception:  # already broken: nothing more to release
            pass
