"""One process: the communicator of a run that is not data-parallel.

Every collective is the identity (a sum over one rank is the value itself, a gather to rank 0
is a copy), so a training loop calls the same methods whether it runs alone or as one rank
of K, and holds no "am I distributed?" branches.
"""
from __future__ import annotations

from minitransformer.dist.communicator import TARGETS


class SingleProcess:
    """The communicator of a run that is not data-parallel: every collective is the identity."""

    rank, size, local_rank, local_size = 0, 1, 0, 1
    distributed = False
    zero1 = False
    uses_nccl = False

    def __init__(self):
        self.stats: dict = {}
        self.threads = None

    def row_range(self, batch_size: int) -> tuple[int, int]:
        return 0, batch_size

    def sum_int(self, n: int, what: str = TARGETS, timeout=None) -> int:
        return int(n)

    def max_int(self, n: int, what: str = TARGETS, timeout=None) -> int:
        return int(n)

    def sum_float(self, x: float) -> float:
        return float(x)

    def sum_arrays(self, buffers, what=None, kind=None) -> None:
        pass

    def all_gather(self, send, recv, what=None, kind=None) -> None:
        recv[...] = send

    def gather(self, send, recv, root: int = 0, what=None) -> None:
        recv[...] = send

    def broadcast(self, array, root: int = 0, what=None) -> None:
        pass

    def allreduce_gradients(self, model) -> None:
        pass

    def barrier(self, timeout=None) -> None:
        pass

    def wrap_optimizer(self, optimizer):
        return optimizer

    def gather_optimizer_state(self, optimizer) -> None:
        pass

    def select_device(self, device: str = "cuda") -> None:
        pass

    def abort(self, code: int = 1):
        raise SystemExit(code)
