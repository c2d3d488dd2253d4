"""``minitransformer curate``: filter and deduplicate raw text into a pre-training corpus.

Every setting of every stage is a flag, generated from the stage's config dataclass, so the
flags, the JSON config file and the library can never disagree: ``--no-STAGE`` turns a stage
off and ``--STAGE-SETTING VALUE`` sets one threshold. Precedence: defaults, then ``--config``,
then flags.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from minitransformer.cli import CLIError
from minitransformer.data.curate import CurateConfig, curate, load_config
from minitransformer.data.curate.records import TXT_SPLITS

EXAMPLES = """\
examples:
  minitransformer curate crawl/ --out curated/
  minitransformer curate a.jsonl b.txt.gz --out curated/ --tokenizer tok/tokenizer.json
  minitransformer curate crawl/ --out curated/ --blocklist my_words.txt --no-pii
  minitransformer curate crawl/ --out curated/ --gopher-quality-min-words 30 --no-c4-require-terminal-punctuation
  minitransformer curate --print-config > curate.json     # edit it, then
  minitransformer curate crawl/ --out curated/ --config curate.json --strict

Writes DIR/curated.jsonl (every input field kept, the text cleaned; ready for
'minitransformer pretrain --data DIR/curated.jsonl'), DIR/report.json (documents and tokens
in and out of each stage, drop reasons with examples) and, with matplotlib installed,
DIR/funnel.png. Stages run in the order their flags are listed above.
"""

_PREFIX = "stage:"  # argparse dests of the generated flags: "stage:STAGE:SETTING"


def _flag(*names: str) -> str:
    return "--" + "-".join(names).replace("_", "-")


def _add_stage_flags(parser: argparse.ArgumentParser) -> None:
    defaults = CurateConfig()
    types = {"int": int, "float": float, "str": str, "str | None": str}
    for stage_field in dataclasses.fields(defaults):
        stage = stage_field.name
        config = getattr(defaults, stage)
        group = parser.add_argument_group(f"{stage} stage")
        group.add_argument(_flag("no", stage), dest=f"{_PREFIX}{stage}:enabled",
                           action="store_const", const=False, default=argparse.SUPPRESS,
                           help=f"turn the {stage} stage off")
        for f in dataclasses.fields(config):
            if f.name == "enabled":
                continue
            names = [_flag(stage, f.name)]
            if (stage, f.name) == ("blocklist", "path"):
                names.insert(0, "--blocklist")
            kwargs = dict(dest=f"{_PREFIX}{stage}:{f.name}", default=argparse.SUPPRESS,
                          help=f"{f.metadata['help']} (default: {getattr(config, f.name)})")
            if f.type == "bool":
                group.add_argument(*names, action=argparse.BooleanOptionalAction, **kwargs)
            else:
                metavar = {"int": "INT", "float": "FLOAT"}.get(f.type, "FILE" if f.name == "path" else "TEXT")
                group.add_argument(*names, type=types[f.type], metavar=metavar, **kwargs)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "curate", help="filter and deduplicate raw text into a pre-training corpus",
        usage="minitransformer curate IN... --out DIR [--config FILE.json] [--tokenizer FILE]\n"
              "       [--no-STAGE] [--STAGE-SETTING VALUE] [--strict] [--print-config]",
        description="Curate .txt/.jsonl documents for pre-training: Unicode normalisation, exact\n"
                    "deduplication, Gopher repetition and quality rules, FineWeb and C4 rules, an\n"
                    "optional word blocklist, PII scrubbing and MinHash near-deduplication.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", metavar="IN",
                   help=".txt, .jsonl (optionally .gz) files, or folders holding them")
    p.add_argument("--out", metavar="DIR", help="folder to write curated.jsonl, report.json and funnel.png into")
    p.add_argument("--config", metavar="FILE.json",
                   help="settings as {stage: {setting: value}}; flags override it")
    p.add_argument("--tokenizer", metavar="FILE",
                   help="tokenizer.json to count tokens with (default: count GPT-2 pre-split words)")
    p.add_argument("--text-field", default="text", metavar="NAME",
                   help="the .jsonl field holding the text; the output calls it 'text' (default: text)")
    p.add_argument("--txt-split", choices=TXT_SPLITS, default="file",
                   help="a .txt file is one document, or one per paragraph or line (default: file)")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first malformed input line instead of counting and skipping it")
    p.add_argument("--examples", type=int, default=3, metavar="N",
                   help="examples kept per drop reason in the report (default: 3)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--print-config", action="store_true",
                   help="print the settings in effect as JSON (a starting config file) and exit")
    _add_stage_flags(p)
    p.set_defaults(func=run)


def _config(args) -> CurateConfig:
    config = load_config(args.config) if args.config else CurateConfig()
    changes: dict[str, dict] = {}
    for dest, value in vars(args).items():
        if dest.startswith(_PREFIX):
            stage, name = dest[len(_PREFIX):].split(":")
            changes.setdefault(stage, {})[name] = value
    return config.updated(changes, where="flags")


def _load_tokenizer(path: str):
    from minitransformer.data import BPETokenizer

    return BPETokenizer.load(path)


def run(args) -> int:
    config = _config(args)
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    if not args.inputs:
        raise CLIError("expected at least one input (IN: .txt/.jsonl files or folders), got none; "
                       "e.g. 'minitransformer curate crawl/ --out curated/'")
    if not args.out:
        raise CLIError("expected --out DIR, the folder to write the curated corpus into")
    if args.examples < 0:
        raise CLIError(f"--examples must be 0 or more, got {args.examples}")
    tokenizer = _load_tokenizer(args.tokenizer) if args.tokenizer else None
    report = curate(args.inputs, args.out, config, tokenizer=tokenizer,
                    tokenizer_name=args.tokenizer or "", text_field=args.text_field,
                    txt_split=args.txt_split, strict=args.strict,
                    progress=not args.no_progress and sys.stderr.isatty(),
                    examples_per_reason=args.examples)
    print(report.table())
    out = Path(args.out)
    print(f"\nkept {report.docs_out:,} of {report.docs_in:,} documents in {report.seconds:.1f} s "
          f"-> {report.output}")
    print(f"report: {out / 'report.json'}")
    print(f"funnel: {report.funnel}" if report.funnel else
          "funnel: not drawn (install matplotlib, e.g. pip install 'minitransformer[plot]')")
    return 0
