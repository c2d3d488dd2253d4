"""The scaling-law fit: final validation loss against model size, and L(N) = E + A / N^alpha.

The points are the five runs of the sweep (``_common.sweep``: same data, same token budget);
``scaling.analyse`` fits them and ``scaling.write_report`` draws the figure, as
``minitransformer scale`` does. With a budget this small the larger models are the furthest
from converged, so the exponent says little about big models; the figure shows the method.
"""
from __future__ import annotations

import shutil

from minitransformer import scaling

from . import _common


def make(out_dir):
    results, analysis, folder = _common.sweep()
    paths = scaling.write_report(results, analysis, folder)
    png = next(p for p in paths if str(p).endswith("loss_vs_params.png"))
    shutil.copyfile(png, out_dir / "scaling.png")
    fit = analysis["fit_N"]
    return {"points": [(r["non_embedding_params"], round(r["val_loss"], 4)) for r in results],
            "fit": {k: fit[k] for k in ("E", "A", "alpha") if k in fit} if isinstance(fit, dict) else str(fit)}
