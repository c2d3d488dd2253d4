"""Model cards: the README.md every checkpoint folder carries.

A model card says what a model is, how it was made and what it is (not) for, so that a
person picking a checkpoint can judge it (Mitchell et al. 2019, "Model Cards for Model
Reporting"). Ours are generated from the run itself: architecture and size, objective,
data and how it was filtered, steps, tokens and compute, final validation loss, intended
uses and known limitations.

A card can also be written for a model whose training is not known here (one imported
from a transformers folder, or exported by ``mt.hf.save_pretrained`` without its run's
details): it then says so rather than reporting zero steps. ``info`` carries what the run
knows that the model does not: name, objective, data, filtering, tokenizer, and optionally
a description, a source (where the weights came from), extra uses and limitations.
"""
from __future__ import annotations

import dataclasses

OBJECTIVES = {
    "clm": ("causal language modelling", "predict the next token from the ones before it"),
    "mlm": ("masked language modelling", "recover 15% of tokens masked out, seeing both sides"),
    "span": ("span corruption", "write out the spans of tokens replaced by sentinels in the input"),
}

def _count(model) -> tuple[int, int]:
    total = model.num_parameters()
    embedding = sum(p.size for n, p in model.named_parameters()
                    if any(k in n for k in ("embed", "wte", "wpe", "shared", "relative_attention_bias")))
    return total, total - embedding


def front_matter(family, info: dict, metrics: dict) -> list[str]:
    """The YAML block hubs read before a card's text: library, license, tags, task, data, metrics.

    The license is the weights', which the library's own (MIT) does not decide: "unknown"
    unless the run says (``info["license"]``).
    """
    def item(value) -> str:               # a YAML scalar that needs no escaping rules
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["---", "library_name: minitransformer", f"license: {item(info.get('license', 'unknown'))}",
             "tags:", *(f"- {item(t)}" for t in ["minitransformer", *family.hub_tags, "pre-training"]),
             f"pipeline_tag: {family.pipeline_tag}"]
    if info.get("datasets"):
        lines += ["datasets:", *(f"- {item(d)}" for d in info["datasets"])]
    if "val_loss" in metrics:
        lines += ["metrics:", "- perplexity"]
    return lines + ["---", ""]


def checkpoint_line(which: str, step: int, train_config=None, best: dict | None = None) -> str:
    """The card's line saying which checkpoint of the run it describes: the best by validation
    loss (``which="best"``) or the last one saved (``"last"``), with the run's best so far."""
    of = f" of {train_config.steps:,}" if train_config is not None else ""
    if which == "best":
        return f"- Checkpoint: step {step:,}{of}, the best of the run by validation loss (the lowest so far)"
    line = f"- Checkpoint: step {step:,}{of}, the last saved (not chosen by validation loss)"
    if best:
        line += f"; the best so far: validation loss {best['val_loss']:.4f} at step {best['step']:,}"
    return line


