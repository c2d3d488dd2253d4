"""Checkpoints: resuming continues the same run bit for bit; damage is refused; crashes lose nothing."""
import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import atomic, checkpoint, jobs, models, objectives
from minitransformer.train import NonFiniteLoss, TrainConfig, Trainer
from tests.train import markov

STREAM = markov.sample(markov.transition_matrix(0), 6_000, seed=3)


def tiny_trainer(out, steps, seed=0, dropout=0.1, save_every=0):
    cfg = models.GPTConfig(vocab_size=markov.VOCAB, n_positions=16, n_embd=16, n_layer=1, n_head=2,
                           resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)
    mt.manual_seed(seed)
    model = models.build(cfg)
    data = objectives.CLMObjective(STREAM, 16, eos_id=markov.EOS, seed=seed)
    val = objectives.CLMObjective(STREAM[:800], 16, eos_id=markov.EOS, seed=seed + 1, shuffle=False)
    tc = TrainConfig(objective="clm", steps=steps, batch_size=4, micro_batch_size=2, lr=1e-2, warmup=3,
                     eval_every=4, eval_batches=2, save_every=save_every, seed=seed)
    return Trainer(model, data, val, tc, out)


def weights(model):
    return {k: np.array(v) for k, v in model.state_dict().items()}


def test_resume_continues_bit_for_bit(tmp_path):
    straight = tiny_trainer(tmp_path / "a", steps=10)
    straight.fit()

    first = tiny_trainer(tmp_path / "b", steps=10)
    first.fit(until=6)                      # stop (saved) after 6 of the run's 10 steps
    second = tiny_trainer(tmp_path / "b", steps=10)
    assert second.resume() and second.step == 6
    second.fit()

    stop = jobs.StopSignals()

    def interrupt_at_3(m):                  # Ctrl-C during step 3: the step ends, is saved, the run stops
        if m["step"] == 3:
            stop.request(signal.SIGINT)
    third = tiny_trainer(tmp_path / "c", steps=10)
    with pytest.raises(jobs.Stopped, match="stopped by SIGINT after step 3 of 10"):
        third.fit(interrupt_at_3, stop=stop)
    fourth = tiny_trainer(tmp_path / "c", steps=10)
    assert fourth.resume() and fourth.step == 3
    fourth.fit()

    a = weights(straight.model)
    for other in (second, fourth):
        b = weights(other.model)
        assert a.keys() == b.keys()
        for k in a:
            assert np.array_equal(a[k], b[k]), k
        for s, t in zip(straight.optimizer.state_dict().values(), other.optimizer.state_dict().values()):
            assert np.array_equal(s, t)


def test_checkpoint_has_everything_and_a_model_card(tmp_path):
    t = tiny_trainer(tmp_path, steps=4)
    t.fit()
    ckpt = checkpoint.resolve(tmp_path)
    assert ckpt.name == "step-000004"
    for name in ("model.safetensors", "optimizer.safetensors", "config.json", "trainer_state.json", "README.md"):
        assert (ckpt / name).is_file(), name
    state = checkpoint.verify(ckpt)
    assert state["data_cursor"] == 4 and state["step"] == 4
    card = (ckpt / "README.md").read_text()
    assert "Validation loss" in card and "Limitations" in card
    model = checkpoint.load_model(tmp_path)
    for k, v in weights(t.model).items():
        assert np.array_equal(v, model.state_dict()[k])


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_checkpoint_is_refused_with_the_file_named(tmp_path, damage):
    tiny_trainer(tmp_path, steps=2).fit()
    f = checkpoint.resolve(tmp_path) / "model.safetensors"
    if damage == "truncate":
        f.write_bytes(f.read_bytes()[:-100])
    elif damage == "flip":
        data = bytearray(f.read_bytes())
        data[-10] ^= 0xFF
        f.write_bytes(bytes(data))
    else:
        f.unlink()
    with pytest.raises(checkpoint.CheckpointError, match="model.safetensors"):
        checkpoint.load_model(tmp_path)
    resumed = tiny_trainer(tmp_path, steps=4)
    with pytest.raises(checkpoint.CheckpointError, match="model.safetensors"):
        resumed.resume()


def test_unreadable_safetensors_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(checkpoint.CheckpointError, match="not a readable safetensors file"):
        checkpoint.load_arrays(bad)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        checkpoint.load_arrays(tmp_path / "missing.safetensors")


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    tiny_trainer(tmp_path, steps=2).fit()
    good = checkpoint.resolve(tmp_path)
    t = tiny_trainer(tmp_path, steps=6, save_every=1)
    t.resume()
    for _, p in t.model.named_parameters():
        p.data[...] = np.nan
    with pytest.raises(NonFiniteLoss, match="at step 2"):
        t.fit()
    assert checkpoint.resolve(tmp_path) == good
    checkpoint.verify(good)


