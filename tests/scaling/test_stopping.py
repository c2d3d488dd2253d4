"""Stopping a sweep cleanly: SIGTERM in the middle of a run leaves it resumable by running the
same command again, which ends with the results of an uninterrupted sweep, bit for bit."""
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
TEXT = ("The function returns the sum of the list. The method copies the list and returns it. "
        "Return the number of items in the list. The class holds a list of names.\n")
SIZES = ("d16-L1-H1", "d24-L1-H2")


def scale_args(corpus, out) -> list[str]:
    return ["scale", "--sizes", "16x1", "24x1x2", "--tokens", str(4 * 16 * 5), "--data", str(corpus),
            "--vocab-size", "400", "--block-size", "16", "--batch-size", "4", "--no-progress", "--out", str(out)]


def outcome(out) -> dict:
    """Each run's result (but its duration) and final weights."""
    found = {}
    for name in SIZES:
        result = json.loads((out / "runs" / name / "result.json").read_text())
        result = {k: v for k, v in result.items() if k not in ("seconds", "resumed")}
        found[name] = (result, checkpoint.load_arrays(checkpoint.resolve(out / "runs" / name) / "model.safetensors"))
    return found


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale-stop")
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(24):
        (corpus / f"doc{i}.txt").write_text(TEXT * (1 + i % 3))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINITRANSFORMER_CACHE", str(root / "cache"))
        assert main(scale_args(corpus, root / "straight")) == 0
    return corpus, root / "cache", outcome(root / "straight")


def test_sigterm_in_a_run_leaves_it_resumable_by_running_the_same_command(setup, tmp_path, monkeypatch, capsys):
    corpus, cache, straight = setup
    out = tmp_path / "sweep"
    env = dict(os.environ, PYTHONPATH=str(ROOT), MINITRANSFORMER_CACHE=str(cache))
    # step 8 of the process: step 3 of the second run (each run takes 5)
    res = subprocess.run([sys.executable, "-m", "tests.train.stopper", "SIGTERM", "after", "8", "--",
                          *scale_args(corpus, out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 128 + signal.SIGTERM, res.stderr
    assert "stopped by SIGTERM after step 3 of 5" in res.stderr and "run the same command again" in res.stderr
    assert (out / "runs" / SIZES[0] / "result.json").is_file()
    assert not (out / "runs" / SIZES[1] / "result.json").exists()
    assert checkpoint.verify(checkpoint.resolve(out / "runs" / SIZES[1]))["step"] == 3

    monkeypatch.setenv("MINITRANSFORMER_CACHE", str(cache))
    with jobs.own(out):                                   # while another sweep holds the folder: refused
        assert main(scale_args(corpus, out)) == 2
    assert f"is in use by process {os.getpid()}" in capsys.readouterr().err
    assert main(scale_args(corpus, out)) == 0
    printed = capsys.readouterr().out
    assert "finished before" in printed and "resuming at step 3" in printed
    again = outcome(out)
    for name in SIZES:
        assert again[name][0] == straight[name][0]
        weights, want = again[name][1], straight[name][1]
        assert all(np.array_equal(weights[k], want[k]) for k in want)
