"""Model selection: the best checkpoint by validation loss, early stopping, both across a resume.

The validation text comes from another Markov chain than the training text, so the validation
loss first falls and then, as the model learns its own chain, wanders and rises: there is a
best step before the last one, and early stopping has something to stop. What each test
expects is computed from the validation losses the run logged in metrics.jsonl.
"""
import json
import math

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import checkpoint, models, objectives
from minitransformer.cli import main
from minitransformer.train import TrainConfig, Trainer, evaluate
from tests.train import markov

TRAIN = markov.sample(markov.transition_matrix(0), 400, seed=3)
VAL = markov.sample(markov.transition_matrix(1), 800, seed=4)


def val_data():
    return objectives.CLMObjective(VAL, 16, eos_id=markov.EOS, seed=1, shuffle=False)


def trainer(out, steps=40, lr=0.05, **selection):
    cfg = models.GPTConfig(vocab_size=markov.VOCAB, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    mt.manual_seed(0)
    model = models.build(cfg)
    data = objectives.CLMObjective(TRAIN, 16, eos_id=markov.EOS, seed=0)
    tc = TrainConfig(objective="clm", steps=steps, batch_size=4, lr=lr, warmup=2, eval_every=1, eval_batches=2,
                     save_every=0, **selection)
    return Trainer(model, data, val_data(), tc, out)


def logged_evals(run) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]


def expected_stop(evals, patience: int) -> int | None:
    """The step at which ``patience`` evaluations in a row have not beaten the best (strictly)."""
    best, since = math.inf, 0
    for step, loss in evals:
        if loss < best:
            best, since = loss, 0
        else:
            since += 1
            if since == patience:
                return step
    return None


def lowest(evals) -> tuple[int, float]:
    """(step, loss) of the lowest logged validation loss; the earliest among equals."""
    return min(evals, key=lambda e: (e[1], e[0]))


def weights(model):
    return {k: np.array(v) for k, v in model.state_dict().items()}


def assert_same_weights(a, b):
    a, b = weights(a), weights(b)
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def test_early_stopping_stops_where_the_logged_losses_say(tmp_path, capsys):
    t = trainer(tmp_path, early_stop=3)
    result = t.fit()
    evals = logged_evals(tmp_path)
    stop = expected_stop(evals, 3)
    assert stop is not None and stop < 40, f"the validation losses {evals} never stop a patience of 3"
    assert result["stopped_early"] and t.step == stop == evals[-1][0]
    assert checkpoint.resolve(tmp_path).name == f"step-{stop:06d}"         # a complete checkpoint of the stop
    assert checkpoint.verify(checkpoint.resolve(tmp_path))["evals_since_best"] == 3
    assert result["best"] == dict(zip(("step", "val_loss"), lowest(evals)))
    assert main(["info", str(tmp_path)]) == 0                     # no --keep-best: the best is named, not kept
    step, loss = lowest(evals)
    assert f"best validation loss: {loss:.4f} at step {step} (not kept;" in capsys.readouterr().out


def test_a_tie_is_not_an_improvement(tmp_path):
    """With a zero learning rate every evaluation gives the same loss: the first is the best,
    and the ties after it count towards the patience."""
    t = trainer(tmp_path, steps=20, lr=0.0, early_stop=2, keep_best=True)
    result = t.fit()
    evals = logged_evals(tmp_path)
    assert len({loss for _, loss in evals}) == 1 and len(evals) == 3
    assert result["stopped_early"] and t.step == 3
    assert checkpoint.best_of(tmp_path)[1] == {"step": 1, "val_loss": evals[0][1]}


