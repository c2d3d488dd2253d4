"""``minitransformer info``: what a preset or checkpoint is, and what its model card says.

A checkpoint is one of our run or step folders, a transformers-format folder (config.json +
model.safetensors) or a hub id (ORG/NAME, through huggingface_hub's cache); each carries its
model card as README.md. ``info`` shows the card's front matter (license, task, tags) and the
sections a person choosing a model needs (intended uses, training data, limitations), with
terminal escape sequences and control characters removed; ``--card`` prints the whole card.
A folder written by ``minitransformer finetune --out`` shows its task, labels and score too;
a run folder names its best checkpoint (``pretrain --keep-best``) with its step and validation loss.
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
  minitransformer info openai-community/gpt2 --card   # a hub id (needs huggingface_hub), whole card
"""


def register(sub) -> None:
    p = sub.add_parser("info", help="config, size and model card of a preset or checkpoint",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", help="a preset name, a checkpoint/run folder, a transformers-format folder, "
                                  "or a hub id (ORG/NAME)")
    p.add_argument("--card", action="store_true", help="print the whole model card, not only its key sections")
    p.add_argument("--batch-size", type=int, default=16, help="batch for the FLOP and memory figures")
    p.add_argument("--seq-len", type=int, default=None,
                   help="tokens per sequence for them (default: the model's maximum)")
    p.set_defaults(func=run)


def run(args) -> int:
    from minitransformer import checkpoint, models, scaling

    card, ckpt, finetuned = None, None, None
    presets = models.configs.PRESETS
    if Path(args.target).exists() or args.target not in presets:
        try:                                             # a folder, else a hub id
            ckpt = checkpoint.resolve(args.target)
        except FileNotFoundError as e:
            raise ValueError(f"unknown model preset {args.target!r} (choose one of: {', '.join(presets)}); "
                             f"and {e}") from None
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
    if ckpt is not None and finetuned is None:
        best = best_line(Path(args.target), ckpt)
        if best:
            print(best)
    if card:
        print()
        print("\n".join(card_lines(card, ckpt / "README.md", whole=args.card)))
    elif ckpt is not None and finetuned is None:
        print(f"\nno model card: {ckpt} has no README.md")
    return 0


def best_line(target: Path, ckpt: Path) -> str | None:
    """Where the run of ``ckpt`` keeps its best checkpoint (step, validation loss), or, when it
    keeps none, the best it recorded; None for a folder that is not part of a run."""
    from minitransformer import checkpoint

    if (target / "latest").is_file():
        run = target
    elif ckpt.parent.name == "checkpoints":
        run = ckpt.parent.parent
    else:
        return None
    kept = checkpoint.best_of(run)
    if kept is not None:
        folder, best = kept
        return f"best checkpoint: {folder} (step {best['step']}, validation loss {best['val_loss']:.4f})"
    try:
        best = json.loads((ckpt / checkpoint.STATE_FILE).read_text()).get("best")
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(best, dict):
        return None
    return (f"best validation loss: {best['val_loss']:.4f} at step {best['step']} (not kept; train with "
            "--keep-best to keep that checkpoint)")


def card_lines(card: str, path: Path, whole: bool = False) -> list[str]:
    """What to show of a model card: its front matter, then the sections for choosing a model."""
    from minitransformer.cli import safe_text
    from minitransformer.model_card import choosing_sections, read_front_matter

    meta, body = read_front_matter(safe_text(card))
    lines = [f"model card ({path}):"]
    shown = {k: meta[k] for k in ("license", "pipeline_tag", "language", "tags", "datasets", "library_name")
             if meta.get(k)}
    if shown:
        lines.append("  " + "; ".join(f"{k}: {', '.join(v) if isinstance(v, list) else v}" for k, v in shown.items()))
    sections = [] if whole else choosing_sections(body)
    if not sections:
        return lines + ["", body.strip()]
    for heading, text in sections:
        lines += ["", f"## {heading}", text or "(empty)"]
    return lines + ["", f"(the whole card: minitransformer info {path.parent} --card)"]


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