def test_rotation_keeps_exactly_the_newest_keep_checkpoints(tmp_path):
    t = tiny_trainer(tmp_path, steps=1)
    for keep, saves in ((3, 5), (1, 2), (0, 2)):
        run = tmp_path / f"keep{keep}"
        for step in range(1, saves + 1):
            checkpoint.save_checkpoint(run, step, t.model, t.optimizer, keep=keep)
        kept = sorted(p.name for p in (run / "checkpoints").iterdir())
        expected = [f"step-{s:06d}" for s in range(1, saves + 1)][-keep if keep else 0:]
        assert kept == expected, f"keep={keep} after {saves} saves"
        assert checkpoint.resolve(run).name == expected[-1]


class Crash(Exception):
    """Stands for the process dying at one write point of a save."""


def test_a_crash_at_any_write_point_leaves_a_loadable_checkpoint(tmp_path, monkeypatch):
    """Stop a save at each stage of each of its crash-safe writes in turn (the checkpoint folder,
    then the ``latest`` pointer: written, made durable, renamed into place, the rename made
    durable), through the atomic-write helper's fault hook; the run must still load, and the
    next save must succeed."""
    t = tiny_trainer(tmp_path / "base", steps=2)
    t.fit()
    base = tmp_path / "base"

    points = []
    monkeypatch.setattr(atomic, "fault_hook", lambda stage, path: points.append((stage, path.name)))
    checkpoint.save_checkpoint(tmp_path / "probe", 1, t.model, t.optimizer, card="card", keep=1)
    assert len(points) >= 8 and {s for s, _ in points} == set(atomic.STAGES), points

    for crash_at in range(len(points)):
        run = tmp_path / f"crash{crash_at}"
        shutil.copytree(base, run)
        calls = []

        def fault(stage, path, calls=calls, crash_at=crash_at):
            calls.append((stage, path.name))
            if len(calls) - 1 == crash_at:
                raise Crash(f"{stage} {path.name}")
        monkeypatch.setattr(atomic, "fault_hook", fault)
        with pytest.raises(Crash):
            checkpoint.save_checkpoint(run, 3, t.model, t.optimizer, card="card", keep=1)
        monkeypatch.setattr(atomic, "fault_hook", None)

        ckpt = checkpoint.resolve(run)
        assert ckpt.name in ("step-000002", "step-000003"), f"crash at {calls[-1]}: latest names {ckpt}"
        checkpoint.verify(ckpt)
        checkpoint.load_model(run)
        checkpoint.save_checkpoint(run, 4, t.model, t.optimizer, card="card", keep=1)
        assert [p.name for p in (run / "checkpoints").iterdir()
                if p.name.startswith("step-")] == ["step-000004"], f"crash at {calls[-1]}"


def test_a_crash_while_saving_the_same_step_again_keeps_that_checkpoint(tmp_path, monkeypatch):
    """A save of a step that already has a checkpoint (the final save of a run resumed at that
    step) writes aside too: dying halfway through the weights leaves the old one whole."""
    run = tmp_path / "run"
    t = tiny_trainer(run, steps=2)
    t.fit()
    ckpt = checkpoint.resolve(run)
    real = checkpoint.save_arrays

    def half_then_crash(path, *args, **kwargs):
        real(path, *args, **kwargs)
        with open(path, "r+b") as f:
            f.truncate(Path(path).stat().st_size // 2)
        raise Crash(f"halfway through {Path(path).name}")
    monkeypatch.setattr(checkpoint, "save_arrays", half_then_crash)
    with pytest.raises(Crash):
        checkpoint.save_checkpoint(run, int(ckpt.name.split("-")[1]), t.model, t.optimizer, keep=1)
    monkeypatch.setattr(checkpoint, "save_arrays", real)
    assert checkpoint.resolve(run) == ckpt
    checkpoint.verify(ckpt)
    checkpoint.load_model(run)


def test_resume_drops_the_metrics_logged_after_the_checkpoint(tmp_path):
    """A run that crashed after its last checkpoint logged steps the resumed run replays:
    metrics.jsonl keeps each step once, and a torn last line is dropped."""
    run = tmp_path / "run"
    t = tiny_trainer(run, steps=4, save_every=4)
    t.fit()                                               # checkpoint at step 4
    with open(run / "metrics.jsonl", "a") as f:          # what a crash after step 6 leaves behind
        f.write(json.dumps({"step": 5, "loss": 1.0}) + "\n" + json.dumps({"step": 6, "loss": 1.0}) + "\n")
        f.write('{"step": 7, "lo')
    t = tiny_trainer(run, steps=8, save_every=4)
    assert t.resume() and t.step == 4
    t.fit()
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line) and "val_loss" not in json.loads(line)]
    assert steps == list(range(1, 9))
