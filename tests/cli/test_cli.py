"""The command line: the main job end to end, and bad input as one line and a non-zero status."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import minitransformer as mt
from minitransformer.cli import main

ROOT = Path(__file__).resolve().parents[2]
TEXT = ("The function returns the sum of the list. The method copies the list and returns it. "
        "Return the number of items in the list. The class holds a list of names.\n")


def run_cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "minitransformer", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    for i in range(30):
        (d / f"doc{i}.txt").write_text(TEXT * (1 + i % 3))
    return d


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):
    """One tiny run of each family, trained for a few steps through the CLI."""
    out = tmp_path_factory.mktemp("runs")
    for objective in ("clm", "mlm", "span"):
        r = run_cli("pretrain", "--objective", objective, "--data", str(corpus), "--steps", "3",
                    "--batch-size", "4", "--block-size", "32", "--vocab-size", "512", "--eval-every", "3",
                    "--out", str(out / objective), "--no-progress")
        assert r.returncode == 0, r.stderr
        assert "sample:" in r.stdout and "validation loss" in r.stdout
    return out


def assert_one_line_error(r, *fragments):
    assert r.returncode != 0
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def test_each_family_trains_saves_and_is_used(runs):
    r = run_cli("generate", "--model", str(runs / "clm"), "--prompt", "The function", "--max-new-tokens", "5")
    assert r.returncode == 0 and r.stdout.startswith("The function"), r.stderr
    r = run_cli("fill-mask", "--model", str(runs / "mlm"), "The function returns the <mask> of the list.")
    assert r.returncode == 0 and r.stdout.startswith("mask 0:"), r.stderr
    r = run_cli("fill-spans", "--model", str(runs / "span"), "The function returns the <extra_id_0> of the list.")
    assert r.returncode == 0 and "<extra_id_0> =" in r.stdout, r.stderr
    r = run_cli("info", str(runs / "clm"))
    assert r.returncode == 0 and "family: gpt" in r.stdout and "## Limitations" in r.stdout


def test_resume_continues_and_a_second_run_in_the_same_folder_is_refused(runs, corpus):
    args = ["pretrain", "--data", str(corpus), "--batch-size", "4", "--block-size", "32", "--vocab-size", "512",
            "--out", str(runs / "clm"), "--no-progress"]
    assert_one_line_error(run_cli(*args, "--steps", "5"), "already holds a run", "--resume")
    r = run_cli(*args, "--steps", "5", "--resume")
    assert r.returncode == 0 and "resuming" in r.stdout and "step 5" in r.stdout, r.stderr


def test_missing_data_path(tmp_path):
    assert_one_line_error(run_cli("pretrain", "--data", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o")),
                          "nope.txt", "does not exist")


def test_unknown_preset(tmp_path):
    assert_one_line_error(run_cli("pretrain", "--preset", "gpt-huge", "--out", str(tmp_path / "o")),
                          "gpt-huge", "gpt-tiny")


def test_preset_of_the_wrong_family(tmp_path):
    assert_one_line_error(run_cli("pretrain", "--objective", "mlm", "--preset", "gpt-tiny", "--out", str(tmp_path)),
                          "gpt", "mlm")


def test_checkpoint_of_another_family(runs):
    assert_one_line_error(run_cli("fill-mask", "--model", str(runs / "clm"), "a <mask> b"), "gpt model", "bert")
    assert_one_line_error(run_cli("generate", "--model", str(runs / "mlm"), "--prompt", "a"), "BERT", "fill-mask")


def test_missing_checkpoint(tmp_path):
    assert_one_line_error(run_cli("generate", "--model", str(tmp_path / "none"), "--prompt", "a"), "none")


def test_cuda_without_cupy(tmp_path):
    if mt.backend.has_cuda():
        pytest.skip("this machine has a GPU")
    assert_one_line_error(run_cli("pretrain", "--device", "cuda", "--out", str(tmp_path)), "CuPy", "cpu")


@pytest.mark.parametrize("argv", [["generate", "--model", "m", "--prompt", "a"],
                                  ["evaluate", "--model", "m", "--task", "sentiment"],
                                  ["finetune", "--model", "m", "--builtin", "sentiment"],
                                  ["scale", "--quick"]])
def test_every_command_refuses_cuda_without_cupy_in_one_line(argv, capsys):
    if mt.backend.has_cuda():
        pytest.skip("this machine has a GPU")
    assert main([*argv, "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CuPy" in err[0], err


@pytest.mark.parametrize("command", ["pretrain", "generate", "fill-mask", "fill-spans", "tokenizer train",
                                     "info", "curate", "scale", "finetune", "evaluate", "plot"])
def test_every_subcommand_has_help_with_examples(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*command.split(), "--help"])
    assert exc.value.code == 0
    assert "example" in capsys.readouterr().out.lower()


def test_plot_writes_a_png(runs, tmp_path):
    pytest.importorskip("matplotlib")
    r = run_cli("plot", str(runs / "clm"), str(runs / "mlm"), "--out", str(tmp_path / "loss.png"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_version_has_one_source(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"minitransformer {mt.__version__}"
    from importlib import metadata
    assert metadata.version("minitransformer") == mt.__version__     # pyproject reads it from the package


def test_a_bug_shows_its_traceback_while_a_user_error_stays_one_line(monkeypatch, capsys):
    def buggy(name):
        raise KeyError("n_embd")          # what a library bug looks like: not the user's doing
    monkeypatch.setattr(mt.models, "preset", buggy)
    with pytest.raises(KeyError):         # main lets it through: Python prints the traceback
        main(["info", "gpt-tiny"])
    monkeypatch.undo()
    assert main(["info", "no-such-preset"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and "unknown model preset" in err


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_debug_shows_the_traceback_of_a_user_error(how, monkeypatch, capsys):
    argv = ["info", "no-such-preset"]
    if how == "flag":
        argv = ["--debug", *argv]
    else:
        monkeypatch.setenv("MINITRANSFORMER_DEBUG", "1")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.rstrip().splitlines()[-1].startswith("minitransformer info: error: unknown model preset")


@pytest.mark.parametrize("argv, what", [
    (["--steps", "-5"], "--steps: must be at least 1, got -5"),
    (["--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
    (["--lr", "0"], "--lr: must be above 0, got 0"),
    (["--eval-every", "x"], "--eval-every: expected an integer, got 'x'"),
])
def test_pretrain_arguments_are_refused_before_any_work(argv, what, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["pretrain", "--out", str(tmp_path / "run"), *argv])
    assert e.value.code == 2 and what in capsys.readouterr().err
    assert not (tmp_path / "run").exists()            # nothing prepared, nothing written


def test_no_progress_bar_redraws_when_stderr_is_not_a_terminal(tmp_path):
    out = subprocess.run([sys.executable, "-m", "minitransformer", "pretrain", "--steps", "3", "--eval-every", "0",
                          "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "\r" not in out.stderr and "step/s" not in out.stderr and "it/s" not in out.stderr
