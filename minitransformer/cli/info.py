"""``minitransformer info``: what a preset or checkpoint is, and its model card.

A checkpoint is either one of our run or step folders or a transformers-format folder
(config.json + model.safetensors); both carry their model card as README.md.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

EXAMPLES = """examples:
  minitransformer info gpt2              # a preset: config, parameters, FLOPs, memory, Chinchilla tokens
  minitransformer info runs/gpt-tiny     # a checkpoint: config, counts and its model card
  minitransformer info exported/         # a transformers-format folder, the same
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

    card, ckpt = None, None
    if Path(args.target).exists():
        ckpt = checkpoint.resolve(args.target)
        model = checkpoint.load_model(ckpt)
        cfg = model.config
        if (ckpt / "README.md").is_file():
            card = (ckpt / "README.md").read_text()
    else:
        cfg = models.preset(args.target)
    print(f"family: {cfg.family}")
    for k, v in dataclasses.asdict(cfg).items():
        print(f"  {k}: {v}")
    for line in scaling.summary(cfg, batch_size=args.batch_size, seq_len=args.seq_len):
        print(line)
    if card:
        print()
        print(card)
    elif ckpt is not None:
        print(f"\nno model card: {ckpt} has no README.md")
    return 0
