"""``minitransformer evaluate``: zero-shot classification with a GPT model, or scoring a
fine-tuned model on a task file."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from minitransformer.cli import CLIError, check_device

EXAMPLES = """zero-shot (a GPT checkpoint; no training): each label gets a verbalizer, the words that
would follow the prompt for it, and the label whose verbalizer is most likely wins.

examples:
  minitransformer evaluate --model runs/gpt --task sentiment              # built-in prompt and verbalizers
  minitransformer evaluate --model runs/gpt --task sentiment --calibrate  # subtract the content-free scores
  minitransformer evaluate --model runs/gpt --data reviews.jsonl \\
      --template "Review: {text} Sentiment:" --verbalizer positive=" great" --verbalizer negative=" awful"
  minitransformer evaluate --model runs/sentiment --data data/sentiment.test.jsonl   # a fine-tuned model
"""


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="zero-shot classification with a GPT model, or score a fine-tuned model",
                       description="Evaluate without training: compare label likelihoods under a GPT "
                                   "model (zero-shot), or score a folder written by 'minitransformer "
                                   "finetune --out'.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a GPT run/checkpoint folder, or a fine-tuned model folder")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--task", "--builtin", dest="builtin", metavar="NAME",
                     help="a built-in task (its test split): sentiment (also entities, numbers for fine-tuned models)")
    src.add_argument("--data", metavar="FILE.jsonl", help="examples to evaluate, one JSON object per line")
    p.add_argument("--n", type=int, default=300, help="built-in examples to evaluate")
    p.add_argument("--template", help="zero-shot prompt with a {text} slot (default: the built-in task's, "
                                      "else '{text}')")
    p.add_argument("--verbalizer", action="append", default=[], metavar="LABEL=WORDS",
                   help="the continuation that stands for LABEL (repeat per label; default ' LABEL')")
    p.add_argument("--calibrate", action="store_true",
                   help="subtract each label's score after a content-free prompt ('N/A')")
    p.add_argument("--normalize", choices=["sum", "mean"], default="sum",
                   help="score a verbalizer by the sum or the mean of its tokens' log-probabilities")
    p.add_argument("--num-beams", type=int, default=1, help="seq2seq decoding beams (fine-tuned T5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the built-in data")
    p.add_argument("--device", default="cpu")
    p.add_argument("--report", help="also write the JSON report to this file")
    p.set_defaults(func=run)


def _verbalizers(pairs) -> dict | None:
    out = {}
    for pair in pairs:
        label, sep, words = pair.partition("=")
        if not sep or not label or not words:
            raise CLIError(f"--verbalizer expects LABEL=WORDS (e.g. positive=' good'), got {pair!r}")
        out[label] = words
    return out or None


def run(args) -> int:
    from minitransformer import checkpoint, families
    from minitransformer.finetune import run as ft_run
    from minitransformer.finetune import tasks, zero_shot

    if not args.builtin and not args.data:
        raise CLIError("give examples: --task NAME (a built-in task) or --data FILE.jsonl")
    check_device(args.device)
    if ft_run.is_finetuned(args.model):
        handler_task = json.loads((Path(args.model) / ft_run.INFO_FILE).read_text())["task"]
        if args.builtin:
            if tasks.builtin_task(args.builtin) != handler_task:
                raise CLIError(f"{args.model} was fine-tuned for {handler_task}; built-in task "
                               f"{args.builtin!r} is a {tasks.builtin_task(args.builtin)} task")
            examples = tasks.builtin(args.builtin, "test", args.n, args.seed)
        else:
            examples = tasks.read_jsonl(args.data, handler_task)
        report = ft_run.evaluate_finetuned(args.model, examples, args.device, num_beams=args.num_beams)
    else:
        model = checkpoint.load_model(args.model, device=args.device)
        if families.of(model).architecture != "decoder-only":
            raise CLIError(f"{args.model} holds a pre-trained {model.config.family.upper()} model; zero-shot "
                           "evaluation needs a GPT model, and an encoder must first be fine-tuned "
                           "('minitransformer finetune --out DIR', then evaluate DIR)")
        tokenizer = checkpoint.load_tokenizer(args.model)
        if tokenizer is None:
            raise CLIError(f"{args.model} has no tokenizer.json; save the tokenizer with the model")
        prompt = {}
        if args.builtin:
            if tasks.builtin_task(args.builtin) != "classify":
                raise CLIError(f"zero-shot evaluation compares label likelihoods, so it needs a "
                               f"classification task; {args.builtin!r} is a {tasks.builtin_task(args.builtin)} task")
            examples = tasks.builtin(args.builtin, "test", args.n, args.seed)
            prompt = zero_shot.PROMPTS.get(args.builtin, {})
        else:
            examples = tasks.read_jsonl(args.data, "classify")
        template = args.template or prompt.get("template", "{text}")
        verbalizers = _verbalizers(args.verbalizer) or prompt.get("verbalizers")
        report = zero_shot.zero_shot_classify(model, tokenizer, examples, template, verbalizers,
                                              calibrate=args.calibrate, normalize=args.normalize)
        report["model"] = args.model
    if args.report:
        ft_run.write_report(report, args.report)
    print(json.dumps(report, indent=2))
    key = report["primary_metric"]
    line = f"{report['task']}: {key} {report['metrics'][key]:.3f}"
    if "baselines" in report:
        base = report["baselines"]["majority"][key]
        line += f" (majority {base:.3f}, margin {report['metrics'][key] - base:+.3f})"
    print(line, file=sys.stderr)
    return 0
