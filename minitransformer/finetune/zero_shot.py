"""Zero-shot classification with a GPT model: no training, only the likelihood of answers.

A decoder-only model assigns a probability to any continuation of any text. Write each
example into a prompt that ends where the answer would go, give each label a
*verbalizer* (the words that would follow for that label), and pick the label whose
verbalizer the model finds most likely (GPT-2's zero-shot recipe, Radford et al. 2019):

    prompt    "The soup was not good. Overall, it was"
    scores    log p(" good" | prompt) = -2.9      log p(" bad" | prompt) = -0.4   -> negative

    score(label) = sum over the verbalizer's tokens v_j of log p(v_j | prompt, v_<j)

(``normalize="mean"`` divides by the number of tokens, for verbalizers of different
lengths). A model prefers some words whatever the input; ``calibrate`` subtracts each
verbalizer's score after a content-free prompt (the template filled with "N/A"), as in
Zhao et al. 2021, "Calibrate Before Use", so a label wins by what the input adds.

This only works if the pre-training text holds the pattern: reviews followed by a verdict
in words. The built-in corpus has them (``tasks.pretraining_corpus``), as the web does.
"""
from __future__ import annotations

from collections import Counter

import numpy

from minitransformer import backend, families
from minitransformer.autograd import no_grad
from minitransformer.finetune import metrics
from minitransformer.finetune.loop import pad
from minitransformer.finetune.tasks import TaskDataError, where

# Prompts for built-in classification tasks: the template and each label's verbalizer.
PROMPTS = {
    "sentiment": {"template": "{text} Overall, it was",
                  "verbalizers": {"positive": " good", "negative": " bad"}},
}
CONTENT_FREE = "N/A"


def fill(template: str, example: dict) -> str:
    """The prompt of one example: ``{text}`` (and ``{text_pair}``) replaced by its fields."""
    if "{text}" not in template:
        raise ValueError(f"the prompt template {template!r} has no {{text}} slot for the example's "
                         "text; write e.g. '{text} Overall, it was'")
    out = template.replace("{text}", example["text"])
    if "{text_pair}" in template:
        out = out.replace("{text_pair}", example.get("text_pair", ""))
    return out


def continuation_scores(model, contexts: list[list[int]], continuations: list[list[int]],
                        batch_size: int = 32) -> numpy.ndarray:
    """(N, 2): for each (context, continuation) pair, sum of log p(continuation tokens) and
    their number.

    The pair is one sequence, context then continuation; the logits at position t predict
    token t + 1, so the continuation's tokens are read at the positions just before them.
    A context too long for the model keeps its end (the part next to the answer).
    """
    limit = model.config.n_positions
    xp = backend.module_for_device(model.device)
    rows, starts = [], []
    for ctx, cont in zip(contexts, continuations):
        if not cont:
            raise ValueError("a verbalizer encodes to no tokens; give each label a non-empty word")
        if not ctx:
            raise ValueError("a prompt encodes to no tokens; nothing to condition the answer on")
        if len(cont) >= limit:
            raise ValueError(f"a verbalizer of {len(cont)} tokens does not fit the model's {limit} positions")
        ctx = ctx[-(limit - len(cont)):]
        rows.append(ctx + cont)
        starts.append(len(ctx))
    out = numpy.zeros((len(rows), 2))
    model.eval()
    with no_grad():
        for lo in range(0, len(rows), batch_size):
            part = rows[lo:lo + batch_size]
            ids = pad(part, 0)
            mask = pad([[1] * len(r) for r in part], 0, ids.shape[1])
            logits = backend.to_numpy(model(xp.asarray(ids), attention_mask=xp.asarray(mask)).data)
            z = logits.astype(numpy.float64)                                  # (B, T, V)
            logp = z - z.max(axis=-1, keepdims=True)
            logp -= numpy.log(numpy.exp(logp).sum(axis=-1, keepdims=True))
            for i, row in enumerate(part):
                s = starts[lo + i]
                targets = numpy.array(row[s:])
                out[lo + i, 0] = logp[i, numpy.arange(s - 1, len(row) - 1), targets].sum()
                out[lo + i, 1] = len(targets)
    return out


