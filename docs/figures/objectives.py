"""What each objective shows the model and asks of it, on a real sentence of the built-in corpus.

The batches come from the library's own objectives (CLM, MLM, span corruption) over the
sentence's tokens; the MLM panel also counts, over many rows, how the selected tokens were
treated, which is BERT's 80/10/10 rule.
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from minitransformer import objectives
from minitransformer.objectives.blocks import IGNORE_INDEX

from . import _common

MLM_ROWS = 4000       # rows the 80/10/10 shares are counted over
VOCAB = 1024          # a larger vocabulary than the other figures: fewer, whole-word tokens
STEP = 1.25           # horizontal room per token box


def _row(ax, y, labels, colors, title):
    ax.text(-0.5, y + 0.45, title, ha="left", va="center", fontsize=8, style="italic")
    for x, (lab, col) in enumerate(zip(labels, colors)):
        ax.text(x * STEP, y, lab, ha="center", va="center", fontsize=7, family="monospace",
                bbox=dict(boxstyle="round,pad=0.25", fc=col, ec="0.6"))


def make(out_dir):
    tok = _common.tokenizer(VOCAB)
    text = _common.sentence()
    ids = np.array(tok.encode(text), dtype=np.int64)
    n = len(ids)
    names = lambda row: _common.token_labels(tok, row)                          # noqa: E731
    facts = {"sentence": text, "tokens": n}

    # Causal LM: the inputs, and as target at each position the next token.
    clm = objectives.CLMObjective(np.append(ids, tok.eos_id), n + 1, eos_id=tok.eos_id, shuffle=False)
    b = clm.batch(0, 1)
    inputs, targets = b["input_ids"][0, :-1], b["labels"][0, 1:]

    # Masked LM: one stream holding the sentence many times; each row is masked afresh.
    stream = np.tile(np.append(ids, tok.eos_id), MLM_ROWS)
    mlm = objectives.MLMObjective(stream, n + 3, vocab_size=tok.vocab_size, mask_id=tok.mask_id,
                                  cls_id=tok.cls_id, sep_id=tok.sep_id, pad_id=tok.pad_id,
                                  special_ids=tok.special_ids, seed=_common.SEED, shuffle=False)
    mb = mlm.batch(0, MLM_ROWS)
    sel = mb["labels"] != IGNORE_INDEX
    masked = sel & (mb["input_ids"] == tok.mask_id)
    kept = sel & (mb["input_ids"] == mb["labels"])
    randomised = sel & ~masked & ~kept
    # Every row is [CLS] sentence EOS [SEP]: n candidate tokens per row.
    shares = {"selected": sel.sum() / (MLM_ROWS * n),
              "mask": masked.sum() / sel.sum(), "random": randomised.sum() / sel.sum(),
              "kept": kept.sum() / sel.sum()}
    facts["mlm_shares"] = {k: round(float(v), 4) for k, v in shares.items()}
    example = next(r for r in range(MLM_ROWS) if masked[r].any() and (randomised[r].any() or kept[r].any()))

    # Span corruption: spans become sentinels; the target writes each sentinel and its span.
    span = objectives.SpanCorruptionObjective(np.append(ids, tok.eos_id), n + 1, vocab_size=tok.vocab_size,
                                              eos_id=tok.eos_id, pad_id=tok.pad_id,
                                              special_ids=tok.special_ids, seed=_common.SEED)
    rng = np.random.default_rng(_common.SEED + 3)
    while True:                            # a draw with at least one span, for the picture
        s_in, s_out = span.corrupt(ids, rng)
        if len(s_out) > 2 and s_in[0] < span.lowest_sentinel:
            break
    # Reassemble the sentence from the two halves: the check that nothing was lost.
    pieces, out_iter = [], iter(s_out[:-1])
    spans, cur = {}, None
    for t in out_iter:
        if t >= span.lowest_sentinel:
            cur = int(t)
            spans[cur] = []
        else:
            spans[cur].append(int(t))
    for t in s_in[:-1]:
        pieces += spans[int(t)] if t >= span.lowest_sentinel else [int(t)]
    facts["span_roundtrip"] = pieces == ids.tolist()
    facts["span_sentinels"] = len(spans)

    fig = Figure(figsize=(13, 5.6))
    ax, bar = fig.subplots(1, 2, gridspec_kw={"width_ratios": [5, 1]})
    y = 9
    _row(ax, y, names(inputs), ["#dbe8f6"] * len(inputs), "GPT (CLM) sees")
    _row(ax, y - 1, names(targets), ["#d7f0d2"] * len(targets), "predicts, at each position")
    mrow_in, mrow_lab = mb["input_ids"][example], mb["labels"][example]
    colors = ["#f6d5d5" if masked[example, i] else "#fbc98a" if randomised[example, i]
              else "#c9b3ef" if kept[example, i] else "#dbe8f6" for i in range(len(mrow_in))]
    _row(ax, y - 3, names(mrow_in), colors,
         "BERT (MLM) sees  (red: [MASK], orange: a random token, violet: kept but asked)")
    _row(ax, y - 4, [names([t])[0] if t != IGNORE_INDEX else "\u00b7" for t in mrow_lab],
         ["#d7f0d2" if t != IGNORE_INDEX else "white" for t in mrow_lab], "predicts (\u00b7: no loss)")
    _row(ax, y - 6, names(s_in), ["#f6d5d5" if t >= span.lowest_sentinel else "#dbe8f6" for t in s_in],
         "T5 encoder sees")
    _row(ax, y - 7, names(s_out), ["#f6d5d5" if t >= span.lowest_sentinel else "#d7f0d2" for t in s_out],
         "T5 decoder writes")
    ax.set_xlim(-0.8, STEP * max(len(inputs), len(mrow_in), len(s_in)) + 0.5)
    ax.set_ylim(1.5, 10.2)
    ax.axis("off")
    ax.set_title(f"\u201c{text}\u201d  ({n} tokens)", fontsize=9)
    keys = ["mask", "random", "kept"]
    bar.bar(keys, [shares[k] for k in keys], color=["#f6d5d5", "#fbc98a", "#c9b3ef"], ec="0.5")
    for i, k in enumerate(keys):
        bar.text(i, shares[k] + 0.01, f"{shares[k]:.3f}", ha="center", fontsize=8)
    bar.set_title(f"MLM: selected tokens\n({shares['selected']:.3f} of all, {MLM_ROWS} rows)", fontsize=8)
    bar.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(out_dir / "objectives.png", dpi=110)
    return facts
