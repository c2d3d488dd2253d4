"""The data-parallel side of tests/dist: run under ``mpiexec -n K python -m tests.dist.worker``.

Scenarios (the first argument), each writing what the tests compare into the folder given
as the second:

- ``equivalence``: a tiny GPT trained for a few steps in each of CASES, weights saved per
  rank, the optimizer state saved by rank 0, plus what each rank saw (rows, target counts,
  BLAS threads, optimizer-state bytes); then the two cross-rank-count resume runs.
- ``stall``: rank 1 falls asleep inside step STALL_STEP; the other ranks must stop at the
  timeout, naming it.
- ``crash``: rank 1 raises inside a step; the job must end at once, not at the timeout.
- ``astray``: rank 1 skips a collective; the ranks must say they are out of step.
- ``nccl``: on GPUs (one per rank), with and without ZeRO-1, gradients through NCCL.

The same ``build`` makes the one-process reference runs in the tests themselves.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

import minitransformer as mt
from minitransformer import backend, dist, models, objectives
from minitransformer.models import count_targets
from minitransformer.train import TrainConfig, Trainer
from tests.train import markov

STREAM = markov.sample(markov.transition_matrix(0), 6_000, seed=3)
BATCH = 8                 # global batch: sequences per optimizer step
BLOCK = 16
STEPS = 6
RESUME_AT = 3
# name: (dtype, micro-batch size (0 = the rank's whole slice), ZeRO-1)
CASES = {
    "f64": ("float64", 2, False),
    "f64-zero1": ("float64", 2, True),
    "f32": ("float32", 0, False),
    "f32-zero1": ("float32", 0, True),
}
STALL_TIMEOUT = 4.0       # seconds the healthy rank waits
STALL_STEP = 5            # the step inside which rank 1 falls asleep
STALL_SLEEP = 600.0       # far longer than any test may take


class Ragged:
    """CLM batches whose rows end early, at a length drawn per (batch, row), padding after:
    ranks then hold different numbers of real target tokens."""

    def __init__(self, inner, seed: int):
        self.inner, self.seed = inner, seed

    def batch(self, index: int, batch_size: int, rows=None) -> dict:
        full = self.inner.batch(index, batch_size)
        T = full["input_ids"].shape[1]
        lengths = np.random.default_rng([self.seed, index]).integers(2, T + 1, size=batch_size)
        real = (np.arange(T)[None, :] < lengths[:, None]) & (full["attention_mask"] == 1)
        out = {"input_ids": np.where(real, full["input_ids"], markov.EOS),
               "attention_mask": real.astype(np.int64),
               "labels": np.where(real, full["labels"], -100)}
        return out if rows is None else {k: v[rows] for k, v in out.items()}


def build(out, dtype="float64", micro=0, steps=STEPS, save_every=0, comm=None, seed=0, lr=1e-2, device="cpu"):
    cfg = models.GPTConfig(vocab_size=markov.VOCAB, n_positions=BLOCK, n_embd=16, n_layer=1, n_head=2,
                           resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    mt.manual_seed(seed)
    model = models.build(cfg).astype(dtype).to(device)
    data = Ragged(objectives.CLMObjective(STREAM, BLOCK, eos_id=markov.EOS, seed=seed), seed)
    val = objectives.CLMObjective(STREAM[:800], BLOCK, eos_id=markov.EOS, seed=seed + 1, shuffle=False)
    tc = TrainConfig(objective="clm", steps=steps, batch_size=BATCH, micro_batch_size=micro, lr=lr, warmup=2,
                     eval_every=0, eval_batches=1, save_every=save_every, seed=seed, device=device)
    return Trainer(model, data, val, tc, out, comm=comm)


def weights(trainer) -> dict:
    return {k: np.array(backend.to_numpy(v)) for k, v in trainer.model.state_dict().items()}


def equivalence(folder: Path) -> None:
    comm = dist.init(timeout=120.0)
    r = comm.rank
    info = {"size": comm.size, "local_size": comm.local_size, "limited": comm.threads,
            "blas_threads": dist.blas_threads(), "rows": comm.row_range(BATCH), "cases": {}}
    probe = build(folder / "probe").train_data
    lo, hi = comm.row_range(BATCH)
    info["targets"] = [count_targets(probe.batch(s, BATCH, rows=slice(lo, hi))) for s in range(STEPS)]
    for name, (dtype, micro, zero1) in CASES.items():
        comm.zero1 = zero1
        t = build(folder / name, dtype, micro, comm=comm)
        t.fit()
        np.savez(folder / f"{name}-rank{r}.npz", **weights(t))
        case = {"optimizer": type(t.optimizer).__name__}
        if zero1:
            case["state_bytes"] = t.optimizer.state_bytes()
        if r == 0:
            np.savez(folder / f"{name}-optimizer.npz", **t.optimizer.state_dict())
        elif zero1:
            try:
                t.optimizer.state_dict()
                case["state_dict_off_root"] = "returned"
            except RuntimeError:
                case["state_dict_off_root"] = "refused"
        info["cases"][name] = case

    # Resume across rank counts: K ranks stop at RESUME_AT for one process to finish ...
    comm.zero1 = False
    build(folder / "from-k", comm=comm, micro=2).fit(until=RESUME_AT)
    # ... and K ranks (ZeRO-1: each loads its slice of the state) finish what one process started.
    comm.zero1 = True
    t = build(folder / "from-1", comm=comm, micro=2)
    info["resumed_from_1_at"] = t.step if t.resume() else None
    t.fit()
    np.savez(folder / f"from-1-rank{r}.npz", **weights(t))
    stats = comm.stats["grad_allreduce"]
    info["grad_allreduce"] = {"calls": stats["calls"], "bytes": stats["bytes"]}
    (folder / f"info-rank{r}.json").write_text(json.dumps(info))


class Stalling:
    """Wraps a batch source; on ``rank`` it sleeps when asked for batch ``step``."""

    def __init__(self, inner, rank: int, step: int):
        self.inner, self.rank, self.step = inner, rank, step

    def batch(self, index, batch_size, rows=None):
        if index == self.step and self.rank == 1:
            print(f"rank 1 stalls inside step {index}", file=sys.stderr, flush=True)
            time.sleep(STALL_SLEEP)
        return self.inner.batch(index, batch_size, rows)


def stall(folder: Path) -> None:
    comm = dist.init(timeout=STALL_TIMEOUT)
    t = build(folder / "run", steps=50, save_every=2, comm=comm)
    t.train_data = Stalling(t.train_data, comm.rank, STALL_STEP)
    try:
        t.fit()
    except dist.RankTimeout as e:
        print(f"rank {comm.rank} stopped: {e}", file=sys.stderr, flush=True)
        comm.abort(3)
    print(f"rank {comm.rank}: no timeout happened", file=sys.stderr, flush=True)


class Breaking:
    """Wraps a batch source; on rank 1 it raises when asked for batch ``step``."""

    def __init__(self, inner, rank: int, step: int):
        self.inner, self.rank, self.step = inner, rank, step

    def batch(self, index, batch_size, rows=None):
        if index == self.step and self.rank == 1:
            raise RuntimeError(f"rank 1 breaks inside step {index}")
        return self.inner.batch(index, batch_size, rows)


def crash(folder: Path) -> None:
    comm = dist.init(timeout=STALL_SLEEP)        # only the abort on an uncaught exception can end it soon
    t = build(folder / "run", steps=50, comm=comm)
    t.train_data = Breaking(t.train_data, comm.rank, 2)
    t.fit()


def astray(folder: Path) -> None:
    comm = dist.init(timeout=STALL_SLEEP)
    if comm.rank == 0:
        comm.sum_int(1)
    comm.barrier()


def nccl(folder: Path) -> None:
    comm = dist.init(timeout=120.0, device="cuda")
    for name, zero1 in (("cuda", False), ("cuda-zero1", True)):
        comm.zero1 = zero1
        t = build(folder / name, micro=2, comm=comm, device="cuda")
        t.fit()
        np.savez(folder / f"{name}-rank{comm.rank}.npz", **weights(t))
    info = {"nccl": comm.uses_nccl, "stats": comm.stats}
    (folder / f"info-rank{comm.rank}.json").write_text(json.dumps(info))


if __name__ == "__main__":
    scenario, where = sys.argv[1], Path(sys.argv[2])
    {"equivalence": equivalence, "stall": stall, "crash": crash, "astray": astray, "nccl": nccl}[scenario](where)