def label_scores(model, tokenizer, prompts: list[str], verbalizers: list[str], normalize: str = "sum",
                 prefix_eos: bool = True, batch_size: int = 32) -> numpy.ndarray:
    """(N prompts, K labels) scores: the log-likelihood of each verbalizer after each prompt.

    ``prefix_eos`` starts each prompt with EOS, the document boundary the model saw in
    pre-training, so the prompt reads as the start of a new text.
    """
    if normalize not in ("sum", "mean"):
        raise ValueError(f"normalize must be 'sum' or 'mean', got {normalize!r}")
    head = [tokenizer.eos_id] if prefix_eos else []
    ctx = [head + tokenizer.encode(p, disallowed_special=()) for p in prompts]
    cont = [tokenizer.encode(v, disallowed_special=()) for v in verbalizers]
    pairs_ctx = [c for c in ctx for _ in cont]
    pairs_cont = [v for _ in ctx for v in cont]
    s = continuation_scores(model, pairs_ctx, pairs_cont, batch_size)
    scores = s[:, 0] / (s[:, 1] if normalize == "mean" else 1.0)
    return scores.reshape(len(prompts), len(verbalizers))


def resolve_verbalizers(examples, verbalizers: dict | None = None) -> dict:
    """label -> verbalizer for every label; a label in the data without one is an error.

    Without ``verbalizers`` each label of the data stands for itself, after a space.
    """
    verbalizers = dict(verbalizers) if verbalizers else \
        {label: " " + label for label in sorted({ex["label"] for ex in examples})}
    for i, ex in enumerate(examples):
        if ex["label"] not in verbalizers:
            raise TaskDataError(
                f"{where(examples, i, 'the evaluation data')}: label {ex['label']!r} has no verbalizer "
                f"(the labels scored are: {', '.join(verbalizers)}); add it, e.g. "
                f"--verbalizer {ex['label']}=WORD")
    if len(verbalizers) < 2:
        raise ValueError(f"zero-shot classification needs at least 2 labels to choose from, got "
                         f"{list(verbalizers)}")
    return verbalizers


def zero_shot_classify(model, tokenizer, examples, template: str, verbalizers: dict | None = None,
                       calibrate: bool = False, normalize: str = "sum", prefix_eos: bool = True,
                       batch_size: int = 32) -> dict:
    """Classify ``examples`` ({"text", "label"}) by comparing label likelihoods; the report."""
    if families.of(model).architecture != "decoder-only":
        raise ValueError(f"zero-shot prompting scores text with a GPT (decoder-only) model, got a "
                         f"{model.config.family.upper()} model; fine-tune encoders with "
                         "'minitransformer finetune'")
    if not examples:
        raise ValueError("no examples to evaluate")
    verbalizers = resolve_verbalizers(examples, verbalizers=verbalizers)
    labels = list(verbalizers)
    prompts = [fill(template, ex) for ex in examples]
    scores = label_scores(model, tokenizer, prompts, [verbalizers[k] for k in labels], normalize,
                          prefix_eos, batch_size)
    if calibrate:
        free = label_scores(model, tokenizer, [fill(template, {"text": CONTENT_FREE, "text_pair": CONTENT_FREE})],
                            [verbalizers[k] for k in labels], normalize, prefix_eos, batch_size)
        scores = scores - free                                      # (N, K) - (1, K)
    predictions = [labels[i] for i in scores.argmax(axis=1)]
    gold = [ex["label"] for ex in examples]
    constant = Counter(gold).most_common(1)[0]
    majority = metrics.classification_report(gold, [constant[0]] * len(gold))
    majority.pop("per_label")
    return {
        "task": "zero-shot classify", "template": template, "verbalizers": verbalizers,
        "calibrated": calibrate, "normalize": normalize, "eval_examples": len(examples),
        "metrics": metrics.classification_report(gold, predictions), "primary_metric": "accuracy",
        # No training data: the constant baseline answers the most frequent label of the
        # evaluation data itself, the best any input-blind guess can do.
        "baselines": {"majority": dict(majority, label=constant[0])},
        "prediction_counts": dict(Counter(predictions)),
        "samples": [{"prompt": p, "label": g, "prediction": q,
                     "scores": {k: round(float(v), 3) for k, v in zip(labels, row)}}
                    for p, g, q, row in list(zip(prompts, gold, predictions, scores))[:5]],
    }
