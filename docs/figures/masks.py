"""The attention masks of the three families, with padding, and T5's relative-position buckets.

Two sequences of a batch, the second padded; each panel shows, for one sequence, which key
(column) each query (row) may attend to, built by the library's own helpers:
``functional.causal_mask`` and ``nn.key_padding_mask``. The bucket panels show
``nn.relative_position_bucket`` of key - query position, for T5's encoder (both directions)
and decoder (the past only).
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

import minitransformer.functional as F
from minitransformer import nn

T_ENC, T_DEC = 10, 6
LENGTHS = (10, 7)                 # real tokens of the two encoder rows; the rest is padding
DEC_LENGTHS = (6, 4)
BUCKET_T = 48                     # positions of the bucket panels
NUM_BUCKETS, MAX_DISTANCE = 32, 128   # T5's defaults (t5-small)


def padding(lengths, t):
    return (np.arange(t)[None, :] < np.array(lengths)[:, None]).astype(np.int64)    # (B, T) 1 = real


def masks() -> dict:
    """family panel -> (B, Tq, Tk) bool, True where attention is allowed."""
    enc, dec = padding(LENGTHS, T_ENC), padding(DEC_LENGTHS, T_DEC)
    enc_keys = nn.key_padding_mask(enc)[:, 0]                    # (B, 1, 1, Tk) -> (B, 1, Tk)
    dec_keys = nn.key_padding_mask(dec)[:, 0]
    causal_enc = F.causal_mask(np, T_ENC, T_ENC)[None]           # (1, Tq, Tk)
    causal_dec = F.causal_mask(np, T_DEC, T_DEC)[None]
    full = lambda tq, keys: np.broadcast_to(keys, (keys.shape[0], tq, keys.shape[-1]))   # noqa: E731
    return {
        "GPT: causal + padding": causal_enc & enc_keys,
        "BERT, T5 encoder: padding only": full(T_ENC, enc_keys),
        "T5 decoder self: causal + padding": causal_dec & dec_keys,
        "T5 cross: decoder -> encoder padding": full(T_DEC, enc_keys),
    }


def buckets(bidirectional: bool) -> np.ndarray:
    pos = np.arange(BUCKET_T)
    return nn.relative_position_bucket(pos[None, :] - pos[:, None], bidirectional=bidirectional,
                                       num_buckets=NUM_BUCKETS, max_distance=MAX_DISTANCE)


def make(out_dir):
    panels = masks()
    fig = Figure(figsize=(12.5, 6.4))
    grid = fig.add_gridspec(2, len(panels) + 1)
    for col, (title, m) in enumerate(panels.items()):
        for row in range(2):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(m[row], cmap="Blues", vmin=-0.3, vmax=1.2)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=8)
            ax.set_xlabel(f"keys (row {row}: {m[row].shape[1]} positions)", fontsize=7)
            ax.set_ylabel("queries", fontsize=7)
    for row, bidi in enumerate((True, False)):
        ax = fig.add_subplot(grid[row, -1])
        im = ax.imshow(buckets(bidi), cmap="viridis")
        ax.set_title(f"T5 buckets, {'encoder' if bidi else 'decoder'}", fontsize=8)
        ax.set_xlabel("key position", fontsize=7)
        ax.set_ylabel("query position", fontsize=7)
        ax.tick_params(labelsize=6)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle("Attention masks (blue: allowed), for two sequences of one batch; the second is padded",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(out_dir / "masks.png", dpi=100)
    return {"allowed": {k: int(v.sum()) for k, v in panels.items()},
            "buckets_encoder": int(buckets(True).max()) + 1, "buckets_decoder": int(buckets(False).max()) + 1}
