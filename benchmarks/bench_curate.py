"""Curation throughput, memory, and near-duplicate precision/recall on a generated corpus.

    python -m benchmarks.bench_curate [--mb 100] [--small-mb 10] [--seed 0] [--json FILE]

Writes a .jsonl corpus of ``--mb`` megabytes (``curate.synthetic``): prose-like documents,
of which about 10% are near-duplicates (0.5-2% of the words of an earlier document
substituted, deleted or inserted), 2% exact copies and 20% junk pages. It is then curated
with the default settings in a fresh process pinned to one CPU core, which reports its wall
time and peak resident memory. A second, ``--small-mb`` corpus shows whether peak memory
grows with the corpus: streaming keeps only per-document state (band keys, digests).

Precision and recall of near-duplicate removal are measured against the planted labels on
the documents that reach the MinHash stage (junk and exact copies are removed before it):
precision = planted near-duplicates among the documents MinHash removed, recall = removed
among the planted near-duplicates.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _peak_rss_mib() -> float:
    """This process's peak resident memory. On Linux, VmHWM: unlike ru_maxrss it starts afresh
    at exec, so it does not include the memory of the parent that forked this process."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, bytes on macOS


def _child(corpus: str, out: str) -> None:
    """Run in a fresh interpreter: curate ``corpus`` on one core, print timings as JSON."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    from minitransformer.data.curate import curate
    from minitransformer.data.curate.hashing import min_hashes, word_hashes
    import numpy as np

    # Load the compiled kernels before the clock starts (a one-off cost per process).
    word_hashes(["warm"])
    min_hashes(np.zeros(1, np.uint64), np.ones(1, np.uint64), np.zeros(1, np.uint64))
    rss_before = _peak_rss_mib()
    start = time.perf_counter()
    report = curate([corpus], out)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "rss_before_mib": rss_before,
                      "peak_rss_mib": _peak_rss_mib(), "report": report.to_dict()}))


def _curate_in_child(corpus: Path, out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_curate", "--child", str(corpus), str(out)],
                          capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_size(mb: float, seed: int, workdir: Path) -> dict:
    from minitransformer.data.curate.synthetic import write_corpus

    corpus = workdir / f"corpus-{mb:g}mb.jsonl"
    start = time.perf_counter()
    labels = write_corpus(corpus, int(mb * 1e6), seed=seed)
    generate_s = time.perf_counter() - start
    out = workdir / f"out-{mb:g}mb"
    child = _curate_in_child(corpus, out)
    report = child["report"]
    minhash = next(s for s in report["stages"] if s["name"] == "minhash")

    ids = {f"doc-{i:07d}" for i in range(labels.documents)}
    reached = ids - labels.junk - labels.exact_copies
    with open(out / "curated.jsonl", encoding="utf-8") as f:
        kept = {json.loads(line)["id"] for line in f}
    removed = reached - kept
    planted = labels.near_duplicates & reached
    true_pos = len(removed & planted)
    corpus_mb = labels.bytes / 1e6
    result = {
        "corpus_mb": round(corpus_mb, 2), "documents": labels.documents,
        "planted_near_duplicates": len(labels.near_duplicates), "planted_clusters": labels.clusters,
        "exact_copies": len(labels.exact_copies), "junk": len(labels.junk),
        "generate_s": round(generate_s, 1), "curate_s": round(child["seconds"], 2),
        "docs_per_s": round(labels.documents / child["seconds"], 1),
        "mb_per_s": round(corpus_mb / child["seconds"], 3),
        "rss_after_imports_mib": round(child["rss_before_mib"], 1),
        "peak_rss_mib": round(child["peak_rss_mib"], 1),
        "docs_kept": report["summary"]["docs_out"], "tokens_in": report["summary"]["tokens_in"],
        "tokens_kept": report["summary"]["tokens_out"],
        "reached_minhash": len(reached), "minhash_docs_in": minhash["docs_in"],
        "minhash_removed": len(removed),
        "near_dup_precision": round(true_pos / len(removed), 4) if removed else None,
        "near_dup_recall": round(true_pos / len(planted), 4) if planted else None,
    }
    if len(reached) != minhash["docs_in"]:
        result["warning"] = ("some generated prose was dropped before MinHash; precision and "
                             "recall count those documents as removed by it")
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=100.0, help="corpus size in MB (default: 100)")
    parser.add_argument("--small-mb", type=float, default=10.0,
                        help="a smaller corpus to compare peak memory with; 0 to skip (default: 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the corpora and outputs here")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--child", nargs=2, metavar=("CORPUS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-curate-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        sizes = [mb for mb in (args.small_mb, args.mb) if mb > 0]
        results = [run_size(mb, args.seed, workdir) for mb in sizes]
    keys = ["corpus_mb", "documents", "curate_s", "docs_per_s", "mb_per_s", "rss_after_imports_mib",
            "peak_rss_mib", "docs_kept", "minhash_removed", "near_dup_precision", "near_dup_recall"]
    width = max(map(len, keys))
    print("curation on one core (default settings)")
    for key in keys:
        print(f"  {key:<{width}}  " + "  ".join(f"{str(r[key]):>12}" for r in results))
    for r in results:
        if "warning" in r:
            print(f"  warning ({r['corpus_mb']} MB): {r['warning']}")
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
