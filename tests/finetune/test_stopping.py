"""Stopping a fine-tuning run cleanly: a signal at a seeded moment (between steps, or inside a
checkpoint save) leaves a checkpoint in OUT/training from which ``--resume`` ends with the
weights, report and metrics of an uninterrupted run, bit for bit; one job per folder."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minitransformer import checkpoint, jobs
from minitransformer.cli import main

ROOT = Path(__file__).resolve().parents[2]
STEPS = 8


def finetune_args(model, out) -> list[str]:
    return ["finetune", "--model", str(model), "--builtin", "sentiment", "--n-train", "64", "--n-eval", "16",
            "--steps", str(STEPS), "--batch-size", "8", "--max-length", "32", "--save-every", "3",
            "--no-progress", "--out", str(out)]


def outcome(out, report: dict) -> dict:
    """The fine-tuned weights, the scores, and every logged step of a finished run."""
    return {"weights": checkpoint.load_arrays(out / "model.safetensors"), "metrics": report["metrics"],
            "losses": (report["train_loss_first"], report["train_loss_last"]),
            "logged": (out / "metrics.jsonl").read_text()}


def assert_identical(a: dict, b: dict) -> None:
    assert a["metrics"] == b["metrics"] and a["losses"] == b["losses"] and a["logged"] == b["logged"]
    assert a["weights"].keys() == b["weights"].keys()
    for k in a["weights"]:
        assert np.array_equal(a["weights"][k], b["weights"][k]), k


@pytest.fixture(scope="module")
def straight(tiny_checkpoints, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    assert main(finetune_args(tiny_checkpoints["bert"], out)) == 0
    assert not (out / "training").exists()                # the finished model replaced its checkpoints
    return outcome(out, json.loads((out / "report.json").read_text()))


# signal, moment, step (see tests/train/stopper.py), and the step the run stops after
CASES = {"SIGTERM between steps": ("SIGTERM", "after", 5, 5),
         "Ctrl-C inside a checkpoint save": ("SIGINT", "save", 3, 3)}


@pytest.mark.parametrize("case", list(CASES))
def test_a_signal_stops_after_a_whole_step_saved_and_resume_ends_bit_identical(tiny_checkpoints, straight,
                                                                                 tmp_path, capsys, case):
    name, moment, step, saved = CASES[case]
    out = tmp_path / "run"
    argv = finetune_args(tiny_checkpoints["bert"], out)
    res = subprocess.run([sys.executable, "-m", "tests.train.stopper", name, moment, str(step), "--", *argv],
                         cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 128 + getattr(signal, name), res.stderr
    assert f"stopped by {name} after step {saved} of {STEPS}; saved in {out / 'training'}" in res.stderr
    assert "--resume" in res.stderr and "Traceback" not in res.stderr
    assert checkpoint.verify(checkpoint.resolve(out / "training"))["step"] == saved
    assert not (out / "report.json").exists()
    # started over by mistake: refused; continued: ends where the uninterrupted run ended
    assert main(argv) == 2
    assert "holds a stopped fine-tuning run; pass --resume" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0
    assert_identical(outcome(out, json.loads(capsys.readouterr().out)), straight)
    assert not (out / "training").exists()


def test_a_second_writer_is_refused_and_resume_needs_a_stopped_run(tiny_checkpoints, tmp_path, capsys):
    out = tmp_path / "run"
    argv = finetune_args(tiny_checkpoints["bert"], out)
    with jobs.own(out):                     # another job holds the folder, and has saved a checkpoint
        (out / "training").mkdir()
        (out / "training" / "latest").write_text("checkpoints/step-000003\n")
        for resume in ([], ["--resume"]):
            assert main(argv + resume) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and f"is in use by process {os.getpid()} on host" in err[0], err
    (out / "training" / "latest").unlink()
    assert main([*argv, "--resume"]) == 2
    assert "holds no stopped fine-tuning run to continue" in capsys.readouterr().err
