"""Task data: built-in generators, reading and checking .jsonl files, sub-word alignment."""
import json
import re

import numpy as np
import pytest

import minitransformer as mt
from minitransformer.data import BPETokenizer
from minitransformer.finetune import tasks
from minitransformer.finetune.tag import align_words
from minitransformer.finetune.zero_shot import continuation_scores, label_scores, resolve_verbalizers


@pytest.mark.parametrize("name", list(tasks.BUILTIN))
def test_builtin_tasks_are_deterministic_disjoint_and_checked(name):
    task = tasks.builtin_task(name)
    train = tasks.builtin(name, "train", 400)
    test = tasks.builtin(name, "test", 100)
    assert train == tasks.builtin(name, "train", 400) and len(train) == 400 and len(test) == 100
    assert tasks.builtin(name, "train", 400, seed=1) != train
    seen = {tasks.input_text(ex, task) for ex in train}
    assert len(seen) == 400 and not seen & {tasks.input_text(ex, task) for ex in test}
    for i, ex in enumerate(train + test):
        assert tasks.check_example(ex, task, f"example {i}") == ex
    if task == "classify":
        assert sorted(ex["label"] for ex in test).count("positive") == 50


def test_sentiment_needs_more_than_the_adjective():
    # the adjective's own polarity disagrees with the label in a good share of examples
    train = tasks.builtin("sentiment", "train", 1000)
    flipped = sum(any(w in ex["text"] for w in (" not ", "n't ", " never ", "Nothing", " but ", "Although"))
                  for ex in train)
    assert 0.4 < flipped / len(train) < 0.9


def test_entities_are_ambiguous_without_context():
    train = tasks.builtin("entities", "train", 1000)
    tags_of_may = {t for ex in train for w, t in zip(ex["tokens"], ex["tags"]) if w == "May"}
    assert {"B-PER", "B-DATE"} <= tags_of_may


def test_number_words():
    assert tasks.number_words(0) == "zero"
    assert tasks.number_words(342) == "three hundred and forty two"
    assert tasks.number_words(7005) == "seven thousand and five"
    assert tasks.number_words(120000) == "one hundred and twenty thousand"
    ex = tasks.builtin("numbers", "train", 50)
    assert all(any(c.isdigit() for c in e["target"]) and not any(c.isdigit() for c in e["input"]) for e in ex)