def test_the_best_checkpoint_holds_the_lowest_logged_validation_loss(tmp_path):
    t = trainer(tmp_path, steps=30, keep_best=True)
    t.fit()
    evals = logged_evals(tmp_path)
    best_step, best_loss = lowest(evals)
    assert best_step < 30, "the validation loss should rise before the end for this test to mean anything"
    folder, best = checkpoint.best_of(tmp_path)
    assert best == {"step": best_step, "val_loss": best_loss}
    assert checkpoint.verify(folder)["step"] == best_step
    model = checkpoint.load_model(folder)                         # load it and measure it again
    assert evaluate(model, val_data(), 2, 4)["val_loss"] == best_loss
    assert checkpoint.load_model(tmp_path).num_parameters() == model.num_parameters()
    assert not (folder / "optimizer.safetensors").exists()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best", "step-000030"]   # not rotated

    best_card = (folder / "README.md").read_text()
    assert f"- Checkpoint: step {best_step:,} of 30, the best of the run by validation loss" in best_card
    assert f"- Validation loss: {best_loss:.4f}" in best_card
    last_card = (checkpoint.resolve(tmp_path) / "README.md").read_text()
    assert "- Checkpoint: step 30 of 30, the last saved (not chosen by validation loss); the best so far: " \
           f"validation loss {best_loss:.4f} at step {best_step:,}" in last_card


@pytest.mark.parametrize("pause", [8, 21])
def test_a_resumed_run_keeps_the_best_and_stops_where_an_uninterrupted_one_does(tmp_path, pause):
    """Paused after an improvement (8) and in the middle of a run of evaluations without one
    (21): the resumed run must remember both the best and how long it has waited."""
    straight = trainer(tmp_path / "straight", early_stop=3, keep_best=True)
    straight.fit()
    evals = logged_evals(tmp_path / "straight")
    assert pause < straight.step

    first = trainer(tmp_path / "paused", early_stop=3, keep_best=True)
    first.fit(until=pause)
    if pause == 21:
        assert first.evals_since_best > 0, "the pause should fall between the best and the stop"
    second = trainer(tmp_path / "paused", early_stop=3, keep_best=True)
    assert second.resume() and second.step == pause
    result = second.fit()
    assert result["stopped_early"] and second.step == straight.step == expected_stop(evals, 3)
    assert logged_evals(tmp_path / "paused") == evals
    assert_same_weights(straight.model, second.model)
    assert checkpoint.best_of(tmp_path / "paused")[1] == checkpoint.best_of(tmp_path / "straight")[1]
    assert_same_weights(checkpoint.load_model(tmp_path / "straight" / "checkpoints" / "best"),
                        checkpoint.load_model(tmp_path / "paused" / "checkpoints" / "best"))

    again = trainer(tmp_path / "paused", steps=60, early_stop=3, keep_best=True)   # a stopped run stays stopped
    assert again.resume() and again.fit()["stopped_early"] and again.step == straight.step


TEXT = ("The function returns the sum of the list. The method copies the list and returns it. "
        "Return the number of items in the list. The class holds a list of names.\n")


def test_pretrain_keep_best_and_early_stop_end_to_end(tmp_path, capsys):
    """The command line: the one-line reason for stopping, the best named by ``info`` and its card."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(30):
        (corpus / f"doc{i}.txt").write_text(TEXT * (1 + i % 3))
    out = tmp_path / "run"
    args = ["pretrain", "--data", str(corpus), "--batch-size", "4", "--block-size", "32", "--vocab-size", "400",
            "--steps", "40", "--lr", "0.05", "--warmup", "2", "--eval-every", "2", "--out", str(out),
            "--no-progress", "--keep-best", "--early-stop", "1"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    evals = logged_evals(out)
    stop = expected_stop(evals, 1)
    assert stop is not None, evals
    best_step, best_loss = lowest(evals)
    assert (f"stopped early at step {stop} of 40: no lower validation loss in 1 evaluation; the best, "
            f"{best_loss:.4f} at step {best_step}, is kept in {out}/checkpoints/best") in printed

    assert main(["info", str(out)]) == 0
    shown = capsys.readouterr().out
    assert f"best checkpoint: {out}/checkpoints/best (step {best_step}, validation loss {best_loss:.4f})" in shown
    assert main(["info", str(out / "checkpoints" / "best"), "--card"]) == 0
    assert f"- Checkpoint: step {best_step} of 40, the best of the run by validation loss" in capsys.readouterr().out

    assert main(["pretrain", "--out", str(tmp_path / "other"), "--early-stop", "2", "--eval-every", "0"]) == 2
    assert "give --eval-every N as well" in capsys.readouterr().err
