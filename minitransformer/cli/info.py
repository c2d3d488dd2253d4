"""``minitransformer info``: what a preset or checkpoint is."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

EXAMPLES = """examples:
  minitransformer info gpt2              # a preset: config and parameter counts
  minitransformer info runs/gpt-tiny     # a checkpoint: config, counts and its model card
"""


def register(sub) -> None:
    p = sub.add_parser("info", help="config, size and model card of a preset or checkpoint",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", help="a preset name or a checkpoint/run folder")
    p.set_defaults(func=run)


def run(args) -> int:
    from minitransformer import checkpoint, models

    card = None
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
    return 0