def test_pretraining_corpus_never_holds_a_test_input():
    docs = tasks.pretraining_corpus(300)
    sentences = {s for d in docs for s in re.split(r"(?<=\.) ", d)}
    assert "Overall, it was good." in sentences and "Overall, it was bad." in sentences
    for name in ("sentiment", "numbers"):
        task = tasks.builtin_task(name)
        train = {tasks.input_text(ex, task) for ex in tasks.builtin(name, "train", 300)}
        sentence = {t[0].upper() + t[1:] + ("" if t.endswith(".") else ".") for t in train}
        assert sentence & sentences                    # the corpus does share the training side
        for ex in tasks.builtin(name, "test", 150):
            text = tasks.input_text(ex, task)
            assert text[0].upper() + text[1:] + ("" if text.endswith(".") else ".") not in sentences


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("task, line, message", [
    ("classify", '{"text": "fine"}', "line.jsonl:2: missing field 'label'"),
    ("classify", '{"text": 3, "label": "a"}', "line.jsonl:2: field 'text' must be a string, got int"),
    ("classify", '{"text": "x", "label": null}', "field 'label' must be a non-empty string or an integer"),
    ("classify", '{"text": "x", "label": "a"', "line.jsonl:2: not valid JSON"),
    ("classify", '["x", "a"]', "expected a JSON object with fields text, label"),
    ("tag", '{"tokens": ["a", "b"], "tags": ["O"]}', "line.jsonl:2: 2 tokens but 1 tags"),
    ("tag", '{"tokens": ["a"], "tags": ["PER"]}', "tag 0 ('PER') is not a BIO tag"),
    ("tag", '{"tokens": ["a b"], "tags": ["O"]}', "token 0 ('a b') must be one word"),
    ("tag", '{"words": ["a"], "tags": ["O"]}', "missing field 'tokens'"),
    ("seq2seq", '{"input": "x", "output": "y"}', "missing field 'target'"),
])
def test_bad_task_files_name_the_line_and_the_field(tmp_path, task, line, message):
    first = {"classify": '{"text": "good", "label": "a"}', "tag": '{"tokens": ["a"], "tags": ["O"]}',
             "seq2seq": '{"input": "a", "target": "b"}'}[task]
    path = _write(tmp_path / "line.jsonl", [first, line])
    with pytest.raises(tasks.TaskDataError) as e:
        tasks.read_jsonl(path, task)
    assert message in str(e.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl does not exist"):
        tasks.read_jsonl(tmp_path / "nope.jsonl", "classify")
    with pytest.raises(tasks.TaskDataError, match="holds no examples"):
        tasks.read_jsonl(_write(tmp_path / "e.jsonl", [""]), "classify")


def test_unknown_labels_at_evaluation_are_refused_with_their_line(tmp_path):
    path = _write(tmp_path / "eval.jsonl", ['{"text": "ok", "label": "pos"}', '{"text": "meh", "label": "neutral"}'])
    examples = tasks.read_jsonl(path, "classify")
    with pytest.raises(tasks.TaskDataError, match=r"eval.jsonl:2: label 'neutral' was not in the training "
                                                  r"data.*it knows: neg, pos"):
        tasks.check_labels(examples, ["neg", "pos"], "classify")
    path = _write(tmp_path / "tags.jsonl", [json.dumps({"tokens": ["Oslo"], "tags": ["B-LOC"]})])
    with pytest.raises(tasks.TaskDataError, match="tags.jsonl:1: label 'B-LOC'"):
        tasks.check_labels(tasks.read_jsonl(path, "tag"), ["O", "B-PER", "I-PER"], "tag")


def test_label_sets():
    assert tasks.label_set([{"label": "b"}, {"label": "a"}], "classify") == ["a", "b"]
    assert tasks.label_set([{"tags": ["O", "I-PER", "B-NUM"]}], "tag") == ["O", "B-NUM", "I-NUM", "B-PER", "I-PER"]


@pytest.fixture(scope="module")
def tokenizer():
    return BPETokenizer.train(tasks.pretraining_corpus(200), 400)


def test_word_labels_go_to_the_first_sub_token(tokenizer):
    words = ["Maria", "paid", "12,500", "dollars", "naïve", "Zyxwvq", "."]
    ids, first = align_words(tokenizer, words, max_length=64)
    assert ids[0] == tokenizer.cls_id and ids[-1] == tokenizer.sep_id
    assert tokenizer.decode(ids[1:-1]) == " ".join(words)
    assert first[0] == 1 and first == sorted(first)
    for w, (a, b) in enumerate(zip(first, first[1:] + [len(ids) - 1])):
        assert tokenizer.decode(ids[a:b]).strip() == words[w]        # the word's tokens, and only them
    assert len(ids) > len(words) + 2                                  # some words are several tokens
    short, cut = align_words(tokenizer, words, max_length=5)
    assert len(short) == 5 and cut[-1] == -1 and cut[0] == 1          # truncated words have no token


def test_zero_shot_scores_are_the_model_log_likelihoods(tokenizer):
    cfg = mt.models.GPTConfig(vocab_size=tokenizer.vocab_size, n_positions=32, n_embd=16, n_layer=1, n_head=2,
                              resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    mt.manual_seed(0)
    model = mt.models.GPT(cfg).astype("float64")
    contexts, continuations = [[5, 6, 7], [8], [9, 10, 11, 12]], [[20, 21], [22], [23]]
    got = continuation_scores(model, contexts, continuations, batch_size=2)
    for (ctx, cont), (score, n) in zip(zip(contexts, continuations), got):
        ids = np.array([ctx + cont])
        labels = np.array([[-100] * len(ctx) + cont])
        nll = model.loss({"input_ids": ids, "labels": labels}, reduction="sum").item()
        assert score == pytest.approx(-nll, rel=1e-9) and n == len(cont)
    scores = label_scores(model, tokenizer, ["The soup was bad.", "Fine."], [" good", " bad"])
    assert scores.shape == (2, 2) and (scores < 0).all()


def test_verbalizers_must_cover_the_labels():
    examples = [{"text": "x", "label": "pos"}, {"text": "y", "label": "neutral"}]
    assert resolve_verbalizers(examples) == {"neutral": " neutral", "pos": " pos"}
    with pytest.raises(ValueError, match="label 'neutral' has no verbalizer"):
        resolve_verbalizers(examples, verbalizers={"pos": " good", "neg": " bad"})


def test_batches_are_a_pure_function_of_the_index():
    from minitransformer.finetune.loop import ExampleBatches, FinetuneConfig

    data = ExampleBatches(list(range(10)), lambda rows: {"x": np.array(rows)}, seed=3)
    first = [data.batch(i, 4)["x"].tolist() for i in range(5)]
    assert first == [ExampleBatches(list(range(10)), lambda r: {"x": np.array(r)}, 3).batch(i, 4)["x"].tolist()
                     for i in range(5)]
    assert sorted(sum(first, [])[:10]) == list(range(10))           # an epoch visits each example once
    assert data.batch(2, 4, rows=slice(1, 3))["x"].tolist() == first[2][1:3]
    assert FinetuneConfig(steps=1000).warmup_steps == 100 and FinetuneConfig(warmup=0).warmup_steps == 0
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        FinetuneConfig(steps=0)
    assert FinetuneConfig.for_task("classify").lr == 3e-4 and FinetuneConfig.for_task("tag").steps == 300
    assert FinetuneConfig.for_task("seq2seq", steps=7, lr=None).steps == 7       # None keeps the default
    with pytest.raises(ValueError, match="unknown task 'ner'"):
        FinetuneConfig.for_task("ner")