def model_card(model, train_config=None, step: int = 0, tokens: int = 0, metrics: dict | None = None,
               info: dict | None = None, which: str | None = None, best: dict | None = None) -> str:
    """Markdown text of the model card for ``model`` after ``step`` steps of ``train_config``,
    opened by the YAML front matter hubs read (``front_matter``).

    ``which`` ("best" or "last"), when given, says which checkpoint of the run this is
    (``checkpoint_line``); ``best`` is the run's {"step", "val_loss"} of the best so far.
    """
    from minitransformer import families

    cfg = model.config
    family = families.of(cfg)
    info = info or {}
    metrics = metrics or {}
    total, non_embedding = _count(model)
    objective = getattr(train_config, "objective", None) or info.get("objective", "unknown")
    obj_name, obj_desc = OBJECTIVES.get(objective, (objective, ""))
    flops = 6 * non_embedding * tokens
    trained_here = train_config is not None or step > 0 or tokens > 0
    kind = family.architecture
    description = info.get("description") or (
        f"A {cfg.family.upper()}-architecture transformer pre-trained from scratch with minitransformer."
        if trained_here else
        f"A {cfg.family.upper()}-architecture transformer ({type(model).__name__}) saved by minitransformer.")
    lines = [
        *front_matter(family, info, metrics),
        f"# {info.get('name', cfg.family + ' model')}",
        "",
        description,
        "",
        "## Architecture and size",
        "",
        f"- Family: {cfg.family} ({kind}), {type(model).__name__}",
        f"- Parameters: {total:,} ({non_embedding:,} outside embeddings)",
        "- Configuration: " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(cfg).items()),
        "",
        "## Training",
        "",
    ]
    if "source" in info:
        lines.append(f"- Weights from: {info['source']}")
    if trained_here or "objective" in info:
        lines.append(f"- Objective: {obj_name}" + (f": {obj_desc}" if obj_desc else ""))
    lines += [
        f"- Data: {info.get('data', 'not recorded')}",
        "- Filtering: " + info.get("filtering", "none beyond the tokenizer (the data was used as given)"
                                   if trained_here else "not recorded"),
        f"- Tokenizer: {info.get('tokenizer', 'byte-level BPE' if trained_here else 'not recorded')}",
    ]
    if trained_here:
        lines.append(f"- Steps: {step:,}; tokens seen: {tokens:,}; compute about {flops:.3g} FLOPs "
                     "(6 x non-embedding parameters x tokens)")
    else:
        lines.append("- Steps, tokens and compute: not recorded (this card was written without the "
                     "training run's details)")
    if which is not None:
        lines.append(checkpoint_line(which, step, train_config, best))
    if train_config is not None:
        lines.append(f"- Optimisation: AdamW, peak lr {train_config.lr}, {train_config.schedule} schedule, "
                     f"batch {train_config.batch_size}, weight decay {train_config.weight_decay}, "
                     f"seed {train_config.seed}")
    lines += ["", "## Evaluation", ""]
    if "val_loss" in metrics:
        lines.append(f"- Validation loss: {metrics['val_loss']:.4f} nats per target token "
                     f"(perplexity {metrics.get('val_ppl', float('nan')):.2f}) at step {metrics.get('step', step)}")
        if "val_accuracy" in metrics:
            lines.append(f"- Masked-token accuracy: {metrics['val_accuracy']:.3f}")
    else:
        lines.append("- Not evaluated yet.")
    lines += [
        "",
        "## Intended uses",
        "",
        f"- {family.used_for}",
        "- Teaching and experiments: small enough to train and inspect on a laptop." if total < 50_000_000
        else "- Teaching and experiments: runs on a laptop CPU, slowly; a GPU helps.",
        *(f"- {u}" for u in info.get("uses", ())),
        "",
        "## Limitations",
        "",
    ]
    if trained_here:
        lines += [
            "- Trained on a small corpus for few steps: its outputs are often wrong or incoherent; do not use it "
            "for decisions about people or for facts.",
            "- It reproduces the style, errors and biases of its training data, which was not reviewed for them.",
            "- English-centric byte-level BPE vocabulary; other scripts cost many tokens each.",
        ]
    else:
        lines += [
            "- How it was trained is not recorded here: judge it by its own model card and by evaluating it on "
            "your task before relying on it.",
            "- Like any language model it reproduces the style, errors and biases of its training data; do not use "
            "it for decisions about people or for facts without review.",
        ]
    lines += [f"- {x}" for x in info.get("limitations", ())]
    lines.append("")
    return "\n".join(lines)


# =======================================================================================
# Reading a card (ours or a hub's): its front matter and the sections a chooser needs
# =======================================================================================

# Headings, lowercased, that answer "what is it for, what was it trained on, what can go wrong".
CHOOSING = ("intended use", "uses", "how to use", "training data", "training", "evaluation", "results",
            "limitation", "bias", "out-of-scope", "risks")


def read_front_matter(text: str) -> tuple[dict, str]:
    """(the top-level keys of the YAML front matter, the card's text after it).

    Only what a reader is shown is parsed: ``key: value`` and ``key:`` followed by ``- item``
    lines; nested blocks (a hub's ``model-index``) are skipped, not misread.
    """
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return {}, text
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        return {}, text
    meta, key = {}, None
    for line in lines[1:end]:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace() and ":" in line and not line.startswith("- "):
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip().strip('"').strip("'")
            meta[key] = value if value else []
        elif line.startswith("- ") and key is not None and isinstance(meta.get(key), list):
            meta[key].append(line[2:].strip().strip('"').strip("'"))
        else:
            key = None if line[0].isspace() and not line.lstrip().startswith("- ") else key
    return meta, "\n".join(lines[end + 1:])


def choosing_sections(body: str) -> list[tuple[str, str]]:
    """(heading, text) of each section whose heading names uses, training data or limitations."""
    sections, heading, text = [], None, []
    for line in body.splitlines() + ["# end"]:
        if line.startswith("#"):
            if heading is not None and any(k in heading.lower() for k in CHOOSING):
                sections.append((heading, "\n".join(text).strip()))
            heading, text = line.lstrip("#").strip(), []
        else:
            text.append(line)
    return sections
