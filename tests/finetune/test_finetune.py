"""Each family at the job it suits: fine-tuned BERT classifies and tags, fine-tuned T5
translates, GPT answers zero-shot; each fine-tuned task beats its baseline by 15 points."""
import json
from pathlib import Path

import pytest

from minitransformer.checkpoint import CheckpointError, load_model
from minitransformer.cli import main
from minitransformer.finetune import FinetuneConfig, builtin, evaluate_finetuned, finetune

MARGIN = 0.15


def _beats(report, baseline):
    key = report["primary_metric"]
    ours, base = report["metrics"][key], report["baselines"][baseline][key]
    assert ours >= base + MARGIN, (key, ours, baseline, base, report["samples"])
    return ours - base


@pytest.mark.slow
def test_bert_sentence_classification(tiny_checkpoints, tmp_path, capsys):
    train, test = builtin("sentiment", "train", 2000), builtin("sentiment", "test", 200)
    out = tmp_path / "sentiment"
    report = finetune("classify", tiny_checkpoints["bert"], train, test,
                      FinetuneConfig(steps=1000, lr=1e-3, max_length=64), out_dir=out)
    _beats(report, "majority")
    assert report["metrics"]["macro_f1"] >= report["baselines"]["majority"]["macro_f1"] + MARGIN
    assert report["labels"] == ["negative", "positive"] and report["init"] == "pre-trained"
    assert "warnings" not in report
    # the saved model predicts exactly what the trained one did
    again = evaluate_finetuned(out, test)
    assert again["metrics"]["accuracy"] == report["metrics"]["accuracy"]
    assert json.loads((out / "report.json").read_text())["metrics"] == report["metrics"]
    # ... and from the command line, where a label it never saw is refused with its line
    assert main(["evaluate", "--model", str(out), "--task", "sentiment", "--n", "20"]) == 0
    bad = _write(tmp_path / "eval.jsonl", [{"text": "Fine.", "label": "positive"}, {"text": "Meh.", "label": "mixed"}])
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out), "--data", bad]) == 2
    assert "eval.jsonl:2: label 'mixed' was not in the training data" in capsys.readouterr().err
    assert main(["finetune", "--task", "classify", "--model", str(out), "--builtin", "sentiment"]) == 2
    assert "is already a fine-tuned model" in capsys.readouterr().err
    # info describes the folder: task, labels, score
    assert main(["info", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "fine-tuned for classify: BertForSequenceClassification" in shown
    assert "labels: negative, positive" in shown and f"accuracy {report['metrics']['accuracy']:.3f}" in shown
    assert "family: bert" in shown
    # a classifier is a body plus a head, not a pre-training model: refused, with where to go
    with pytest.raises(CheckpointError, match="fine-tuned for 'classify'.*load_finetuned"):
        load_model(out)
    assert main(["generate", "--model", str(out), "--prompt", "The"]) == 2
    assert "minitransformer evaluate --model" in capsys.readouterr().err


@pytest.mark.slow
def test_bert_token_classification(tiny_checkpoints):
    train, test = builtin("entities", "train", 2000), builtin("entities", "test", 200)
    report = finetune("tag", tiny_checkpoints["bert"], train, test,
                      FinetuneConfig(steps=250, lr=1e-3, max_length=64))
    _beats(report, "majority")
    assert report["labels"] == ["O", "B-DATE", "I-DATE", "B-NUM", "I-NUM", "B-PER", "I-PER"]
    assert set(report["metrics"]["per_type"]) == {"DATE", "NUM", "PER"}
    # context, not a lexicon: better than tagging each word with its most frequent tag
    assert report["metrics"]["entity_f1"] > report["baselines"]["word_majority"]["entity_f1"]


@pytest.mark.slow
def test_t5_seq2seq_from_the_command_line(tiny_checkpoints, tmp_path, capsys):
    out = tmp_path / "numbers"
    status = main(["finetune", "--builtin", "numbers", "--model", tiny_checkpoints["t5"], "--steps", "400",
                   "--lr", "3e-3", "--n-eval", "200", "--max-length", "64", "--out", str(out), "--no-progress"])
    assert status == 0
    report = json.loads(capsys.readouterr().out)
    assert report["task"] == "seq2seq" and report["baselines"]["copy"]["exact_match"] == 0.0
    _beats(report, "copy")
    assert json.loads((out / "report.json").read_text())["metrics"] == report["metrics"]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics[:-1]] == list(range(1, 401)) and all("loss" in m for m in metrics[:-1])
    assert metrics[-1]["eval_exact_match"] == report["metrics"]["exact_match"]
    # T5 keeps its pre-training head, so the folder is also a plain T5 checkpoint
    assert type(load_model(out)).__name__ == "T5"
    assert main(["evaluate", "--model", str(out), "--task", "numbers", "--n", "10"]) == 0
    assert json.loads(capsys.readouterr().out)["eval_examples"] == 10


@pytest.mark.slow
def test_gpt_zero_shot_from_the_command_line(tiny_checkpoints, tmp_path, capsys):
    path = tmp_path / "zs.json"
    assert main(["evaluate", "--model", tiny_checkpoints["gpt"], "--task", "sentiment", "--n", "40",
                 "--report", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads(path.read_text())
    assert report["verbalizers"] == {"positive": " good", "negative": " bad"}
    assert sum(report["prediction_counts"].values()) == 40
    assert 0.0 <= report["metrics"]["accuracy"] <= 1.0
    assert report["baselines"]["majority"]["accuracy"] == 0.5
    assert main(["evaluate", "--model", tiny_checkpoints["gpt"], "--task", "sentiment", "--n", "10",
                 "--calibrate"]) == 0


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_user_mistakes_give_one_line(tiny_checkpoints, tmp_path, capsys):
    good = _write(tmp_path / "train.jsonl", [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}] * 5)
    cases = [
        (["finetune", "--task", "classify", "--model", tiny_checkpoints["gpt"], "--data", good],
         "task 'classify' fine-tunes a BERT model, but"),
        (["finetune", "--task", "seq2seq", "--model", tiny_checkpoints["bert"], "--builtin", "numbers"],
         "holds a BERT model; pre-train one with 'minitransformer pretrain --objective span'"),
        (["finetune", "--task", "classify", "--model", tiny_checkpoints["bert"],
          "--data", _write(tmp_path / "bad.jsonl", [{"text": "good", "label": "pos"}, {"txt": "bad", "label": "neg"}])],
         "bad.jsonl:2: missing field 'text'"),
        (["finetune", "--task", "classify", "--model", tiny_checkpoints["bert"], "--data", good, "--eval",
          _write(tmp_path / "eval.jsonl", [{"text": "fine", "label": "pos"}, {"text": "meh", "label": "neutral"}])],
         "eval.jsonl:2: label 'neutral' was not in the training data"),
        (["finetune", "--task", "tag", "--builtin", "sentiment", "--model", tiny_checkpoints["bert"]],
         "built-in task 'sentiment' is a classify task, not tag"),
        (["finetune", "--task", "classify", "--model", tiny_checkpoints["bert"]], "give training data"),
        (["evaluate", "--model", tiny_checkpoints["bert"], "--task", "sentiment"],
         "zero-shot evaluation needs a GPT model"),
        (["evaluate", "--model", tiny_checkpoints["gpt"], "--task", "entities"], "needs a classification task"),
        (["evaluate", "--model", tiny_checkpoints["gpt"], "--data", good, "--verbalizer", "pos"],
         "--verbalizer expects LABEL=WORDS"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert message in err[-1], (argv, err)
        assert "Traceback" not in "\n".join(err)


def test_a_run_that_learned_nothing_is_flagged(tiny_checkpoints, tmp_path, capsys):
    # lr so small the weights barely move: the loss stays at ln 2, the input-blind loss
    argv = ["finetune", "--model", tiny_checkpoints["bert"], "--builtin", "sentiment", "--n-train", "200",
            "--n-eval", "20", "--steps", "10", "--lr", "1e-9", "--no-progress"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["train_loss_last"] == pytest.approx(0.693, abs=0.02)
    assert "no lower than always answering the label frequencies (0.693)" in report["warnings"][0]
    assert "warning: the training loss ended at" in captured.err


def test_user_data_with_a_held_out_share(tiny_checkpoints, tmp_path, capsys):
    assert main(["finetune", "--write-builtin", str(tmp_path), "--n-train", "60", "--n-eval", "10"]) == 0
    capsys.readouterr()
    assert main(["finetune", "--task", "tag", "--model", tiny_checkpoints["bert"], "--steps", "3",
                 "--data", str(tmp_path / "entities.train.jsonl"), "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["train_examples"] + report["eval_examples"] == 60 and report["eval_examples"] >= 1
    assert "held out by hash" in report["data"]


def test_write_builtin(tmp_path, capsys):
    assert main(["finetune", "--write-builtin", str(tmp_path), "--n-train", "20", "--n-eval", "10"]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["corpus.jsonl", "entities.test.jsonl", "entities.train.jsonl", "numbers.test.jsonl",
                     "numbers.train.jsonl", "sentiment.test.jsonl", "sentiment.train.jsonl"]
    assert len((tmp_path / "sentiment.test.jsonl").read_text().splitlines()) == 10


@pytest.mark.parametrize("command", ["finetune", "evaluate"])
def test_help_has_examples(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"minitransformer {command} --" in out


def test_a_fine_tuned_folder_is_written_all_or_nothing(tiny_checkpoints, tmp_path, capsys, monkeypatch):
    from minitransformer.finetune import load_base, load_finetuned, save_finetuned
    from minitransformer.finetune.classify import Classification

    base, tokenizer = load_base(tiny_checkpoints["bert"], "classify")
    handler = Classification(tokenizer, ["neg", "pos"], 32)
    out = tmp_path / "clf"
    save_finetuned(out, handler.build(base), tokenizer, handler, {"run": 1})
    first = {f.name: f.read_bytes() for f in out.iterdir()}
    # a second save that fails part-way (here: writing the tokenizer) leaves the first intact
    other = Classification(tokenizer, ["a", "b", "c"], 32)

    def broken(self, path):
        raise OSError("disk full")

    monkeypatch.setattr(type(tokenizer), "save", broken)
    with pytest.raises(OSError, match="disk full"):
        save_finetuned(out, other.build(base), tokenizer, other, {"run": 2})
    monkeypatch.undo()
    assert {f.name: f.read_bytes() for f in out.iterdir()} == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clf"]           # no half-written folder left
    assert load_finetuned(out)[0].labels == ["neg", "pos"]
    # a save that succeeds replaces it
    save_finetuned(out, other.build(base), tokenizer, other, {"run": 2})
    assert load_finetuned(out)[0].labels == ["a", "b", "c"]
    # a folder that holds something else is refused before any training, and left as it was
    argv = ["finetune", "--model", tiny_checkpoints["bert"], "--builtin", "sentiment", "--no-progress"]
    before = sorted(p.name for p in Path(tiny_checkpoints["bert"]).iterdir())
    capsys.readouterr()
    assert main([*argv, "--out", tiny_checkpoints["bert"]]) == 2
    err = capsys.readouterr().err
    assert "exists and is not a fine-tuned model folder" in err and "Traceback" not in err
    assert sorted(p.name for p in Path(tiny_checkpoints["bert"]).iterdir()) == before
