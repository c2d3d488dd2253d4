"""``minitransformer pretrain``: train a model from scratch on text, with one command."""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

from minitransformer import backend
from minitransformer.cli import (
    CLIError, Setting, check_device, config_changes, config_file, non_negative_int, number, positive_float,
    positive_int, progress_bar,
)

EXAMPLES = """examples:
  minitransformer pretrain                                  # tiny GPT on the built-in corpus (~1.5 min on 2 cores)
  minitransformer pretrain --objective mlm --steps 300      # tiny BERT, masked LM
  minitransformer pretrain --objective span --data docs/    # tiny T5, span corruption, your .txt files
  minitransformer pretrain --out runs/a --steps 400         # ... later, continue the same run:
  minitransformer pretrain --out runs/a --steps 800 --resume
  mpiexec -n 2 minitransformer pretrain --out runs/b   # data-parallel over 2 processes (same global batch)
  mpiexec -n 4 minitransformer pretrain --zero1        # ... with the optimizer state sharded over 4
"""


def register(sub) -> None:
    p = sub.add_parser("pretrain", help="pre-train a GPT, BERT or T5 model from scratch",
                       description="Pre-train a model from scratch: tokenizer, data, objective, training loop, "
                                   "checkpoints. Ctrl-C, SIGTERM or SIGHUP finish the step, save it and "
                                   "stop; --resume continues.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    from minitransformer import families

    p.add_argument("--objective", choices=families.OBJECTIVES, default="clm",
                   help="clm: next-token (GPT); mlm: masked tokens (BERT); span: span corruption (T5)")
    p.add_argument("--data", nargs="+", metavar="PATH",
                   help=".txt/.jsonl files or folders (default: the built-in corpus of stdlib docstrings)")
    p.add_argument("--preset", help="model preset (default: the objective's tiny model: gpt-tiny, bert-tiny, t5-tiny)")
    p.add_argument("--steps", type=positive_int, default=None, help="total optimizer steps of the run")
    p.add_argument("--batch-size", type=positive_int, default=16, help="sequences per optimizer step")
    p.add_argument("--micro-batch-size", type=non_negative_int, default=0,
                   help="sequences per forward pass (accumulate)")
    p.add_argument("--block-size", type=positive_int, default=128, help="tokens per sequence (encoder inputs for T5)")
    p.add_argument("--vocab-size", type=positive_int, default=4096, help="BPE vocabulary size")
    p.add_argument("--lr", type=positive_float, default=None, help="peak learning rate")
    p.add_argument("--warmup", type=non_negative_int, default=30)
    p.add_argument("--schedule", choices=["cosine", "linear", "inverse-sqrt"], default="cosine")
    p.add_argument("--eval-every", type=non_negative_int, default=100)
    p.add_argument("--save-every", type=non_negative_int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--out", help="run folder (default: runs/<preset>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out up to --steps")
    p.add_argument("--keep-best", action="store_true",
                   help="also keep the checkpoint of the lowest validation loss, in OUT/checkpoints/best")
    p.add_argument("--early-stop", type=non_negative_int, default=0, metavar="N",
                   help="stop (saved) after N evaluations in a row without a lower validation loss (0: never)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--zero1", action="store_true",
                   help="under mpiexec: shard the optimizer state over the ranks (ZeRO stage 1)")
    p.add_argument("--dist-timeout", type=float, default=600.0, metavar="SECONDS",
                   help="under mpiexec: how long a rank waits for the others at a collective before "
                        "the job stops, naming the missing rank (default 600)")
    config_file(p, file_only_settings())
    p.set_defaults(func=run)


def file_only_settings() -> tuple:
    """What only a --config file sets: the optimizer's settings and changes to the model's size."""
    from minitransformer.train import TrainConfig

    d = TrainConfig()
    return (Setting("weight_decay", d.weight_decay, number(0.0), "AdamW's decoupled weight decay"),
            Setting("beta1", d.beta1, number(0.0, 1.0, high_open=True), "AdamW's first-moment decay"),
            Setting("beta2", d.beta2, number(0.0, 1.0, high_open=True), "AdamW's second-moment decay"),
            Setting("grad_clip", d.grad_clip, number(0.0), "max global gradient norm (0 = off)"),
            Setting("model", {}, model_changes, 'changes to the preset\'s config, e.g. {"n_layer": 2, "n_embd": 64}'))


TOKENIZER_FIELDS = ("vocab_size", "pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id")


def model_changes(changes, args) -> dict:
    """A config file's ``model`` object: fields of the preset's config, checked before any work."""
    from minitransformer import models, recipes

    base = models.preset(recipes.check_objective(args.objective, args.preset))
    changes = config_changes(changes, base, {f: "the tokenizer sets it (vocab_size: --vocab-size)"
                                             for f in TOKENIZER_FIELDS})
    for name in ("n_positions", "max_position_embeddings"):
        if changes.get(name, args.block_size) < args.block_size:
            raise ValueError(f"{name} ({changes[name]}) must be at least block_size ({args.block_size})")
    return changes


DEFAULT_STEPS = {"clm": 400, "mlm": 400, "span": 400}


def run(args) -> int:
    from minitransformer import dist

    check_device(args.device)
    if not args.dist_timeout > 0:
        raise CLIError(f"--dist-timeout must be a positive number of seconds, got {args.dist_timeout:g}")
    # Under mpiexec: one process per rank, each on its rows of every batch; only rank 0
    # prints, draws the progress bar and writes files. Otherwise one process, whose
    # communicator does nothing.
    comm = dist.init(timeout=args.dist_timeout, zero1=args.zero1, device=args.device)
    if comm.distributed and args.batch_size < comm.size:
        raise CLIError(f"--batch-size {args.batch_size} is the global batch and cannot be split over "
                       f"{comm.size} ranks; use --batch-size {comm.size} or more")
    say = print if comm.rank == 0 else (lambda *a, **k: None)
    preset, out = check_run_folder(args)
    with contextlib.ExitStack() as held:
        if not own_run_folder(comm, out, held):
            return 2                        # rank 0 has said who holds it
        if (out / "latest").exists() and not args.resume:      # checked once the folder is ours
            raise CLIError(f"{out} already holds a run; pass --resume to continue it, or --out NEW_FOLDER")
        backend.keep_freed_memory()         # each step reuses the last one's memory (no page faults)
        return train(args, comm, say, preset, out)


def own_run_folder(comm, out: Path, held: contextlib.ExitStack) -> bool:
    """Rank 0 takes the run folder for the whole run (``jobs.own``: a second job writing into
    it is refused, naming the holder); the other ranks learn whether it could, and stop quietly
    if not. True when this job owns it."""
    from minitransformer import jobs

    if comm.rank != 0:
        return not comm.sum_int(0, "the run-folder lock", timeout=None)
    refused = True
    try:
        held.enter_context(jobs.own(out))
        refused = False
    finally:
        comm.sum_int(int(refused), "the run-folder lock", timeout=None)
    return True


def train(args, comm, say, preset: str, out: Path) -> int:
    """Prepare the data, build (or resume) the trainer and run it; the exit status."""
    cfg = train_config(args)
    t0 = time.perf_counter()
    say(f"preparing data and tokenizer ({args.vocab_size} tokens) ...", flush=True)
    trainer = build_trainer(args, comm, preset, out, cfg)
    if trainer is None:
        return 2                            # rank 0 has printed why
    if args.resume:
        trainer.resume()
        say(f"resuming {out} at step {trainer.step} of {cfg.steps}", flush=True)
    say(f"{preset}: {trainer.model.num_parameters():,} parameters; {cfg.steps} steps of {cfg.batch_size} x "
        f"{args.block_size} tokens; saving to {out}", flush=True)
    if comm.distributed:
        say(f"data-parallel over {comm.size} ranks ({cfg.batch_size // comm.size}"
            f"{'+' if cfg.batch_size % comm.size else ''} sequences each)"
            f"{', ZeRO-1 optimizer sharding' if args.zero1 else ''}", flush=True)
    result = fit(trainer, comm, out, progress=not args.no_progress and comm.rank == 0)
    if isinstance(result, int):
        return result                       # stopped by a signal (the last step saved) or a failed save
    if comm.rank != 0:
        return 0
    if result["stopped_early"]:
        print(early_stop_line(result, cfg, out))
    minutes = (time.perf_counter() - t0) / 60
    print(f"done in {minutes:.1f} min: step {result['step']}, "
          f"validation loss {result.get('val_loss', float('nan')):.3f} "
          f"(perplexity {result.get('val_ppl', float('nan')):.1f})")
    print(f"checkpoint: {out}/latest -> {(out / 'latest').read_text().strip()}")
    print("sample:", show_sample(trainer.model, trainer.tokenizer))
    return 0


def early_stop_line(result: dict, cfg, out: Path) -> str:
    """Why the run stopped before its last step, and where its best checkpoint is."""
    best = result["best"]
    line = (f"stopped early at step {result['step']} of {cfg.steps}: no lower validation loss in "
            f"{cfg.early_stop} evaluation{'s' if cfg.early_stop > 1 else ''}")
    if best is None:
        return line + " (none was finite)"
    where = f"kept in {out}/checkpoints/best" if cfg.keep_best else "not kept: add --keep-best to keep it"
    return line + f"; the best, {best['val_loss']:.4f} at step {best['step']}, is {where}"


def check_run_folder(args) -> tuple[str, Path]:
    """(preset, run folder) after checking the data paths and, with --resume, that there is a
    run to continue (before the folder is made: a mistake leaves none behind)."""
    from minitransformer import recipes

    if args.data:
        for path in args.data:
            if not Path(path).exists():
                raise CLIError(f"data path {path} does not exist; give .txt/.jsonl files or folders")
    preset = recipes.check_objective(args.objective, args.preset)
    out = Path(args.out or f"runs/{preset}")
    if args.resume and not (out / "latest").exists():
        raise CLIError(f"--resume: {out} has no checkpoint to resume from")
    return preset, out


def train_config(args):
    """The TrainConfig the arguments ask for (the objective's defaults where they are silent)."""
    from minitransformer import families
    from minitransformer.train import TrainConfig

    cfg = TrainConfig(
        objective=args.objective, steps=args.steps or DEFAULT_STEPS[args.objective],
        batch_size=args.batch_size, micro_batch_size=args.micro_batch_size,
        lr=args.lr or families.by_objective(args.objective).lr, warmup=args.warmup, schedule=args.schedule,
        eval_every=args.eval_every, save_every=args.save_every, seed=args.seed, device=args.device,
        weight_decay=args.weight_decay, beta1=args.beta1, beta2=args.beta2, grad_clip=args.grad_clip,
        keep_best=args.keep_best, early_stop=args.early_stop)
    if cfg.early_stop and not cfg.eval_every:
        raise CLIError(f"--early-stop {cfg.early_stop} counts evaluations, but --eval-every 0 evaluates only at "
                       "the end; give --eval-every N as well")
    return cfg


def build_trainer(args, comm, preset: str, out: Path, cfg):
    """The trainer of this rank, over ``comm``; None on the other ranks when rank 0 failed.

    Rank 0 builds first, filling the tokenizer and token caches that the others then read;
    a sum over the ranks tells them whether it worked (one process: nothing to tell).
    """
    from minitransformer import recipes

    def build():
        return recipes.build_run(args.objective, args.data, preset, out, vocab_size=args.vocab_size,
                                 block_size=args.block_size, train_config=cfg, model_overrides=args.model)

    trainer = None
    if comm.rank == 0:
        try:
            trainer = build()
        finally:                            # the others learn whether it worked, and stop if not
            comm.sum_int(int(trainer is None), "the end of data preparation", timeout=None)
    elif comm.sum_int(0, "the end of data preparation", timeout=None):
        return None
    else:
        trainer = build()
    trainer.distribute(comm)
    return trainer


def fit(trainer, comm, out: Path, progress: bool):
    """Run ``trainer`` to its last step with a progress bar; the final metrics, or the exit
    status when a signal stopped it (the last step saved: 128 + the signal's number) or, on a
    rank other than 0, when rank 0 could not save (rank 0 raises, and says why). A stalled
    rank ends the whole job, the last checkpoint kept."""
    from minitransformer import checkpoint, dist, jobs
    from minitransformer.train import NonFiniteLoss

    cfg = trainer.cfg
    bar = None
    if progress:
        bar = progress_bar(cfg.steps, trainer.step)

    def show(m):
        if bar is not None:
            post = {"loss": f"{m['loss']:.3f}", "lr": f"{m['lr']:.1e}", "tok/s": f"{m['tokens_per_s']:.0f}"}
            if "val_loss" in m:
                post["val"] = f"{m['val_loss']:.3f}"
            bar.set_postfix(post, refresh=False)
            bar.update(1)

    try:
        with jobs.StopSignals() as stop:
            return trainer.fit(show, stop=stop)
    except NonFiniteLoss as e:
        raise CLIError(str(e)) from None
    except dist.RankTimeout as e:
        if bar is not None:
            bar.close()
        kept = (out / "latest").read_text().strip() if (out / "latest").is_file() else "none saved yet"
        print(f"minitransformer pretrain: error: {e}; the last checkpoint is kept: {out}/latest -> {kept}",
              file=sys.stderr, flush=True)
        comm.abort(3)                       # the other ranks may be stuck in MPI: end them all
    except jobs.Stopped as e:
        if bar is not None:
            bar.close()
        if comm.rank == 0:
            print(f"\n{e}; continue with minitransformer pretrain --out {out} --steps {cfg.steps} --resume",
                  file=sys.stderr, flush=True)
        return e.status
    except checkpoint.SaveError:
        if comm.rank == 0:
            raise                           # one line from rank 0: the path, the reason, what is kept
        return 2
    finally:
        if bar is not None:
            bar.close()


def show_sample(model, tokenizer) -> str:
    """A short demonstration of what the model learned, for each family."""
    from minitransformer import families

    return families.of(model).sample(model, tokenizer)
