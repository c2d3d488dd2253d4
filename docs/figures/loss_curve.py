"""Loss curves of short seeded runs: GPT models of five widths on the built-in corpus.

These are the runs of the scaling sweep (``_common.sweep``), read back from the
``metrics.jsonl`` that the trainer writes in every run folder, as ``minitransformer plot``
does; the dotted line is the loss of a uniform guess, ln V.
"""
from __future__ import annotations

import json
import math

from matplotlib.figure import Figure

from . import _common


def read_losses(run_dir):
    """(steps, training losses) from a run's metrics.jsonl."""
    steps, losses = [], []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "loss" in rec:
            steps.append(rec["step"])
            losses.append(rec["loss"])
    return steps, losses


def make(out_dir):
    results, _, folder = _common.sweep()
    vocab = _common.tokenizer().vocab_size
    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    facts = {}
    for r in results:
        steps, losses = read_losses(folder / "runs" / r["name"])
        ax.plot(steps, losses, label=f"{r['name']} ({r['non_embedding_params']:,} non-embedding params)", lw=1.2)
        facts[r["name"]] = {"first": round(losses[0], 4), "last": round(losses[-1], 4), "steps": len(steps)}
    ax.axhline(math.log(vocab), ls=":", color="0.4", label=f"uniform guess, ln {vocab}")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (nats per token)")
    ax.set_title(f"GPT, 1 layer, batch {_common.SWEEP_BATCH} x {_common.SWEEP_BLOCK} tokens, seed {_common.SEED}",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "loss_curve.png", dpi=110)
    return {"runs": facts, "uniform": math.log(vocab)}
