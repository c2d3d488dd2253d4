"""BPE merges as they are learned: the same sentence split after more and more merges.

Training is deterministic (ties go to the smallest pair), so a tokenizer trained with k
more tokens knows the same merges plus k more; each row is the library's tokenizer trained
on the same documents with a larger vocabulary.
"""
from __future__ import annotations

from matplotlib.figure import Figure

from minitransformer import data

from . import _common

MERGES = (0, 10, 40, 150, 600)


def make(out_dir):
    docs = _common.documents()
    text = _common.sentence()
    base = data.BPETokenizer.train(docs, 256 + len(data.DEFAULT_SPECIAL_TOKENS) + data.DEFAULT_NUM_SENTINELS)
    rows, counts = [], []
    for k in MERGES:
        tok = data.BPETokenizer.train(docs, base.vocab_size + k)
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        rows.append((tok.num_merges, _common.token_labels(tok, ids)))
        counts.append(len(ids))
    fig = Figure(figsize=(13, 0.75 * len(rows) + 1))
    ax = fig.subplots()
    for r, (merges, labels) in enumerate(rows):
        y = len(rows) - r
        ax.text(-0.5, y, f"{merges} merges: {len(labels)} tokens", ha="right", va="center", fontsize=8)
        x = 0.0
        for lab in labels:
            w = 0.16 * len(lab) + 0.25
            ax.text(x + w / 2, y, lab, ha="center", va="center", fontsize=8, family="monospace",
                    bbox=dict(boxstyle="round,pad=0.2", fc="#dbe8f6", ec="0.6"))
            x += w + 0.08
    ax.set_xlim(-4.2, 0.24 * len(text) + 2)
    ax.set_ylim(0.4, len(rows) + 0.6)
    ax.axis("off")
    ax.set_title(f"\u201c{text}\u201d under byte-level BPE trained on {len(docs)} documents", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "bpe.png", dpi=110)
    return {"merges": [m for m, _ in rows], "tokens": counts}
