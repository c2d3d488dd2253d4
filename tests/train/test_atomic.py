"""Crash-safe writes: a fault injected at any stage of a write leaves the previous version
intact (or, once the rename has happened, the complete new one), and no debris behind."""
import pytest

from minitransformer import atomic


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
