"""The report of a sweep: the fits beside the published exponents, a table, and plots.

``analyse`` fits the sweep's final losses against size and compute, ``format_table`` and
``format_fits`` write them as text, and ``write_report`` saves report.json, report.txt and
(where matplotlib is installed) loss_vs_params.png and loss_vs_compute.png.
"""
from __future__ import annotations

from pathlib import Path

import numpy

from minitransformer.scaling.fit import (
    CHINCHILLA, KAPLAN_ALPHA_C, KAPLAN_ALPHA_N, fit_power_law, fit_pure_power_law,
)
from minitransformer.scaling.summary import si
from minitransformer.scaling.sweep import write_json


def analyse(results) -> dict:
    """Fits of the sweep's final validation losses: L(N) = E + A / N^alpha on non-embedding
    parameters, Kaplan's pure power law on the same points, and L(C) = E + A / C^alpha on
    training compute; with the published exponents beside them."""
    n = [r["non_embedding_params"] for r in results]
    loss = [r["val_loss"] for r in results]
    compute = [r["compute"] for r in results]
    out = {"references": {"kaplan_alpha_N": KAPLAN_ALPHA_N, "chinchilla_alpha": CHINCHILLA["alpha"],
                          "kaplan_alpha_C": KAPLAN_ALPHA_C}}
    if len(set(n)) < 3:
        out["note"] = f"{len(set(n))} model sizes: a fit needs at least 3"
        return out
    out["fit_N"] = fit_power_law(n, loss).as_dict()
    out["kaplan_form_N"] = fit_pure_power_law(n, loss)
    out["fit_C"] = fit_power_law(compute, loss).as_dict()
    out["span"] = max(n) / min(n)
    return out


def format_table(results) -> list[str]:
    """The sweep as a text table, one line per run."""
    head = (f"{'run':<14} {'non-emb N':>10} {'total N':>10} {'FLOP/token':>10} {'tokens':>8} "
            f"{'compute':>9} {'lr':>7} {'train':>6} {'val loss':>8} {'time':>7}")
    lines = [head, "-" * len(head)]
    for r in results:
        train = f"{r['train_loss']:.3f}" if r.get("train_loss") is not None else "-"
        lines.append(
            f"{r['name']:<14} {r['non_embedding_params']:>10,} {r['params']:>10,} "
            f"{si(r['flops_per_token']):>10} {si(r['tokens']):>8} {si(r['compute'], 'FLOP'):>9} "
            f"{r['lr']:>7.1e} {train:>6} {r['val_loss']:>8.4f} {r['seconds'] / 60:>6.1f}m")
    return lines


def format_fits(analysis) -> list[str]:
    """The fitted exponents beside the published ones, as text lines."""
    if "fit_N" not in analysis:
        return [f"no fit: {analysis.get('note', 'too few points')}"]
    f, k, c = analysis["fit_N"], analysis["kaplan_form_N"], analysis["fit_C"]
    pct = round(100 * f["confidence"])

    def ci(fit, key):
        lo, hi = fit["ci"][key] if isinstance(fit["ci"], dict) else fit["ci"]
        return f"[{lo:.3g}, {hi:.3g}]"

    return [
        f"L(N) = E + A / N^alpha (N = non-embedding parameters, {f['n_points']} sizes spanning "
        f"{analysis['span']:.0f}x): alpha = {f['alpha']:.3f} {ci(f, 'alpha')}, "
        f"E = {f['E']:.3f} {ci(f, 'E')}, A = {f['A']:.3g} {ci(f, 'A')} ({pct}% intervals), "
        f"rms residual {f['rmse']:.4f}",
        f"  Chinchilla (same form, all parameters, compute-optimal data): alpha = "
        f"{CHINCHILLA['alpha']}, E = {CHINCHILLA['E']}, A = {CHINCHILLA['A']}",
        f"L(N) = (N_c / N)^alpha (Kaplan's form, no E): alpha = {k['alpha']:.3f} {ci(k, 'alpha')}",
        f"  Kaplan et al. 2020 (models trained to convergence): alpha_N = {KAPLAN_ALPHA_N}",
        f"L(C) = E + A / C^alpha (C = training FLOPs, same tokens for every size): "
        f"alpha = {c['alpha']:.3f} {ci(c, 'alpha')}; Kaplan's compute-optimal frontier: "
        f"alpha_C = {KAPLAN_ALPHA_C}",
    ]


def _plots(results, analysis, out_dir: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return []
    written = []
    loss = numpy.array([r["val_loss"] for r in results])
    for key, fit_key, xlabel, filename in (
            ("non_embedding_params", "fit_N", "non-embedding parameters N", "loss_vs_params.png"),
            ("compute", "fit_C", "training compute C (FLOPs)", "loss_vs_compute.png")):
        x = numpy.array([r[key] for r in results], dtype=float)
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        ax.scatter(x, loss, zorder=3, label="runs (final validation loss)")
        for xi, li, r in zip(x, loss, results):
            ax.annotate(r["name"], (xi, li), textcoords="offset points", xytext=(4, 4), fontsize=7)
        fit = analysis.get(fit_key)
        if fit:
            grid = numpy.geomspace(x.min() / 1.5, x.max() * 1.5, 200)
            lo, hi = fit["ci"]["alpha"]
            ax.plot(grid, fit["E"] + fit["A"] * grid ** -fit["alpha"], "-",
                    label=f"E + A / x^alpha: alpha = {fit['alpha']:.3f} [{lo:.3f}, {hi:.3f}], "
                          f"E = {fit['E']:.2f}")
            ax.axhline(fit["E"], ls=":", color="gray", lw=1)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())   # labels would overlap
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation loss (nats per token)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / filename, dpi=120)
        plt.close(fig)
        written.append(out_dir / filename)
    return written


def write_report(results, analysis, out_dir) -> list[Path]:
    """report.json (runs, fits, references), report.txt (table and fits) and, where
    matplotlib is installed, loss_vs_params.png and loss_vs_compute.png; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "report.json", {"runs": list(results), "analysis": analysis})
    lines = format_table(results) + [""] + format_fits(analysis)
    (out_dir / "report.txt").write_text("\n".join(lines) + "\n")
    return [out_dir / "report.json", out_dir / "report.txt"] + _plots(results, analysis, out_dir)
