"""``minitransformer generate``, ``fill-mask`` and ``fill-spans``: use a trained model."""
from __future__ import annotations

import argparse

from minitransformer.cli import CLIError, check_device

GEN_EXAMPLES = """examples:
  minitransformer generate --model runs/gpt-tiny --prompt "Return the" --max-new-tokens 60
  minitransformer generate --model runs/gpt-tiny --prompt "a" "b" --temperature 0.8 --top-p 0.9
  minitransformer generate --model runs/t5-tiny --prompt "translate: three" --beams 4
"""
MASK_EXAMPLES = """examples:
  minitransformer fill-mask --model runs/bert-tiny "Return the <mask> of the list."
"""
SPAN_EXAMPLES = """examples:
  minitransformer fill-spans --model runs/t5-tiny "Return the <extra_id_0> of the list."
"""


def _common(p):
    p.add_argument("--model", required=True, help="a run or checkpoint folder, or a transformers-format folder")
    p.add_argument("--device", default="cpu")


def register(sub) -> None:
    g = sub.add_parser("generate", help="continue text with a GPT model (or decode with a T5 model)",
                       epilog=GEN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(g)
    g.add_argument("--prompt", nargs="+", required=True, help="one or more prompts (batched)")
    g.add_argument("--max-new-tokens", type=int, default=50)
    g.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--beams", type=int, default=1, help="beam width (T5)")
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=run_generate)

    m = sub.add_parser("fill-mask", help="predict the masked tokens of a text with a BERT model",
                       epilog=MASK_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(m)
    m.add_argument("text")
    m.add_argument("--top-k", type=int, default=5)
    m.set_defaults(func=run_fill_mask)

    s = sub.add_parser("fill-spans", help="fill sentinel slots of a text with a T5 model",
                       epilog=SPAN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(s)
    s.add_argument("text")
    s.add_argument("--max-new-tokens", type=int, default=32)
    s.add_argument("--beams", type=int, default=1)
    s.set_defaults(func=run_fill_spans)


def load(args, objective=None):
    """(model, tokenizer) of ``args.model``; with ``objective``, a model pre-trained with it."""
    from minitransformer import checkpoint, families

    check_device(args.device)
    model = checkpoint.load_model(args.model, device=args.device)
    if objective is not None and families.of(model).objective != objective:
        raise CLIError(f"{args.model} holds a {model.config.family} model; this command needs a "
                       f"{families.by_objective(objective).name} model")
    tokenizer = checkpoint.load_tokenizer(args.model)
    if tokenizer is None:
        raise CLIError(f"{args.model} has no tokenizer.json; save the tokenizer with the model")
    return model, tokenizer


def _pad_id(tok) -> int:
    """The padding id; tokenizers without one (GPT-2's) pad with EOS, which the mask hides."""
    try:
        return tok.pad_id
    except (ValueError, KeyError, AttributeError):
        return tok.eos_id


def run_generate(args) -> int:
    from minitransformer import families, generate

    model, tok = load(args)
    architecture = families.of(model).architecture
    if architecture == "encoder-only":
        raise CLIError(f"{args.model} holds a BERT model, which does not generate text; use fill-mask")
    prompts = [tok.encode(p) for p in args.prompt]
    pad_id = _pad_id(tok)
    if architecture == "encoder-decoder":
        inputs = [p + [tok.eos_id] for p in prompts]
        if args.beams > 1:
            outs = generate.seq2seq_beam(model, inputs, num_beams=args.beams, max_new_tokens=args.max_new_tokens,
                                         eos_id=tok.eos_id, pad_id=pad_id)
        else:
            outs = generate.seq2seq_greedy(model, inputs, max_new_tokens=args.max_new_tokens,
                                           eos_id=tok.eos_id, pad_id=pad_id)
        for p, o in zip(args.prompt, outs):
            print(f"{p!r} -> {tok.decode([i for i in o if i != tok.eos_id])!r}")
        return 0
    outs = generate.generate(model, prompts, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                             top_k=args.top_k, top_p=args.top_p, eos_id=tok.eos_id, pad_id=pad_id,
                             seed=args.seed)
    for p, o in zip(args.prompt, outs):
        print(p + tok.decode([i for i in o if i != tok.eos_id]))
    return 0


def run_fill_mask(args) -> int:
    from minitransformer import generate

    model, tok = load(args, "mlm")
    for i, cands in enumerate(generate.fill_mask(model, tok, args.text, top_k=args.top_k)):
        print(f"mask {i}: " + ", ".join(f"{t!r} {p:.3f}" for t, p in cands))
    return 0


def run_fill_spans(args) -> int:
    from minitransformer import generate

    model, tok = load(args, "span")
    filled, spans = generate.fill_spans(model, tok, args.text, max_new_tokens=args.max_new_tokens,
                                        num_beams=args.beams)
    print(filled)
    for i, s in enumerate(spans):
        print(f"  <extra_id_{i}> = {s!r}")
    return 0
