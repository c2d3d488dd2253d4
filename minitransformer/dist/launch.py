"""Starting data parallelism: was this process started by an MPI launcher, and its communicator.

``init`` is the one entry point: under ``mpiexec`` it builds a ``Communicator`` over every
rank (even just one), limits each rank's threads to its share of the node's cores and picks
its GPU; otherwise it returns a ``SingleProcess``, so one script runs either way. mpi4py is
optional (the ``dist`` extra): nothing imports it until ``init`` finds a launcher.
"""
from __future__ import annotations

import os

from minitransformer.dist.communicator import DEFAULT_BUCKET_MB, DEFAULT_TIMEOUT, Communicator
from minitransformer.dist.single import SingleProcess
from minitransformer.dist.threads import limit_threads_per_rank

# Set by MPI launchers in every process they start (MPICH/Intel MPI, Open MPI, PMIx, MVAPICH).
LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE")


def launched_under_mpi(environ=None) -> bool:
    """True when an MPI launcher (mpiexec, mpirun, srun with PMI) started this process."""
    env = os.environ if environ is None else environ
    return any(name in env for name in LAUNCHER_VARIABLES)


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
