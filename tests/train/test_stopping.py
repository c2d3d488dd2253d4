"""Stopping a pretrain run cleanly: a signal at a seeded moment (between steps, inside the
optimizer update, inside a checkpoint save, or kill -9) leaves a checkpoint from which
``--resume`` ends bit for bit where an uninterrupted run ends; one job per run folder; a
full disk during a save keeps the previous checkpoint."""
import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minitransformer import atomic, checkpoint, jobs
from minitransformer.cli import main

ROOT = Path(__file__).resolve().parents[2]
TEXT = ("The function returns the sum of the list. The method copies the list and returns it. "
        "Return the number of items in the list. The class holds a list of names.\n")
STEPS = 6


def pretrain_args(corpus, out) -> list[str]:
    return ["pretrain", "--data", str(corpus), "--vocab-size", "400", "--block-size", "16", "--batch-size", "4",
            "--steps", str(STEPS), "--warmup", "2", "--eval-every", "3", "--save-every", "2", "--no-progress",
            "--out", str(out)]


def stopped(how: str, moment: str, step: int, argv, cache) -> subprocess.CompletedProcess:
    """Run ``minitransformer ARGV`` in a subprocess that signals itself (tests/train/stopper.py)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), MINITRANSFORMER_CACHE=str(cache))
    return subprocess.run([sys.executable, "-m", "tests.train.stopper", how, moment, str(step), "--", *argv],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def final_state(run) -> dict:
    """Every weight, every optimizer array and every logged metric (but the timing) of a run."""
    ckpt = checkpoint.resolve(run)
    arrays = {f"model/{k}": v for k, v in checkpoint.load_arrays(ckpt / "model.safetensors").items()}
    arrays.update({f"optimizer/{k}": v for k, v in checkpoint.load_arrays(ckpt / "optimizer.safetensors").items()})
    metrics = [{k: v for k, v in json.loads(line).items() if k != "tokens_per_s"}
               for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {"step": checkpoint.verify(ckpt)["step"], "arrays": arrays, "metrics": metrics}


def assert_identical(a: dict, b: dict) -> None:
    assert a["step"] == b["step"] and a["metrics"] == b["metrics"]
    assert a["arrays"].keys() == b["arrays"].keys()
    for k in a["arrays"]:
        assert np.array_equal(a["arrays"][k], b["arrays"][k]), k


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A corpus, a shared cache, and the uninterrupted run every stopped one is compared with."""
    root = tmp_path_factory.mktemp("stopping")
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(24):
        (corpus / f"doc{i}.txt").write_text(TEXT * (1 + i % 3))
    cache = root / "cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINITRANSFORMER_CACHE", str(cache))
        assert main(pretrain_args(corpus, root / "straight")) == 0
    return corpus, cache, final_state(root / "straight")


# (signal, moment, step): the step after which the run stops, and the checkpoint it leaves
CASES = {
    "SIGTERM between steps": ("SIGTERM", "after", 3, 3),
    "Ctrl-C inside the optimizer update": ("SIGINT", "optimizer", 5, 5),
    "SIGTERM inside a checkpoint save": ("SIGTERM", "save", 4, 4),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_signal_stops_after_a_whole_step_saved_and_resume_ends_bit_identical(setup, tmp_path, monkeypatch,
                                                                                 case):
    corpus, cache, straight = setup
    name, moment, step, saved = CASES[case]
    run = tmp_path / "run"
    res = stopped(name, moment, step, pretrain_args(corpus, run), cache)
    sig = getattr(signal, name)
    assert res.returncode == 128 + sig, res.stderr
    assert f"stopped by {name} after step {saved} of {STEPS}; saved:" in res.stderr
    assert "--resume" in res.stderr and "Traceback" not in res.stderr
    assert checkpoint.verify(checkpoint.resolve(run))["step"] == saved
    assert not list((run / "checkpoints").glob("*.tmp"))
    monkeypatch.setenv("MINITRANSFORMER_CACHE", str(cache))
    assert main([*pretrain_args(corpus, run), "--resume"]) == 0
    assert_identical(final_state(run), straight)


def test_a_killed_run_leaves_its_folder_free_and_its_last_checkpoint_resumable(setup, tmp_path, monkeypatch):
    corpus, cache, straight = setup
    run = tmp_path / "run"
    res = stopped("SIGKILL", "after", 3, pretrain_args(corpus, run), cache)
    assert res.returncode == -signal.SIGKILL
    assert checkpoint.verify(checkpoint.resolve(run))["step"] == 2      # the periodic save before it
    monkeypatch.setenv("MINITRANSFORMER_CACHE", str(cache))
    assert main([*pretrain_args(corpus, run), "--resume"]) == 0          # no stale lock to remove
    assert_identical(final_state(run), straight)


def test_a_second_writer_is_refused_in_one_line_naming_the_holder(setup, tmp_path, capsys):
    corpus, _, _ = setup
    run = tmp_path / "run"
    with jobs.own(run):                                   # another job holds the folder, and has saved
        (run / "latest").write_text("checkpoints/step-000002\n")
        for resume in ([], ["--resume"]):
            assert main(pretrain_args(corpus, run) + resume) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and f"is in use by process {os.getpid()} on host" in err[0], err
    assert not (run / "checkpoints").exists()


def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint(setup, tmp_path, monkeypatch, capsys):
    corpus, cache, _ = setup
    monkeypatch.setenv("MINITRANSFORMER_CACHE", str(cache))
    run = tmp_path / "run"

    def full(stage, path):                                # the disk fills up while step 4 is written
        if stage == "fsync" and path.name == "step-000004":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    monkeypatch.setattr(atomic, "fault_hook", full)
    assert main(pretrain_args(corpus, run)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "could not save the checkpoint of step 4: No space left on device" in err[0]
    assert f"the previous checkpoint, step 2, is kept: {run / 'latest'} -> checkpoints/step-000002" in err[0]
    assert checkpoint.verify(checkpoint.resolve(run))["step"] == 2
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000002"]
