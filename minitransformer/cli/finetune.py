"""``minitransformer finetune``: fine-tune a pre-trained encoder (BERT) or encoder-decoder (T5)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from minitransformer.cli import (
    CLIError, check_device, config_file, non_negative_int, positive_float, positive_int,
)

EXAMPLES = """tasks and data:
  classify  BERT, one label per text      {"text": "...", "label": "..."}  (+ optional "text_pair")
  tag       BERT, a BIO tag per word      {"tokens": ["Maria", "paid"], "tags": ["B-PER", "O"]}
  seq2seq   T5, text to text              {"input": "...", "target": "..."}
  built-in: sentiment (classify), entities (tag), numbers (seq2seq); no download

examples:
  minitransformer finetune --write-builtin data/             # the built-in tasks as .jsonl + a corpus
  minitransformer pretrain --objective mlm --data data/corpus.jsonl --vocab-size 1024 --block-size 64 --out runs/bert
  minitransformer finetune --task classify --model runs/bert --builtin sentiment --out runs/sentiment
  minitransformer finetune --task tag --model runs/bert --data data/entities.train.jsonl --eval data/entities.test.jsonl
  minitransformer finetune --task seq2seq --model runs/t5 --builtin numbers --steps 1000 --num-beams 4
  minitransformer finetune --task classify --model runs/bert --builtin sentiment --from-scratch   # the control

