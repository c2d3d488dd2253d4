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

That sum is an all-reduce of the gradients, packed into a few large buckets. Afterwards
every rank holds the same gradient, clips it by the same norm and takes the same optimizer
step, so the replicas stay identical without ever sending weights. (The buckets are reduced
after the backward pass, not overlapped with it: overlap needs a "this gradient is final"
hook in the autograd engine, which it does not have, and on a CPU whose cores all compute it
would gain nothing.) Checkpoints are written by rank 0 only, between collectives, and
atomically, so the last one stays good; a sum over the ranks after each save tells every
rank whether it worked.

Stopping. ``mpiexec`` passes a SIGTERM or Ctrl-C on to every rank, but not at the same
instant, and it ends the whole job as soon as one rank exits. So before every step the ranks
take the largest stop signal any of them received (``max_int``, one all-reduce of one
integer): all stop after the same step, rank 0 saves it, and all exit once the save is done.

Reading order, one concept per module:

- ``threads``: each rank's share of the cores for BLAS, OpenMP and Numba.
- ``buckets``: gradients packed into a few flat buffers, one message each.
- ``nccl``: sums and gathers of CuPy arrays GPU to GPU.
- ``zero``: ZeRO stage 1, the optimizer state sharded over the ranks.
- ``communicator``: the collectives over MPI, each under a deadline that names a stalled rank.
- ``single``: the same interface for one process, every collective the identity.
- ``launch``: ``init``, the communicator of this process, whichever way it was started.
"""
from minitransformer.dist.buckets import BucketLayout
from minitransformer.dist.communicator import (
    BARRIER, DEFAULT_BUCKET_MB, DEFAULT_TIMEOUT, GRADIENTS, LOSS, SAVED, STOP, TARGETS, Communicator, RankTimeout,
    split_rows,
)
from minitransformer.dist.launch import LAUNCHER_VARIABLES, init, launched_under_mpi
from minitransformer.dist.nccl import NCCL_SETUP, Nccl
from minitransformer.dist.single import SingleProcess
from minitransformer.dist.threads import (
    THREAD_VARIABLES, available_cores, blas_threads, limit_threads_per_rank, set_blas_threads,
)
from minitransformer.dist.zero import PARAMETERS, STATE, ZeroOptimizer

__all__ = [
    "init", "launched_under_mpi", "split_rows", "Communicator", "SingleProcess", "RankTimeout", "ZeroOptimizer",
    "BucketLayout", "Nccl", "available_cores", "blas_threads", "set_blas_threads", "limit_threads_per_rank",
    "LAUNCHER_VARIABLES", "THREAD_VARIABLES", "DEFAULT_TIMEOUT", "DEFAULT_BUCKET_MB",
    "TARGETS", "LOSS", "BARRIER", "GRADIENTS", "STOP", "SAVED", "PARAMETERS", "STATE", "NCCL_SETUP",
]
