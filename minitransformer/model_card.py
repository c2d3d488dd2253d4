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


def model_card(model, train_config=None, step: int = 0, tokens: int = 0, metrics: dict | None = None,
               info: dict | None = None) -> str:
    """Markdown text of the model card for ``model`` after ``step`` steps of ``train_config``."""
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
        f"- Filtering: {info.get('filtering', 'none beyond the tokenizer (the data was used as given)' if trained_here else 'not recorded')}",
        f"- Tokenizer: {info.get('tokenizer', 'byte-level BPE' if trained_here else 'not recorded')}",
    ]
    if trained_here:
        lines.append(f"- Steps: {step:,}; tokens seen: {tokens:,}; compute about {flops:.3g} FLOPs "
                     "(6 x non-embedding parameters x tokens)")
    else:
        lines.append("- Steps, tokens and compute: not recorded (this card was written without the "
                     "training run's details)")
    if train_config is not None:
        lines.append(f"- Optimisation: AdamW, peak lr {train_config.lr}, {train_config.schedule} schedule, "
                     f"batch {train_config.batch_size}, weight decay {train_config.weight_decay}, seed {train_config.seed}")
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
            "- Trained on a small corpus for few steps: its outputs are often wrong or incoherent; do not use it for decisions about people or for facts.",
            "- It reproduces the style, errors and biases of its training data, which was not reviewed for them.",
            "- English-centric byte-level BPE vocabulary; other scripts cost many tokens each.",
        ]
    else:
        lines += [
            "- How it was trained is not recorded here: judge it by its own model card and by evaluating it on your task before relying on it.",
            "- Like any language model it reproduces the style, errors and biases of its training data; do not use it for decisions about people or for facts without review.",
        ]
    lines += [f"- {x}" for x in info.get("limitations", ())]
    lines.append("")
    return "\n".join(lines)
