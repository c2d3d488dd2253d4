"""``minitransformer scale``: train a ladder of model sizes and fit a scaling law."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from minitransformer import backend
from minitransformer.cli import CLIError, check_device, config_file, positive_float, positive_int

EXAMPLES = """examples:
  minitransformer scale --quick                     # 7 GPT widths, 2 layers, 500k tokens each
  minitransformer scale                             # 7 widths, 4 layers, 1M tokens each (hours on a CPU)
  minitransformer scale --sizes 128x6 192x6 256x6 384x6 512x6 --tokens 20000000 --device cuda
  minitransformer scale --quick --out runs/s        # stopped (Ctrl-C, SIGTERM)? the same command resumes it
  minitransformer scale --family bert --quick       # masked LM instead of next-token

Sizes are WIDTHxLAYERS or WIDTHxLAYERSxHEADS; feed-forward width is 4 x WIDTH. Every size
trains on the same data for the same number of tokens; the final validation losses are fitted
to L(N) = E + A / N^alpha (N = non-embedding parameters) and compared with Kaplan et al.
(alpha 0.076) and Chinchilla (alpha 0.34). Writes report.json, report.txt and PNGs to --out.
"""

QUICK_TOKENS = 500_000
FULL_TOKENS = 1_000_000


def register(sub) -> None:
    p = sub.add_parser("scale", help="train several model sizes and fit a scaling law",
                       description="Train a sweep of model sizes of one family on the same data and "
                                   "token budget, fit L(N) = E + A / N^alpha with confidence "
                                   "intervals, and write a report.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    from minitransformer import families

    p.add_argument("--family", choices=families.NAMES, default="gpt",
                   help="model family (objective: clm, mlm, span)")
    p.add_argument("--quick", action="store_true",
                   help=f"7 small sizes and {QUICK_TOKENS:,} tokens each (about 10 min on 2 CPU cores)")
    p.add_argument("--sizes", nargs="+", metavar="WxL[xH]",
                   help="model sizes to train (default: the quick or the full ladder)")
    p.add_argument("--tokens", type=positive_int, default=None,
                   help=f"training tokens per size (default {QUICK_TOKENS:,} quick, {FULL_TOKENS:,} full)")
    p.add_argument("--data", nargs="+", metavar="PATH",
                   help=".txt/.jsonl files or folders (default: the built-in corpus)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="sequences per optimizer step")
    p.add_argument("--block-size", type=positive_int, default=128, help="tokens per sequence")
    p.add_argument("--vocab-size", type=positive_int, default=1024,
                   help="BPE vocabulary size (small, so that the output layer does not dominate the "
                        "small models and they learn past word frequencies within the budget)")
    p.add_argument("--lr", type=positive_float, default=None,
                   help="one peak learning rate for every size (default: 3e-3 x sqrt(128 / width) "
                        "within [1e-3, 6e-3]; a third of that for BERT)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--out", help="sweep folder (default: runs/scale-FAMILY[-quick])")
    p.add_argument("--no-progress", action="store_true", help="no progress bars, one line per run")
    config_file(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from minitransformer import jobs, scaling

    check_device(args.device)
    for path in args.data or ():
        if not Path(path).exists():
            raise CLIError(f"data path {path} does not exist; give .txt/.jsonl files or folders")
    tokens = args.tokens or (QUICK_TOKENS if args.quick else FULL_TOKENS)
    if tokens < args.batch_size * args.block_size:
        raise CLIError(f"--tokens {tokens} is less than one batch ({args.batch_size} x {args.block_size}); "
                       "give a larger budget")
    sizes = [scaling.parse_size(s) for s in args.sizes] if args.sizes else list(
        scaling.QUICK_SIZES if args.quick else scaling.FULL_SIZES)
    if len({s.name for s in sizes}) != len(sizes):
        raise CLIError(f"--sizes lists a size twice: {' '.join(args.sizes)}")
    out = Path(args.out or f"runs/scale-{args.family}{'-quick' if args.quick else ''}")
    backend.keep_freed_memory()             # each step reuses the last one's memory (no page faults)
    with jobs.own(out):                     # one sweep writes into a folder at a time
        return sweep(args, out, sizes, tokens)


def sweep(args, out: Path, sizes, tokens: int) -> int:
    """Prepare the data, train every size (resuming a stopped sweep), fit and report."""
    from minitransformer import families, jobs, recipes, scaling

    t0 = time.perf_counter()
    print(f"preparing data and tokenizer ({args.vocab_size} tokens) ...", flush=True)
    objective = families.get(args.family).objective
    train_docs, val_docs, description = recipes.load_corpus(args.data)
    tokenizer = recipes.train_tokenizer(train_docs, args.vocab_size)
    train_tokens = recipes.token_stream(train_docs, tokenizer, "train")
    val_tokens = recipes.token_stream(val_docs, tokenizer, "val")
    train_data = recipes.make_objective(objective, train_tokens, tokenizer, args.block_size, args.seed)
    val_data = recipes.make_objective(objective, val_tokens, tokenizer, args.block_size, args.seed + 1,
                                      shuffle=False)
    runs = [(s.name, scaling.sweep_config(args.family, s, tokenizer, args.block_size)) for s in sizes]
    counts = [scaling.count_parameters(c)["non_embedding"] for _, c in runs]
    print(f"{description}; {len(train_tokens):,} training tokens")
    print(f"{len(runs)} {args.family} sizes, {min(counts):,} to {max(counts):,} non-embedding parameters "
          f"({max(counts) / min(counts):.0f}x), {tokens:,} tokens each; results in {out}", flush=True)

    bar = None

    def progress(e):
        nonlocal bar
        head = f"[{e['index'] + 1}/{len(runs)}] {e['name']}"
        if e["event"] == "skip":
            print(f"{head}: finished before (validation loss {e['result']['val_loss']:.4f}), skipped",
                  flush=True)
        elif e["event"] == "start":
            p = e["params"]
            again = f", resuming at step {e['step']}" if e["resumed"] else ""
            print(f"{head}: {p['non_embedding']:,} non-embedding ({p['total']:,} total) parameters, "
                  f"{e['steps']} steps at lr {e['lr']:.1e}{again}", flush=True)
            if not args.no_progress:
                from minitransformer.cli import progress_bar

                bar = progress_bar(e["steps"], e["step"], leave=False)
        elif e["event"] == "step" and bar is not None:
            bar.set_postfix({"loss": f"{e['loss']:.3f}", "tok/s": f"{e['tokens_per_s']:.0f}"}, refresh=False)
            bar.update(1)
        elif e["event"] == "done":
            if bar is not None:
                bar.close()
                bar = None
            r = e["result"]
            print(f"{head}: validation loss {r['val_loss']:.4f} (train {r['train_loss']:.3f}) in "
                  f"{r['seconds'] / 60:.1f} min", flush=True)

    try:
        with jobs.StopSignals() as stop:
            results = scaling.run_sweep(runs, train_data, val_data, out, tokens=tokens,
                                        batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                        device=args.device, data_key=description, progress=progress, stop=stop)
    except jobs.Stopped as e:
        if bar is not None:
            bar.close()
        print(f"\n{e}; run the same command again to continue", file=sys.stderr, flush=True)
        return e.status
    finally:
        if bar is not None:
            bar.close()
    analysis = scaling.analyse(results)
    paths = scaling.write_report(results, analysis, out)
    print()
    print("\n".join(scaling.format_table(results)))
    print()
    print("\n".join(scaling.format_fits(analysis)))
    print()
    print("the published fits come from models 1,000 to 1,000,000 times larger, trained far longer;")
    print("here every size sees the same small budget, so the larger ones are further from converged.")
    print(f"done in {(time.perf_counter() - t0) / 60:.1f} min; wrote " + ", ".join(str(p) for p in paths))
    return 0
