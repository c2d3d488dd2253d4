"""Config files for pretrain, finetune and scale: the file under the flags, --print-config, one-line
refusals naming the key and the file, and every numeric flag bounded before any work."""
import json

import pytest

from minitransformer import checkpoint
from minitransformer.cli import main

TEXT = ("The function returns the sum of the list. The method copies the list and returns it. "
        "Return the number of items in the list. The class holds a list of names.\n")


def write(path, obj):
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(path)


def printed_config(argv, capsys) -> dict:
    assert main([*argv, "--print-config"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def no_work(monkeypatch):
    """Preparing data fails the test: every check here must come before any work."""
    from minitransformer import recipes
    from minitransformer.finetune import tasks

    def prepare(*a, **k):
        raise AssertionError("data was prepared before the arguments were checked")
    monkeypatch.setattr(recipes, "load_corpus", prepare)
    monkeypatch.setattr(tasks, "builtin", prepare)


def one_line_error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


# ---------------------------------------------------------------------------------------
# the file, the flags, and --print-config
# ---------------------------------------------------------------------------------------

def test_the_file_sets_what_the_flags_leave_and_a_flag_overrides_the_file(tmp_path, capsys):
    cfg = write(tmp_path / "c.json", {"steps": 7, "batch_size": 8, "schedule": "linear", "weight_decay": 0.01,
                                      "model": {"n_layer": 2}})
    merged = printed_config(["pretrain", "--config", cfg, "--batch-size", "4"], capsys)
    assert merged["steps"] == 7 and merged["schedule"] == "linear"            # from the file
    assert merged["batch_size"] == 4                                           # the flag wins
    assert merged["weight_decay"] == 0.01 and merged["model"] == {"n_layer": 2}
    assert merged["lr"] is None and merged["warmup"] == 30 and merged["beta2"] == 0.98   # defaults


@pytest.mark.parametrize("argv", [["pretrain", "--steps", "9", "--data", "a", "b"],
                                  ["finetune", "--builtin", "numbers", "--num-beams", "3"],
                                  ["scale", "--quick", "--sizes", "16x1", "24x1", "--lr", "0.002"]])
def test_print_config_round_trips(argv, tmp_path, capsys):
    first = printed_config(argv, capsys)
    again = printed_config([argv[0], "--config", write(tmp_path / "c.json", first)], capsys)
    assert again == first
    assert not list(tmp_path.glob("runs*")) and not (tmp_path / "c.json.out").exists()


@pytest.mark.usefixtures("no_work")
def test_print_config_does_no_work(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    printed_config(["pretrain", "--out", str(tmp_path / "run")], capsys)
    printed_config(["finetune", "--write-builtin", str(tmp_path / "data")], capsys)
    printed_config(["scale", "--quick"], capsys)
    assert list(tmp_path.iterdir()) == []


def test_a_flag_of_an_exclusive_group_replaces_the_files_choice(tmp_path, capsys):
    cfg = write(tmp_path / "c.json", {"data": "train.jsonl", "task": "classify"})
    merged = printed_config(["finetune", "--config", cfg, "--builtin", "sentiment"], capsys)
    assert merged["builtin"] == "sentiment" and merged["data"] is None and merged["task"] == "classify"
    both = write(tmp_path / "both.json", {"data": "train.jsonl", "builtin": "sentiment"})
    assert "data and builtin exclude each other" in one_line_error(["finetune", "--config", both], capsys)


# ---------------------------------------------------------------------------------------
# refusals: one line, naming the key and the file
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("command, content, what", [
    ("pretrain", {"stepz": 5}, "unknown key 'stepz' (did you mean 'steps'?)"),
    ("pretrain", {"batch-size": 5}, "unknown key 'batch-size' (did you mean 'batch_size'?)"),
    ("pretrain", {"steps": "5"}, "steps: expected an integer, got '5' (str)"),
    ("pretrain", {"steps": 2.5}, "steps: expected an integer, got 2.5 (float)"),
    ("pretrain", {"steps": -5}, "steps: must be at least 1, got -5"),
    ("pretrain", {"resume": 1}, "resume: expected true or false, got 1 (int)"),
    ("pretrain", {"schedule": "step"}, "schedule: expected one of cosine, linear, inverse-sqrt; got 'step'"),
    ("pretrain", {"data": "corpus.txt"}, "data: expected a list, got 'corpus.txt' (str)"),
    ("pretrain", {"batch_size": None}, "batch_size: expected an integer, got null"),
    ("pretrain", {"weight_decay": "0.1"}, "weight_decay: expected a number, got '0.1' (str)"),
    ("pretrain", {"beta2": 1.0}, "beta2: must be in [0.0, 1.0), got 1.0"),
    ("pretrain", {"model": {"n_layr": 2}}, "model: GPTConfig has no field 'n_layr' (did you mean 'n_layer'?)"),
    ("pretrain", {"model": {"n_layer": "2"}}, "model: GPTConfig: n_layer must be int, got '2' (str)"),
    ("pretrain", {"model": {"n_embd": 30, "n_head": 4}}, "n_embd (30) must be divisible by n_head (4)"),
    ("pretrain", {"model": {"vocab_size": 9}}, "model: vocab_size cannot be changed here: the tokenizer sets it"),
    ("pretrain", {"model": {"n_positions": 64}}, "model: n_positions (64) must be at least block_size (128)"),
    ("pretrain", {"objective": "mlm", "model": {"n_layer": 2}}, "model: BERTConfig has no field 'n_layer'"),
    ("pretrain", {"model": [2]}, "model: expected a JSON object of GPTConfig fields, got [2] (list)"),
    ("finetune", {"num_beams": 0}, "num_beams: must be at least 1, got 0"),
    ("finetune", {"task": "translate"}, "task: expected one of classify, tag, seq2seq; got 'translate'"),
    ("scale", {"tokens": 0}, "tokens: must be at least 1, got 0"),
    ("scale", {"lr": 0}, "lr: must be above 0, got 0"),
    ("scale", {"sizes": ["16x1", 24]}, "sizes: expected a string, got 24 (int)"),
])
@pytest.mark.usefixtures("no_work")
def test_a_bad_key_or_value_is_refused_naming_both(command, content, what, tmp_path, capsys):
    cfg = write(tmp_path / "bad.json", content)
    line = one_line_error([command, "--config", cfg, "--out", str(tmp_path / "run")], capsys)
    assert line.startswith(f"minitransformer {command}: error: --config {cfg}: ") and what in line, line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content, what", [
    (None, "no such file"),
    ("{\"steps\": 5,}", "not valid JSON"),
    ("[1, 2]", "expected a JSON object of {option: value}, got a list"),
])
def test_a_missing_or_malformed_file_is_refused(content, what, tmp_path, capsys):
    path = tmp_path / "c.json"
    if content is not None:
        path.write_text(content)
    line = one_line_error(["pretrain", "--config", str(path)], capsys)
    assert f"--config {path}: {what}" in line, line


# ---------------------------------------------------------------------------------------
# what only a file can set reaches the trainer
# ---------------------------------------------------------------------------------------

def test_weight_decay_betas_clipping_and_model_size_reach_the_run(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(20):
        (corpus / f"doc{i}.txt").write_text(TEXT * (1 + i % 3))
    cfg = write(tmp_path / "c.json", {
        "data": [str(corpus)], "steps": 2, "batch_size": 2, "block_size": 16, "vocab_size": 400,
        "eval_every": 0, "no_progress": True, "weight_decay": 0.01, "beta1": 0.8, "beta2": 0.95,
        "grad_clip": 0.5, "model": {"n_layer": 1, "n_embd": 32, "n_head": 2}})
    out = tmp_path / "run"
    assert main(["pretrain", "--config", cfg, "--out", str(out), "--steps", "3"]) == 0, capsys.readouterr().err
    ckpt = checkpoint.resolve(out)
    trained = checkpoint.verify(ckpt)["train_config"]
    assert (trained["weight_decay"], trained["beta1"], trained["beta2"], trained["grad_clip"]) == (0.01, 0.8, 0.95, 0.5)
    assert trained["steps"] == 3 and trained["batch_size"] == 2            # the flag over the file
    model = checkpoint.load_model(out)
    assert (model.config.n_layer, model.config.n_embd, model.config.n_head) == (1, 32, 2)
    assert model.config.vocab_size <= 400 and model.config.n_positions >= 16    # still the tokenizer's


# ---------------------------------------------------------------------------------------
# numeric flags refused before any work
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, what", [
    (["finetune", "--builtin", "sentiment", "--steps", "0"], "--steps: must be at least 1, got 0"),
    (["finetune", "--builtin", "sentiment", "--batch-size", "-1"], "--batch-size: must be at least 1, got -1"),
    (["finetune", "--builtin", "sentiment", "--lr", "0"], "--lr: must be above 0, got 0"),
    (["finetune", "--builtin", "sentiment", "--warmup", "-1"], "--warmup: must be at least 0, got -1"),
    (["finetune", "--builtin", "sentiment", "--n-train", "0"], "--n-train: must be at least 1, got 0"),
    (["finetune", "--builtin", "sentiment", "--n-eval", "x"], "--n-eval: expected an integer, got 'x'"),
    (["finetune", "--builtin", "sentiment", "--max-length", "0"], "--max-length: must be at least 1, got 0"),
    (["finetune", "--builtin", "numbers", "--num-beams", "0"], "--num-beams: must be at least 1, got 0"),
    (["scale", "--quick", "--tokens", "-5"], "--tokens: must be at least 1, got -5"),
    (["scale", "--quick", "--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
    (["scale", "--quick", "--block-size", "0"], "--block-size: must be at least 1, got 0"),
    (["scale", "--quick", "--vocab-size", "-1"], "--vocab-size: must be at least 1, got -1"),
    (["scale", "--quick", "--lr", "-0.1"], "--lr: must be above 0, got -0.1"),
])
@pytest.mark.usefixtures("no_work")
def test_finetune_and_scale_arguments_are_refused_before_any_work(argv, what, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--model", "m", "--out", str(tmp_path / "run")] if argv[0] == "finetune"
             else [*argv, "--out", str(tmp_path / "run")])
    assert e.value.code == 2 and what in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_file_only_setting_may_not_shadow_an_option():
    import argparse

    from minitransformer.cli import Setting, config_file

    p = argparse.ArgumentParser(prog="demo")
    p.add_argument("--model")
    config_file(p, [Setting("model", {}, lambda value, args: value)])
    with pytest.raises(ValueError, match="demo: config-file setting 'model' is also an option"):
        p.get_default("config_settings").mark_defaults()