The report (metrics, baselines, samples) is printed as JSON and written to OUT/report.json
(or --report FILE). Without --eval, a tenth of --data (chosen by a hash of each input) is held out.
With --out, a checkpoint is saved every --save-every steps in OUT/training, and Ctrl-C, SIGTERM or
SIGHUP finish the step, save it and stop; the same command with --resume continues bit for bit.
"""


def register(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune BERT (classify, tag) or T5 (seq2seq) and evaluate it",
                       description="Fine-tune a pre-trained checkpoint on a labelled task and report "
                                   "its score against the task's baselines.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=["classify", "tag", "seq2seq"],
                   help="what to fine-tune for (default: the task of --builtin)")
    p.add_argument("--model", help="the pre-trained run or checkpoint folder (BERT for classify/tag, T5 for seq2seq)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", metavar="FILE.jsonl", help="training examples, one JSON object per line")
    src.add_argument("--builtin", metavar="NAME", help="a built-in task: sentiment, entities or numbers")
    p.add_argument("--eval", metavar="FILE.jsonl", help="evaluation examples (default: held out from --data, "
                   "or the built-in test split)")
    p.add_argument("--n-train", type=positive_int, default=2000, help="built-in training examples")
    p.add_argument("--n-eval", type=positive_int, default=300, help="built-in evaluation examples")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="optimizer steps (default: 1000 for classify, 300 for tag, 1500 for seq2seq)")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--lr", type=positive_float, default=None,
                   help="peak learning rate (default: 3e-4 for classify, 1e-3 for tag and seq2seq)")
    p.add_argument("--warmup", type=non_negative_int, default=None, help="warmup steps (default: 10%% of --steps)")
    p.add_argument("--max-length", type=positive_int, default=128, help="tokens per input; longer inputs are truncated")
    p.add_argument("--num-beams", type=positive_int, default=1, help="seq2seq decoding beams (1 = greedy)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--from-scratch", action="store_true",
                   help="random weights of the same architecture (to measure what pre-training gives)")
    p.add_argument("--out", help="folder for the fine-tuned model and report.json")
    p.add_argument("--save-every", type=non_negative_int, default=200,
                   help="with --out: steps between checkpoints in OUT/training (0: only when stopped)")
    p.add_argument("--resume", action="store_true", help="continue the stopped run in --out")
    p.add_argument("--report", help="where to write the JSON report (default OUT/report.json)")
    p.add_argument("--write-builtin", metavar="DIR",
                   help="write the built-in tasks (train/test .jsonl) and a pre-training corpus to DIR, then stop")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    config_file(p)
    p.set_defaults(func=run)


def _examples(args, task: str):
    from minitransformer.finetune import tasks

    if args.builtin:
        train = tasks.builtin(args.builtin, "train", args.n_train, args.seed)
        description = f"built-in task {args.builtin!r}: {tasks.BUILTIN[args.builtin][2]}"
        if args.eval:
            return train, tasks.read_jsonl(args.eval, task), description + f"; evaluated on {args.eval}"
        return train, tasks.builtin(args.builtin, "test", args.n_eval, args.seed), description
    train = tasks.read_jsonl(args.data, task)
    if args.eval:
        return train, tasks.read_jsonl(args.eval, task), f"{args.data}, evaluated on {args.eval}"
    train, held = tasks.split_examples(train, task)
    return train, held, f"{args.data} ({len(held)} examples held out by hash for evaluation)"


def run(args) -> int:
    from minitransformer.finetune import tasks

    if args.write_builtin:
        for path in tasks.write_builtin(args.write_builtin, n_train=args.n_train, n_test=args.n_eval,
                                        seed=args.seed):
            print(path)
        return 0
    task = args.task
    if args.builtin:
        builtin_task = tasks.builtin_task(args.builtin)
        if task is not None and task != builtin_task:
            raise CLIError(f"built-in task {args.builtin!r} is a {builtin_task} task, not {task}; "
                           f"drop --task or pass --task {builtin_task}")
        task = builtin_task
    if task is None:
        raise CLIError("say what to fine-tune: --task classify|tag|seq2seq with --data FILE.jsonl, "
                       "or --builtin sentiment|entities|numbers")
    if not args.model:
        raise CLIError("--model is required: a pre-trained run folder (see 'minitransformer pretrain')")
    if not args.data and not args.builtin:
        raise CLIError(f"give training data: --data FILE.jsonl, or --builtin "
                       f"{tasks.DEFAULT_BUILTIN[task]}")
    check_device(args.device)
    if args.resume and not args.out:
        raise CLIError("--resume continues the run in --out; give its folder")
    if args.out:
        from minitransformer import jobs
        from minitransformer.finetune.run import check_out_dir, check_run_folder

        check_out_dir(args.out)             # before the folder is made or locked: a mistake leaves it as it was
        if args.resume:
            check_run_folder(args.out, resume=True)
        with jobs.own(args.out):            # then a stopped run not to start over (finetune checks it)
            return train_and_report(args, task)
    return train_and_report(args, task)


def train_and_report(args, task: str) -> int:
    """Fine-tune, print the report and write it (and, with --out, the model and metrics)."""
    from minitransformer import backend, jobs
    from minitransformer.finetune import FinetuneConfig, finetune
    from minitransformer.finetune.run import write_report

    train, evaluation, description = _examples(args, task)
    backend.keep_freed_memory()             # each step reuses the last one's memory (no page faults)
    config = FinetuneConfig.for_task(task, steps=args.steps, lr=args.lr, batch_size=args.batch_size,
                                     warmup=args.warmup, seed=args.seed, max_length=args.max_length,
                                     num_beams=args.num_beams, device=args.device)
    print(f"{task}: {len(train)} training and {len(evaluation)} evaluation examples; {config.steps} steps "
          f"from {'random weights' if args.from_scratch else args.model}", file=sys.stderr, flush=True)

    bar = None
    if not args.no_progress:
        from minitransformer.cli import progress_bar

        bar = progress_bar(config.steps)

    history = []                # every step's loss and rate: OUT/metrics.jsonl, as pretrain writes

    def progress(m):
        history.append(m)
        if bar is not None:
            bar.set_postfix({"loss": f"{m['loss']:.3f}", "lr": f"{m['lr']:.1e}"}, refresh=False)
            bar.update(1)

    try:
        with jobs.StopSignals() as stop:
            report = finetune(task, args.model, train, evaluation, config, out_dir=args.out,
                              from_scratch=args.from_scratch, progress=progress, data_description=description,
                              save_every=args.save_every, resume=args.resume, stop=stop)
    except FloatingPointError as e:
        raise CLIError(str(e)) from None
    except jobs.Stopped as e:
        if bar is not None:
            bar.close()
        again = "; continue with the same command and --resume" if args.out else ""
        print(f"\n{e}{again}", file=sys.stderr, flush=True)
        return e.status
    finally:
        if bar is not None:
            bar.close()
    if args.out:
        from minitransformer import atomic

        eval_record = {"step": config.steps, **{f"eval_{k}": v for k, v in report["metrics"].items()
                                               if isinstance(v, (int, float))}}
        atomic.write_text(Path(args.out) / "metrics.jsonl",
                          "".join(json.dumps(r) + "\n" for r in [*history, eval_record]))
    path = args.report or (Path(args.out) / "report.json" if args.out else None)
    if path is not None:
        write_report(report, path)
    print(json.dumps(report, indent=2))
    print(summary(report) + (f"; report: {path}" if path else ""), file=sys.stderr)
    for warning in report.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def summary(report: dict) -> str:
    """One line: the primary metric against the best baseline."""
    key = report["primary_metric"]
    ours = report["metrics"][key]
    base = max(report.get("baselines", {}).items(), key=lambda kv: kv[1][key], default=None)
    line = f"{report['task']}: {key} {ours:.3f}"
    if base is not None:
        line += f" (baseline '{base[0]}' {base[1][key]:.3f}, margin {ours - base[1][key]:+.3f})"
    return line
