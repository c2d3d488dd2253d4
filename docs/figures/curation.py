"""The curation funnel: documents and tokens left after each stage of the pipeline.

The input is the library's generated corpus with known answers (prose, near-duplicates,
exact copies and junk pages); ``curate`` runs every stage on it and the report draws the
funnel, as ``minitransformer curate`` does.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from minitransformer.data.curate import curate
from minitransformer.data.curate.synthetic import write_corpus

CORPUS_BYTES = 300_000


def make(out_dir):
    work = Path(tempfile.mkdtemp(prefix="book-curate-"))
    try:
        labels = write_corpus(work / "raw.jsonl", CORPUS_BYTES, seed=0)
        report = curate([work / "raw.jsonl"], work / "out")
        report.plot_funnel(out_dir / "curation.png")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"docs_in": report.docs_in, "docs_out": report.docs_out,
            "planted": {"junk": len(labels.junk), "exact_copies": len(labels.exact_copies),
                        "near_duplicates": len(labels.near_duplicates)},
            "dropped": {s.name: sum(s.dropped.values()) for s in report.stages if s.enabled}}
