"""FlashAttention's tiles, and which ones causal masking skips.

``kernels.attention.tile_schedule`` states the loop bounds of the CPU kernel's forward and
backward passes (the kernel's tests probe both against it): for each (query tile, key tile)
pair, whether it is skipped, computed whole, or computed and masked per row. Left: a
sequence attending to itself. Right: a few new queries against a longer key cache, where
the diagonal is aligned bottom-right.
"""
from __future__ import annotations

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from minitransformer.kernels import attention as A

CASES = (  # (title, Tq, Tk)
    ("self-attention, T = 1024", 1024, 1024),
    ("decoding 256 new queries against 1024 keys", 256, 1024),
)
BLOCK_Q, BLOCK_K = A.default_tiles(64, causal=True)      # the kernel's causal tiles for head_dim 64


def make(out_dir):
    cmap = ListedColormap(["#eeeeee", "#4c72b0", "#dd8452"])
    fig = Figure(figsize=(11, 4.6))
    axes = fig.subplots(1, len(CASES))
    facts = {}
    for ax, (title, tq, tk) in zip(axes, CASES):
        s = A.tile_schedule(tq, tk, causal=True, block_q=BLOCK_Q, block_k=BLOCK_K)
        counts = {name: int((s == v).sum()) for name, v in (("skipped", A.SKIPPED), ("full", A.FULL),
                                                              ("masked", A.MASKED))}
        facts[f"{tq}x{tk}"] = {"tiles": list(s.shape), **counts}
        ax.imshow(s, cmap=cmap, vmin=0, vmax=2, extent=(0, tk, tq, 0))
        ax.set_xticks(np.arange(0, tk + 1, BLOCK_K), minor=True)
        ax.set_yticks(np.arange(0, tq + 1, BLOCK_Q), minor=True)
        ax.grid(which="minor", color="white", linewidth=0.6)
        ax.tick_params(which="minor", length=0)
        ax.set_xlabel(f"keys ({BLOCK_K} per tile)", fontsize=8)
        ax.set_ylabel(f"queries ({BLOCK_Q} per tile)", fontsize=8)
        work = (counts["full"] + counts["masked"]) / s.size
        ax.set_title(f"{title}\n{counts['skipped']} of {s.size} tiles skipped: {work:.0%} of the work",
                     fontsize=9)
    kinds = ("skipped", "computed", "computed, masked per row")
    handles = [Patch(color=c, label=lab) for c, lab in zip(cmap.colors, kinds)]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(out_dir / "flash_tiles.png", dpi=110)
    return facts
