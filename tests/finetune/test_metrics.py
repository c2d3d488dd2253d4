"""Metrics against hand-worked examples, a second formulation, scikit-learn and seqeval."""
import numpy as np
import pytest
import seqeval.metrics
import sklearn.metrics
from hypothesis import given, settings
from hypothesis import strategies as st

from minitransformer.finetune import metrics

TAGS = ["O", "B-PER", "I-PER", "B-NUM", "I-NUM"]


def test_entities_follow_conlleval():
    assert metrics.entities(["B-PER", "I-PER", "O", "B-NUM"]) == {("PER", 0, 1), ("NUM", 3, 3)}
    # I- that continues nothing starts an entity (the lenient reading seqeval uses by default)
    assert metrics.entities(["O", "I-PER", "I-PER"]) == {("PER", 1, 2)}
    # a type change inside a run ends one entity and starts another
    assert metrics.entities(["B-PER", "I-NUM", "I-NUM"]) == {("PER", 0, 0), ("NUM", 1, 2)}
    # B- after B- of the same type: two entities
    assert metrics.entities(["B-PER", "B-PER", "I-PER"]) == {("PER", 0, 0), ("PER", 1, 2)}
    assert metrics.entities(["O", "O"]) == set()


def test_entity_f1_needs_exact_boundaries():
    gold = [["B-PER", "I-PER", "O", "B-NUM"], ["B-NUM", "O"]]
    pred = [["B-PER", "O", "O", "B-NUM"], ["B-NUM", "B-PER"]]
    # gold: 3 entities; predicted: 4; right: NUM(0,3) and NUM(1,0) -> P 2/4, R 2/3
    r = metrics.entity_f1(gold, pred)
    assert r["precision"] == pytest.approx(0.5) and r["recall"] == pytest.approx(2 / 3)
    assert r["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert r["per_type"]["PER"]["f1"] == 0.0 and r["per_type"]["NUM"]["f1"] == 1.0


def test_classification_and_seq2seq_worked_examples():
    gold, pred = ["a", "a", "a", "b"], ["a", "a", "b", "b"]
    # a: P 1, R 2/3, F1 0.8; b: P 1/2, R 1, F1 2/3
    assert metrics.accuracy(gold, pred) == 0.75
    assert metrics.macro_f1(gold, pred) == pytest.approx((0.8 + 2 / 3) / 2)
    # always "a": b's F1 is 0, so macro-F1 is half of a's
    assert metrics.macro_f1(gold, ["a"] * 4) == pytest.approx((2 * 0.75 / 1.75) / 2)
    assert metrics.exact_match(["she bought 42 apples"], ["she  bought 42 apples "]) == 1.0
    # 3 of 4 gold words, 3 of 5 predicted words
    assert metrics.token_f1(["she bought 42 apples"], ["she bought forty two apples"]) == \
        pytest.approx(2 * 0.6 * 0.75 / 1.35)
    assert metrics.token_f1([""], [""]) == 1.0 and metrics.token_f1(["x"], [""]) == 0.0


def test_length_mismatch_is_refused():
    with pytest.raises(ValueError, match="2 gold items but 1 predictions"):
        metrics.accuracy(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="sentence 0 has 2 gold tags but 1 predicted"):
        metrics.entity_f1([["O", "O"]], [["O"]])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=40))
def test_macro_f1_matches_a_confusion_matrix(pairs):
    gold, pred = [g for g, _ in pairs], [p for _, p in pairs]
    c = np.zeros((4, 4))
    for g, p in pairs:
        c[g, p] += 1
    present = [k for k in range(4) if c[k].sum() or c[:, k].sum()]
    f1 = [2 * c[k, k] / (c[k].sum() + c[:, k].sum()) for k in present]   # 2TP / (2TP + FP + FN)
    assert metrics.macro_f1(gold, pred) == pytest.approx(np.mean(f1))
    assert metrics.accuracy(gold, pred) == pytest.approx(np.trace(c) / len(pairs))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from(TAGS), min_size=1, max_size=8), min_size=1, max_size=6),
       st.randoms(use_true_random=False))
def test_entity_f1_properties(gold, random):
    perfect = metrics.entity_f1(gold, gold)
    has = perfect["gold_entities"] > 0
    assert perfect["f1"] == (1.0 if has else 0.0)
    pred = [[random.choice(TAGS) for _ in s] for s in gold]
    r = metrics.entity_f1(gold, pred)
    swapped = metrics.entity_f1(pred, gold)
    assert 0.0 <= r["f1"] <= 1.0
    # precision and recall trade places when gold and prediction do
    assert r["precision"] == pytest.approx(swapped["recall"]) and r["f1"] == pytest.approx(swapped["f1"])
    # every word of every entity lies inside one span, and spans do not overlap
    for s in pred:
        covered = [i for _, a, b in metrics.entities(s) for i in range(a, b + 1)]
        assert len(covered) == len(set(covered))
        assert set(covered) == {i for i, t in enumerate(s) if t != "O"}


# ---------------------------------------------------------------------------------------
# Against the libraries people score with: scikit-learn (classification) and seqeval
# (CoNLL entity F1, its default lenient reading of I- without a B-)
# ---------------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcd"), st.sampled_from("abcd")), min_size=1, max_size=40))
def test_classification_matches_scikit_learn(pairs):
    gold, pred = [g for g, _ in pairs], [p for _, p in pairs]
    assert metrics.accuracy(gold, pred) == pytest.approx(sklearn.metrics.accuracy_score(gold, pred))
    assert metrics.macro_f1(gold, pred) == pytest.approx(
        sklearn.metrics.f1_score(gold, pred, average="macro", zero_division=0))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.lists(st.sampled_from(TAGS), min_size=1, max_size=8), min_size=1, max_size=6),
       st.randoms(use_true_random=False))
def test_entity_f1_matches_seqeval(gold, random):
    # predictions near the gold (a few tags changed), so scores spread over [0, 1]
    pred = [[random.choice(TAGS) if random.random() < 0.3 else t for t in s] for s in gold]
    r = metrics.entity_f1(gold, pred)
    assert r["precision"] == pytest.approx(seqeval.metrics.precision_score(gold, pred, zero_division=0))
    assert r["recall"] == pytest.approx(seqeval.metrics.recall_score(gold, pred, zero_division=0))
    assert r["f1"] == pytest.approx(seqeval.metrics.f1_score(gold, pred, zero_division=0))
