"""What curation did: documents and tokens in and out of every stage, and why documents left.

The report is the visible half of curation. A filter that silently removes 60% of a corpus
is a decision nobody made; the same filter with a table saying which rule removed what, and
three examples of each, is a decision someone can check, argue with and tune.

``Report.to_dict`` is the JSON form; ``Report.table`` the printed form; ``plot_funnel``
draws the funnel (documents and tokens left after each stage) when matplotlib is installed.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

SNIPPET_CHARS = 200


@dataclasses.dataclass
class StageReport:
    """Counts for one stage. Tokens are counted in the report's ``token_unit``."""
    name: str
    enabled: bool = True
    note: str = ""           # why a stage is off, when it is not the user's own choice
    docs_in: int = 0
    docs_out: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    modified: int = 0        # kept documents whose text this stage changed
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)   # reason -> documents
    counts: dict[str, int] = dataclasses.field(default_factory=dict)    # stage-specific tallies
    examples: dict[str, list[dict]] = dataclasses.field(default_factory=dict)

    def drop(self, reason: str, doc, text: str, detail: str | None, max_examples: int) -> None:
        """Count a document dropped for ``reason``; keep it as an example while there is room."""
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < max_examples:
            example = {"location": doc.location, "id": doc.record.get("id"),
                       "text": text[:SNIPPET_CHARS] + ("..." if len(text) > SNIPPET_CHARS else "")}
            if detail:
                example["detail"] = detail
            examples.append(example)


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


@dataclasses.dataclass
class Report:
    stages: list[StageReport]
    token_unit: str                       # what a "token" is in this report
    inputs: dict = dataclasses.field(default_factory=dict)   # files, documents, malformed lines
    config: dict = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    output: str | None = None
    funnel: str | None = None

    def stage(self, name: str) -> StageReport:
        return next(s for s in self.stages if s.name == name)

    @property
    def docs_in(self) -> int:
        return self.stages[0].docs_in

    @property
    def docs_out(self) -> int:
        return self.stages[-1].docs_out

    @property
    def tokens_in(self) -> int:
        return self.stages[0].tokens_in

    @property
    def tokens_out(self) -> int:
        return self.stages[-1].tokens_out

    def to_dict(self) -> dict:
        return {
            "summary": {"docs_in": self.docs_in, "docs_out": self.docs_out,
                        "tokens_in": self.tokens_in, "tokens_out": self.tokens_out,
                        "token_unit": self.token_unit, "seconds": round(self.seconds, 3)},
            "stages": [dataclasses.asdict(s) for s in self.stages],
            "inputs": self.inputs, "output": self.output, "funnel": self.funnel,
            "config": self.config,
        }

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n",
                              encoding="utf-8")

    def table(self, reasons: int = 3) -> str:
        """A fixed-width table: one row per stage, its most common drop reasons, and totals."""
        header = ("stage", "docs in", "docs out", "kept", "tokens in", "tokens out", "kept",
                  "dropped (most common reasons)")
        rows = []
        for s in self.stages:
            if not s.enabled:
                rows.append((f"{s.name} (off)", "", "", "", "", "", "", s.note))
                continue
            top = sorted(s.dropped.items(), key=lambda kv: (-kv[1], kv[0]))[:reasons]
            why = ", ".join(f"{r} {n:,}" for r, n in top)
            if len(s.dropped) > reasons:
                why += ", ..."
            if s.modified:
                why = (why + "; " if why else "") + f"{s.modified:,} edited"
            rows.append((s.name, f"{s.docs_in:,}", f"{s.docs_out:,}", _share(s.docs_out, s.docs_in),
                         f"{s.tokens_in:,}", f"{s.tokens_out:,}", _share(s.tokens_out, s.tokens_in), why))
        rows.append(("all stages", f"{self.docs_in:,}", f"{self.docs_out:,}",
                     _share(self.docs_out, self.docs_in), f"{self.tokens_in:,}",
                     f"{self.tokens_out:,}", _share(self.tokens_out, self.tokens_in), ""))
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
        lines = []
        for r in [header, *rows]:
            cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:-1], widths[1:])]
            lines.append("  ".join(cells + [r[-1]]).rstrip())
        lines.insert(1, "-" * len(lines[0]))
        lines.insert(len(lines) - 1, "-" * len(lines[0]))
        lines.append(f"tokens counted as {self.token_unit}")
        malformed = self.inputs.get("malformed", 0)
        if malformed:
            first = ", ".join(f"{i['source']}:{i['line']}" for i in self.inputs["malformed_lines"][:3])
            lines.append(f"{malformed:,} input lines skipped or repaired as malformed (first: {first}; "
                         "all listed in the JSON report)")
        return "\n".join(lines)

    def plot_funnel(self, path: str | Path) -> bool:
        """Draw documents and tokens left after each stage as a PNG; False without matplotlib."""
        try:
            # A bare Figure draws with Agg and leaves pyplot's global state (and backend) alone.
            from matplotlib.figure import Figure
        except ImportError:
            return False
        stages = [s for s in self.stages if s.enabled]
        names = ["input"] + [s.name for s in stages]
        fig = Figure(figsize=(11, 0.45 * len(names) + 1.8))
        axes = fig.subplots(1, 2, sharey=True)
        for ax, title, unit, first, after in (
                (axes[0], "documents left", "documents", self.docs_in, [s.docs_out for s in stages]),
                (axes[1], "tokens left", self.token_unit, self.tokens_in, [s.tokens_out for s in stages])):
            left = [first] + after
            # Centred bars: each stage's bar is narrower by what it removed, like a funnel.
            ax.barh(range(len(names)), left, left=[(first - v) / 2 for v in left], color="#4c72b0")
            for y, value in enumerate(left):
                ax.text(first / 2, y, f"{value:,} ({_share(value, first)})", ha="center",
                        va="center", fontsize=8, color="white" if value > 0.3 * first else "black")
            ax.set_title(title, fontsize=10)
            ax.set_xlabel(unit, fontsize=8)
            ax.set_xlim(0, max(first, 1))
            ax.set_xticks([])
        axes[0].set_yticks(range(len(names)), names)
        axes[0].invert_yaxis()  # pipeline order, top to bottom
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        self.funnel = str(path)
        return True
