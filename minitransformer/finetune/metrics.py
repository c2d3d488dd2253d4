"""Evaluation metrics for the three fine-tuning tasks, written out from their definitions.

Classification
    accuracy  = share of examples whose predicted label is the gold one.
    macro-F1  = the mean over labels c of F1_c = 2 P_c R_c / (P_c + R_c), with
                P_c = TP_c / (TP_c + FP_c) and R_c = TP_c / (TP_c + FN_c) (0 when undefined).
                Every label counts the same, so always answering the majority label scores
                badly even on a skewed test set. Labels that occur neither in the gold nor
                in the predictions are left out (as scikit-learn does).

Tagging (entity level, as CoNLL's conlleval and seqeval score it)
    A BIO sequence is read as a set of entities (type, first word, last word): an entity
    starts at B-X, or at I-X that does not continue an entity of type X (the lenient
    reading of a malformed sequence), and runs over the I-X words after it. A predicted
    entity is correct only if type and both boundaries match a gold one exactly;
    precision, recall and F1 are computed over all entities of the test set (micro).
    Word accuracy would reward the many O words; entity F1 does not.

Sequence to sequence (as SQuAD scores answers)
    exact match = share of outputs equal to the target, after collapsing runs of whitespace.
    token F1    = the mean over examples of the F1 of the bags of whitespace-separated
                  words: overlap = |pred words ∩ gold words| (counted with multiplicity),
                  P = overlap / |pred|, R = overlap / |gold| (1 when both are empty).
                  It gives partial credit to an output that is nearly right.
"""
from __future__ import annotations

from collections import Counter


def _check_lengths(gold, pred, what: str) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"{what}: {len(gold)} gold items but {len(pred)} predictions; give one "
                         "prediction per example")
    if not gold:
        raise ValueError(f"{what}: no examples to score")


def _f1(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


# ---------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------

def accuracy(gold, pred) -> float:
    _check_lengths(gold, pred, "accuracy")
    return sum(g == p for g, p in zip(gold, pred)) / len(gold)


def per_label_f1(gold, pred) -> dict:
    """label -> {"precision", "recall", "f1", "support"} for every label seen in either."""
    _check_lengths(gold, pred, "per_label_f1")
    out = {}
    for c in sorted(set(gold) | set(pred), key=str):
        tp = sum(g == c and p == c for g, p in zip(gold, pred))
        fp = sum(g != c and p == c for g, p in zip(gold, pred))
        fn = sum(g == c and p != c for g, p in zip(gold, pred))
        p, r, f = _f1(tp, fp, fn)
        out[c] = {"precision": p, "recall": r, "f1": f, "support": tp + fn}
    return out


def macro_f1(gold, pred) -> float:
    scores = per_label_f1(gold, pred)
    return sum(s["f1"] for s in scores.values()) / len(scores)


def classification_report(gold, pred) -> dict:
    return {"accuracy": accuracy(gold, pred), "macro_f1": macro_f1(gold, pred),
            "per_label": per_label_f1(gold, pred)}


# ---------------------------------------------------------------------------------------
# Tagging: BIO sequences -> entities
# ---------------------------------------------------------------------------------------

def entities(tags) -> set:
    """The entities (type, first, last) of one BIO tag sequence (word indices, inclusive)."""
    found, start, kind = set(), None, None
    for i, tag in enumerate(list(tags) + ["O"]):        # a sentinel O closes the last entity
        prefix, _, t = tag.partition("-")
        continues = prefix == "I" and kind == t
        if start is not None and not continues:
            found.add((kind, start, i - 1))
            start, kind = None, None
        if prefix == "B" or (prefix == "I" and not continues):
            start, kind = i, t
    return found


def entity_f1(gold_seqs, pred_seqs) -> dict:
    """Micro precision, recall and F1 over entities, and the same per entity type."""
    _check_lengths(gold_seqs, pred_seqs, "entity_f1")
    tp, n_gold, n_pred = Counter(), Counter(), Counter()
    for i, (g, p) in enumerate(zip(gold_seqs, pred_seqs)):
        if len(g) != len(p):
            raise ValueError(f"entity_f1: sentence {i} has {len(g)} gold tags but {len(p)} predicted")
        ge, pe = entities(g), entities(p)
        n_gold.update(e[0] for e in ge)
        n_pred.update(e[0] for e in pe)
        tp.update(e[0] for e in ge & pe)
    total_tp, total_gold, total_pred = sum(tp.values()), sum(n_gold.values()), sum(n_pred.values())
    p, r, f = _f1(total_tp, total_pred - total_tp, total_gold - total_tp)
    per_type = {}
    for t in sorted(set(n_gold) | set(n_pred)):
        tp_t = tp[t]
        pt, rt, ft = _f1(tp_t, n_pred[t] - tp_t, n_gold[t] - tp_t)
        per_type[t] = {"precision": pt, "recall": rt, "f1": ft, "support": n_gold[t]}
    return {"precision": p, "recall": r, "f1": f, "gold_entities": total_gold,
            "predicted_entities": total_pred, "per_type": per_type}


def tag_accuracy(gold_seqs, pred_seqs) -> float:
    """Share of words tagged right (reported beside entity F1, which is the real measure)."""
    _check_lengths(gold_seqs, pred_seqs, "tag_accuracy")
    pairs = [(g, p) for gs, ps in zip(gold_seqs, pred_seqs) for g, p in zip(gs, ps)]
    return sum(g == p for g, p in pairs) / max(len(pairs), 1)


# ---------------------------------------------------------------------------------------
# Sequence to sequence
# ---------------------------------------------------------------------------------------

def normalize(text: str) -> str:
    return " ".join(text.split())


def exact_match(gold, pred) -> float:
    _check_lengths(gold, pred, "exact_match")
    return sum(normalize(g) == normalize(p) for g, p in zip(gold, pred)) / len(gold)


def token_f1_one(gold: str, pred: str) -> float:
    g, p = gold.split(), pred.split()
    if not g and not p:
        return 1.0
    overlap = sum((Counter(g) & Counter(p)).values())
    return _f1(overlap, len(p) - overlap, len(g) - overlap)[2]


def token_f1(gold, pred) -> float:
    _check_lengths(gold, pred, "token_f1")
    return sum(token_f1_one(g, p) for g, p in zip(gold, pred)) / len(gold)


def seq2seq_report(gold, pred) -> dict:
    return {"exact_match": exact_match(gold, pred), "token_f1": token_f1(gold, pred)}
