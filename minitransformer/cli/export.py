"""``minitransformer export``: a run or checkpoint as a transformers-format folder.

The folder (config.json, model.safetensors, tokenizer.json and tokenizer_config.json, and
the model card with the front matter hubs read) loads with ``transformers``'
``from_pretrained`` as it is, and with ``mt.hf.load_pretrained``; uploading it to a hub is
then a copy.
"""
from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLES = """examples:
  minitransformer export runs/gpt-tiny --out exported/gpt-tiny     # the latest checkpoint of a run
  minitransformer export runs/gpt-tiny/checkpoints/step-00001000 --out exported/step1000
  python -c "from transformers import AutoModelForCausalLM as M; M.from_pretrained('exported/gpt-tiny')"
"""


def register(sub) -> None:
    p = sub.add_parser("export", help="write a run or checkpoint as a transformers-format folder",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run folder (its latest checkpoint) or a checkpoint folder")
    p.add_argument("--out", required=True, help="the folder to write (must be empty or absent)")
    p.set_defaults(func=run)


def run(args) -> int:
    from minitransformer import checkpoint, hf

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"--out {out} already holds something; give an empty or new folder")
    ckpt = checkpoint.resolve(args.run)
    model = checkpoint.load_model(ckpt)
    tokenizer = checkpoint.load_tokenizer(ckpt)
    card = (ckpt / "README.md").read_text() if (ckpt / "README.md").is_file() else None
    hf.save_pretrained(model, out, tokenizer=tokenizer, card=card)
    print(f"wrote {out}: {model.config.family} ({model.num_parameters():,} parameters) from {ckpt}"
          + ("" if tokenizer is not None else "; no tokenizer: the checkpoint has none"))
    return 0
