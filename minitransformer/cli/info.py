"""``minitransformer info``: what a preset or checkpoint is, and its model card.

A checkpoint is either one of our run or step folders or a transformers-format folder
(config.json + model.safetensors); both carry their model card as README.md. A folder
written by ``minitransformer finetune --out`` shows its task, labels and score instead.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

EXAMPLES = """examples:
  minitransformer info gpt2              # a preset: config, parameters, FLOPs, memory, Chinchilla tokens
  minitransformer info runs/gpt-tiny     # a checkpoint: config, counts and its model card
  minitransformer info exported/         # a transformers-format folder, the same
  minitransformer info runs/sentiment    # a fine-tuned model: its task, labels and score
"""


def register(sub) -> None:
    p = sub.add_parser("info", help="config, size and model card of a preset or checkpoint",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", help="a preset name, a checkpoint/run folder, or a transformers-format folder")
    p.add_argument("--batch-size", type=int, default=16, help="batch for the FLOP and memory figures")
    p.add_argument("--seq-len", type=int, default=None,
                   help="tokens per sequence for them (default: the model's maximum)")
    p.set_defaults(func=run)


def run(args) -> int:
    from minitransformer import checkpoint, models, scaling

    card, ckpt, finetuned = None, None, None
    if Path(args.target).exists():
        ckpt = checkpoint.resolve(args.target)
        if (ckpt / checkpoint.FINETUNE_FILE).is_file():
            finetuned = json.loads((ckpt / checkpoint.FINETUNE_FILE).read_text())
            cfg = checkpoint.config_from_dict(json.loads((ckpt / "config.json").read_text()))
        else:
            cfg = checkpoint.load_model(ckpt).config
        if (ckpt / "README.md").is_file():
            card = (ckpt / "README.md").read_text()
    else:
        cfg = models.preset(args.target)
    if finetuned is not None:
        _print_finetuned(ckpt, finetuned)
        print()
    print(f"family: {cfg.family}")
    for k, v in dataclasses.asdict(cfg).items():
        print(f"  {k}: {v}")
    for line in scaling.summary(cfg, batch_size=args.batch_size, seq_len=args.seq_len):
        print(line)
    if card:
        print()
        print(card)
    elif ckpt is not None and finetuned is None:
        print(f"\nno model card: {ckpt} has no README.md")
    return 0


def _print_finetuned(folder: Path, info: dict) -> None:
    """Task, head, labels and (from report.json) the score against the best baseline."""
    print(f"fine-tuned for {info['task']}: {info['head']}, inputs up to {info['max_length']} tokens")
    if info.get("labels"):
        print(f"  labels: {', '.join(info['labels'])}")
    report_path = folder / "report.json"
    if not report_path.is_file():
        return
    report = json.loads(report_path.read_text())
    key = report["primary_metric"]
    line = f"  {key} {report['metrics'][key]:.3f} on {report['eval_examples']} examples"
    baselines = report.get("baselines", {})
    if baselines:
        name, best = max(baselines.items(), key=lambda kv: kv[1][key])
        line += f" (best baseline, {name}: {best[key]:.3f})"
    print(line)
    print(f"  from {report['model']} ({report['init']}), {report['config']['steps']} steps; "
          f"trained on {report['train_examples']} examples")
