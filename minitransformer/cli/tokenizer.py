"""``minitransformer tokenizer``: train a byte-level BPE tokenizer, or look at one's tokens."""
from __future__ import annotations

import argparse
import time

TRAIN_EXAMPLES = """\
examples:
  # 8k vocabulary on the built-in corpus (standard-library docstrings; no download)
  minitransformer tokenizer train --vocab-size 8192 --out runs/tokenizer.json

  # your own text: .txt files (one document each), .jsonl (a "text" field per line), folders
  minitransformer tokenizer train --data books/ news.jsonl --vocab-size 16000 \\
      --pattern gpt4 --out runs/tok16k.json

  # load the result with Hugging Face tokenizers
  python -c "import tokenizers; print(tokenizers.Tokenizer.from_file('runs/tokenizer.json'))"
"""

ENCODE_EXAMPLES = """\
examples:
  minitransformer tokenizer encode --tokenizer runs/tokenizer.json "Return the sum of x and y."
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "tokenizer", help="train a byte-level BPE tokenizer, or show how one splits text",
        description="Train a byte-level BPE tokenizer (saved as a Hugging Face tokenizer.json), "
                    "or show how one splits text.")
    sub = parser.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)

    train = sub.add_parser(
        "train", help="learn a vocabulary from text and write tokenizer.json",
        description="Learn a byte-level BPE vocabulary and write it as tokenizer.json. Special "
                    "tokens <pad> <eos> <mask> <cls> <sep> take ids 0-4; the sentinels "
                    "<extra_id_0>, <extra_id_1>, ... take the highest ids, counting down.",
        epilog=TRAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--data", nargs="+", metavar="PATH",
                       help=".txt/.jsonl files or folders of them (default: the built-in corpus "
                            "of Python standard-library docstrings)")
    train.add_argument("--vocab-size", type=int, default=8192, metavar="N",
                       help="total vocabulary size, special tokens included (default 8192)")
    train.add_argument("--out", required=True, metavar="FILE",
                       help="where to write tokenizer.json (a folder gets FILE/tokenizer.json)")
    train.add_argument("--pattern", choices=("gpt2", "gpt4"), default="gpt2",
                       help="pre-split regex: GPT-2's, or GPT-4's cl100k style (default gpt2)")
    train.add_argument("--num-sentinels", type=int, default=100, metavar="K",
                       help="T5 sentinel tokens <extra_id_k> at the top of the vocabulary (default 100)")
    train.add_argument("--min-frequency", type=int, default=2, metavar="F",
                       help="never merge a pair seen fewer than F times (default 2)")
    train.set_defaults(func=run_train)

    encode = sub.add_parser(
        "encode", help="print the tokens a tokenizer makes of some text",
        epilog=ENCODE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    encode.add_argument("--tokenizer", required=True, metavar="FILE", help="a tokenizer.json")
    encode.add_argument("text", help="the text to encode")
    encode.set_defaults(func=run_encode)


def run_train(args) -> int:
    from minitransformer.data import BPETokenizer, default_corpus, read_documents

    if args.data:
        docs = read_documents(args.data)        # read lazily: bad arguments fail before it
        source = ", ".join(args.data)
    else:
        docs = default_corpus()
        source = "the built-in corpus (Python standard-library docstrings)"
    seen = {"documents": 0, "characters": 0}

    def counted(texts):
        for text in texts:
            seen["documents"] += 1
            seen["characters"] += len(text)
            yield text

    start = time.perf_counter()
    tok = BPETokenizer.train(counted(docs), args.vocab_size, pattern=args.pattern,
                             num_sentinels=args.num_sentinels, min_frequency=args.min_frequency)
    seconds = time.perf_counter() - start
    path = tok.save(args.out)
    note = "" if tok.vocab_size == args.vocab_size else (
        f" (asked for {args.vocab_size:,}; no pair was frequent enough for more)")
    print(f"read {seen['documents']:,} documents ({seen['characters']:,} characters) from {source}")
    print(f"learned {tok.num_merges:,} merges in {seconds:.1f} s; vocabulary {tok.vocab_size:,}"
          f"{note}; wrote {path}")
    return 0


def run_encode(args) -> int:
    from minitransformer.data import BPETokenizer

    tok = BPETokenizer.load(args.tokenizer)
    ids = tok.encode(args.text, allowed_special="all")
    print(" ".join(f"{tok.id_to_token(i)}={i}" for i in ids))
    print(f"{len(ids)} tokens for {len(args.text)} characters")
    return 0
