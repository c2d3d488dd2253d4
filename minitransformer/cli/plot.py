"""``minitransformer plot``: loss curves of one or more runs as a PNG (needs matplotlib)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from minitransformer.cli import CLIError

EXAMPLES = """examples:
  minitransformer plot runs/gpt-tiny --out loss.png
  minitransformer plot runs/a runs/b --out compare.png
"""


def register(sub) -> None:
    p = sub.add_parser("plot", help="plot training and validation loss of runs (matplotlib)",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders (each with metrics.jsonl)")
    p.add_argument("--out", default="loss.png", help="PNG file to write")
    p.set_defaults(func=run)


def read_metrics(run: Path):
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; is {run} a training run folder?")
    train, val = [], []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if "loss" in rec:
            train.append((rec["step"], rec["loss"]))
        if "val_loss" in rec:
            val.append((rec["step"], rec["val_loss"]))
    return train, val


def run(args) -> int:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CLIError("plot needs matplotlib: pip install -e \".[plot]\"") from None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run_dir in args.runs:
        train, val = read_metrics(Path(run_dir))
        if train:
            line, = ax.plot(*zip(*train), alpha=0.5, label=f"{run_dir} train")
            if val:
                ax.plot(*zip(*val), "o-", color=line.get_color(), label=f"{run_dir} validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per target token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")
    return 0
