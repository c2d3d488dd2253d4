"""Crash-safe writes: a fault injected at any stage of a write leaves the previous version
intact (or, once the rename has happened, the complete new one), and no debris behind."""
import re
from pathlib import Path

import numpy as np
import pytest

from minitransformer import atomic, checkpoint

ROOT = Path(__file__).resolve().parents[2]


class Fault(Exception):
    """Stands for a crash at one stage of a write."""


@pytest.fixture
def fail_at(monkeypatch):
    """fail_at(stage, nth): the nth write from now raises Fault just before ``stage``."""
    def arm(stage, nth=1):
        assert stage in atomic.STAGES
        seen = []

        def hook(now, path):
            if now == stage:
                seen.append(path)
                if len(seen) == nth:
                    raise Fault(f"{stage} of {path}")
        monkeypatch.setattr(atomic, "fault_hook", hook)
    return arm


def _after_rename(stage) -> bool:
    return atomic.STAGES.index(stage) > atomic.STAGES.index("rename")


@pytest.mark.parametrize("stage", atomic.STAGES)
def test_a_fault_in_a_file_write_keeps_the_previous_file(tmp_path, fail_at, stage):
    path = tmp_path / "f.txt"
    atomic.write_text(path, "old")
    fail_at(stage)
    with pytest.raises(Fault):
        atomic.write_text(path, "new")
    assert path.read_text() == ("new" if _after_rename(stage) else "old")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


@pytest.mark.parametrize("stage", atomic.STAGES)
def test_a_fault_in_a_folder_write_keeps_the_previous_folder(tmp_path, fail_at, stage):
    path = tmp_path / "model"
    with atomic.atomic_folder(path) as tmp:
        (tmp / "a").write_text("old a")
        (tmp / "b").write_text("old b")
    fail_at(stage)
    with pytest.raises(Fault):
        with atomic.atomic_folder(path) as tmp:
            (tmp / "a").write_text("new a")
    want = {"a": "new a"} if _after_rename(stage) else {"a": "old a", "b": "old b"}
    assert {p.name: p.read_text() for p in path.iterdir()} == want
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_an_error_inside_the_block_keeps_the_previous_version(tmp_path):
    path = tmp_path / "f.bin"
    atomic.write_bytes(path, b"old")
    with pytest.raises(KeyError):
        with atomic.atomic_file(path, "wb") as f:
            f.write(b"half")
            raise KeyError("the writer failed")
    assert path.read_bytes() == b"old"
    with pytest.raises(ValueError, match="mode must write"):
        with atomic.atomic_file(path, "ab"):
            pass


@pytest.mark.parametrize("stage", atomic.STAGES)
@pytest.mark.parametrize("write", ["model file", "step folder", "latest pointer"])
def test_a_fault_while_saving_a_checkpoint_keeps_the_last_one_loadable(tmp_path, fail_at, stage, write):
    from minitransformer import models

    model = models.build(models.GPTConfig(vocab_size=20, n_positions=8, n_embd=8, n_layer=1, n_head=2))
    first = checkpoint.save_checkpoint(tmp_path, 1, model)
    old = checkpoint.load_arrays(first / "model.safetensors")
    for _, p in model.named_parameters():
        p.data[...] = 0.0
    new = {k: np.array(v) for k, v in model.state_dict().items()}
    # A save writes the model file, then (its "write" stage came first) the step folder, then the pointer.
    nth = {"model file": 2 if stage == "write" else 1, "step folder": 1 if stage == "write" else 2,
           "latest pointer": 3 if stage == "write" else 3}[write]
    fail_at(stage, nth)
    with pytest.raises(Fault, match={"model file": "model.safetensors", "step folder": "step-000002",
                                     "latest pointer": "latest"}[write]):
        checkpoint.save_checkpoint(tmp_path, 2, model)
    ckpt = checkpoint.resolve(tmp_path)
    switched = write == "latest pointer" and _after_rename(stage)
    assert ckpt.name == ("step-000002" if switched else first.name)
    checkpoint.verify(ckpt)
    back = checkpoint.load_arrays(ckpt / "model.safetensors")
    want = new if switched else old
    assert all(np.array_equal(back[k], want[k]) for k in want)


def test_every_crash_safe_write_goes_through_the_atomic_helper():
    """A rename or an fsync outside minitransformer/atomic.py is a sixth idiom to fold back in."""
    idiom = re.compile(r"os\.replace\(|os\.rename\(|\.rename\(|os\.fsync\(")
    found = []
    for f in sorted((ROOT / "minitransformer").rglob("*.py")):
        if f.name == "atomic.py":
            continue
        for i, line in enumerate(f.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if idiom.search(code) and not code.lstrip().startswith(("\"", "'")):
                found.append(f"{f.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not found, "write these through minitransformer.atomic:\n" + "\n".join(found)
