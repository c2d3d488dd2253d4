"""Stopping a data-parallel pretrain cleanly: a SIGTERM that reaches only one of two ranks
stops both after the same step (they agree on it), rank 0 saves, both exit with the
conventional status, and ``--resume`` under mpiexec ends bit for bit where an uninterrupted
two-rank run ends."""
import signal

from tests.dist.test_data_parallel import _write_corpus, launch, needs_mpi
from tests.train.test_stopping import STEPS, assert_identical, final_state


def args(docs, out) -> list[str]:
    return ["pretrain", "--data", str(docs), "--vocab-size", "400", "--block-size", "16", "--batch-size", "4",
            "--steps", str(STEPS), "--warmup", "2", "--eval-every", "3", "--save-every", "2", "--no-progress",
            "--out", str(out)]


@needs_mpi
def test_a_signal_on_one_rank_stops_both_after_the_same_step_and_resume_is_exact(tmp_path):
    docs, cache = _write_corpus(tmp_path), tmp_path / "cache"
    res = launch(2, ["-m", "minitransformer", *args(docs, tmp_path / "straight")], 240, cache)
    assert res.returncode == 0, res.stderr
    run = tmp_path / "run"
    # rank 1 alone signals itself after step 3; rank 0 must learn it at the next step boundary
    res = launch(2, ["-m", "tests.train.stopper", "SIGTERM", "after", "3", "1", "--", *args(docs, run)], 240, cache)
    assert res.returncode == 128 + signal.SIGTERM, res.stderr
    assert res.stderr.count(f"stopped by SIGTERM after step 3 of {STEPS}; saved:") == 1, res.stderr   # rank 0
    assert "Traceback" not in res.stderr
    res = launch(2, ["-m", "minitransformer", *args(docs, run), "--resume"], 240, cache)
    assert res.returncode == 0, res.stderr
    assert "resuming" in res.stdout and "at step 3 of" in res.stdout
    assert_identical(final_state(run), final_state(tmp_path / "straight"))

