"""``minitransformer info``: what a preset or checkpoint is, and its model card.

A checkpoint is either one of our run or step folders or a transformers-format folder
(config.json + model.safetensors); both carry their model card as README.md.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

EXAMPLES = """examples:
  minitransformer info gpt2              # a preset: config and parameter counts
  minitransformer info runs/gpt-tiny     # a checkpoint: config, counts and its model card
  minitransformer info exported/         # a transformers-format folder, the same
"""


def register(sub) -> None:
    p = sub.add_parser("info", help="config, size and model card of a preset or checkpoint",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", help="a preset name, a checkpoint/run folder, or a transformers-format folder")
    p.set_defaults(func=run)


def run(args) -> int:
    from minitransformer import checkpoint, models

    card, ckpt = None, None
    if Path(args.target).exists():
        ckpt = checkpoint.resolve(args.target)
        model = checkpoint.load_model(ckpt)
        cfg = model.config
        if (ckpt / "README.md").is_file():
            card = (ckpt / "README.md").read_text()
        total = model.num_parameters()
    else:
        cfg = models.preset(args.target)
        total = models.build(cfg).num_parameters()
    print(f"family: {cfg.family}")
    for k, v in dataclasses.asdict(cfg).items():
        print(f"  {k}: {v}")
    print(f"parameters: {total:,}")
    if card:
        print()
        print(card)
    elif ckpt is not None:
        print(f"\nno model card: {ckpt} has no README.md")
    return 0
