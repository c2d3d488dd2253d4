"""Throughput of data-parallel training.

    python -m benchmarks.bench_dist                      # one process
    mpiexec -n 2 python -m benchmarks.bench_dist         # two ranks, the same global batch

Trains gpt-tiny shapes on a uniform random token stream (no tokenizer) and prints one
JSON line from rank 0: global tokens/s over the timed steps (after warm-up steps that
compile the kernels), and per step the gradient all-reduce's time split into waiting for
the other ranks to arrive and the transfer itself, plus a bare all-reduce of the same
bytes timed on its own (all ranks in step) for comparison.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--zero1", action="store_true")
    ap.add_argument("--label", default="")
    args = ap.parse_args()

    import tempfile

    import minitransformer as mt
    from minitransformer import dist, models, objectives
    from minitransformer.train import TrainConfig, Trainer

    comm = dist.init(timeout=300.0, zero1=args.zero1)
    cfg = models.preset("gpt-tiny")
    stream = np.random.default_rng(0).integers(0, cfg.vocab_size, size=400_000)
    data = objectives.CLMObjective(stream, args.block_size, eos_id=0, seed=0)
    mt.manual_seed(0)
    model = models.build(cfg)
    steps = args.warmup + args.steps
    tc = TrainConfig(objective="clm", steps=steps + 1, batch_size=args.batch_size, lr=1e-3, warmup=2,
                     eval_every=0, save_every=0, seed=0)
    out = tempfile.mkdtemp()
    trainer = Trainer(model, data, data, tc, out, comm=comm if comm.distributed else None)

    for _ in range(args.warmup):
        trainer.train_step()
    comm.barrier()
    before = dict(comm.stats.get("grad_allreduce", {}))
    t0 = time.perf_counter()
    for _ in range(args.steps):
        trainer.train_step()
    comm.barrier()
    elapsed = time.perf_counter() - t0
    result = {"label": args.label, "ranks": comm.size, "zero1": args.zero1,
              "threads": dist.blas_threads(), "params": model.num_parameters(),
              "tokens_per_s": args.batch_size * args.block_size * args.steps / elapsed,
              "step_ms": 1e3 * elapsed / args.steps}
    if comm.distributed:
        after = comm.stats["grad_allreduce"]
        n = after["calls"] - before.get("calls", 0)
        result["grad_allreduce_ms_per_step"] = {
            "wait_for_peers": 1e3 * (after["wait_s"] - before.get("wait_s", 0.0)) / n,
            "transfer": 1e3 * (after["transfer_s"] - before.get("transfer_s", 0.0)) / n,
            "MB": (after["bytes"] - before.get("bytes", 0)) / n / 2 ** 20}
        # the same bytes, all ranks already waiting: the cost of the transfer alone
        bufs = [np.ones(p.size, dtype=p.dtype) for p in model.parameters()]
        flat = np.concatenate([b.ravel() for b in bufs])
        times = []
        for _ in range(10):
            comm.barrier()
            t = time.perf_counter()
            comm._sum_arrays([flat], "a benchmark all-reduce", "bench")
            times.append(time.perf_counter() - t)
        result["bare_allreduce_ms"] = 1e3 * float(np.median(times))
        if args.zero1:
            z = comm.stats.get("zero1_allgather", {"transfer_s": 0.0, "wait_s": 0.0, "calls": 1})
            result["zero1_allgather_ms_per_step"] = 1e3 * (z["transfer_s"] + z["wait_s"]) / max(z["calls"], 1)
    if comm.rank == 0:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
