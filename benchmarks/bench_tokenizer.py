"""BPE training time and encode throughput, against Hugging Face ``tokenizers``.

    python -m benchmarks.bench_tokenizer [--vocab-size 8192] [--repeats 5] [--json FILE]

On the built-in corpus (the standard library's docstrings):

1. **Training**: ``BPETokenizer.train`` to ``--vocab-size`` tokens, wall time, median of a
   few runs (goal: under 60 s for 8k).
2. **Encoding**: the trained tokenizer, saved as tokenizer.json and loaded by
   ``tokenizers``, encodes the same text in the same process on one core (Rayon limited to
   one thread, the process pinned to one CPU). Both first encode everything once and must
   produce identical ids; then the runs alternate ours / theirs and the medians are
   compared. Two workloads: the whole corpus as one string, and the documents one by one
   (``encode_batch``). "ours, cold" clears our chunk cache before each run (every distinct
   word goes through BPE again); "ours, warm" keeps it, as a long training run would.
   Goal: at least half of ``tokenizers``' throughput.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

# One thread for tokenizers (Rayon) -- must be set before it is imported.
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("RAYON_RS_NUM_CPUS", "1")
os.environ["TOKENIZERS_PARALLELISM"] = "false"


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(vocab_size: int, repeats: int) -> dict:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import tokenizers

    from minitransformer.data import BPETokenizer, default_corpus

    start = time.perf_counter()
    docs = default_corpus()
    corpus_seconds = time.perf_counter() - start
    text = "\n\n".join(docs)
    megabytes = len(text.encode("utf-8")) / 1e6

    train_times = []
    for _ in range(max(1, repeats // 2)):
        start = time.perf_counter()
        tok = BPETokenizer.train(docs, vocab_size)
        train_times.append(time.perf_counter() - start)

    with tempfile.TemporaryDirectory() as tmp:
        theirs = tokenizers.Tokenizer.from_file(str(tok.save(Path(tmp) / "tokenizer.json")))

    # Same computation first: a speed figure for different output would mean nothing.
    ours_ids = tok.encode(text, allowed_special="all")
    if ours_ids != theirs.encode(text).ids:
        raise SystemExit("ids differ from tokenizers on the corpus; not timing a different computation")
    ours_docs = tok.encode_batch(docs, allowed_special="all")
    if ours_docs != [e.ids for e in theirs.encode_batch(docs)]:
        raise SystemExit("per-document ids differ from tokenizers; not timing a different computation")

    def ours_cold_text():
        tok._cache.clear()
        tok.encode(text, allowed_special="all")

    def ours_cold_docs():
        tok._cache.clear()
        tok.encode_batch(docs, allowed_special="all")

    workloads = {
        "one string": {"ours, cold": ours_cold_text,
                       "ours, warm": lambda: tok.encode(text, allowed_special="all"),
                       "tokenizers": lambda: theirs.encode(text)},
        "per document": {"ours, cold": ours_cold_docs,
                         "ours, warm": lambda: tok.encode_batch(docs, allowed_special="all"),
                         "tokenizers": lambda: theirs.encode_batch(docs)},
    }
    encode = {}
    for name, contenders in workloads.items():
        times = {k: [] for k in contenders}
        for _ in range(repeats):                       # interleaved: A B C A B C ...
            for k, fn in contenders.items():
                times[k].append(_median_time(fn, 1))
        mbps = {k: megabytes / statistics.median(v) for k, v in times.items()}
        encode[name] = {
            "mb_per_s": mbps,
            "cold_vs_tokenizers": mbps["ours, cold"] / mbps["tokenizers"],
            "warm_vs_tokenizers": mbps["ours, warm"] / mbps["tokenizers"],
        }
    return {
        "corpus": {"documents": len(docs), "megabytes": round(megabytes, 3),
                   "tokens": len(ours_ids), "load_seconds": round(corpus_seconds, 3)},
        "train": {"vocab_size": tok.vocab_size, "merges": tok.num_merges,
                  "seconds_median": statistics.median(train_times), "runs": train_times,
                  "goal_seconds": 60},
        "encode": encode,
        "versions": {"tokenizers": tokenizers.__version__},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per contender (default 5)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    res = run(args.vocab_size, args.repeats)
    c, t = res["corpus"], res["train"]
    print(f"corpus: {c['documents']:,} docstrings, {c['megabytes']:.2f} MB, {c['tokens']:,} tokens")
    print(f"train {t['vocab_size']:,} tokens ({t['merges']:,} merges): {t['seconds_median']:.2f} s "
          f"median (goal < {t['goal_seconds']} s)")
    print(f"encode, MB/s on one core   {'ours, cold':>11} {'ours, warm':>11} {'tokenizers':>11}"
          f" {'cold ratio':>11} {'warm ratio':>11}")
    for name, e in res["encode"].items():
        m = e["mb_per_s"]
        print(f"  {name:<25} {m['ours, cold']:>11.2f} {m['ours, warm']:>11.2f} {m['tokenizers']:>11.2f}"
              f" {e['cold_vs_tokenizers']:>10.2f}x {e['warm_vs_tokenizers']:>10.2f}x")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
