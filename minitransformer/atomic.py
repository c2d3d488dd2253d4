"""Crash-safe writes: a file or folder is either the previous version or the complete new one.

The recipe (POSIX): write the new content under a temporary name in the same folder, fsync
it (its bytes are on disk), rename it over the target (one atomic step: a reader sees the old
version or the new one, never a mix), then fsync the folder (the rename itself is on disk).
A crash at any moment leaves the previous version readable; the temporary debris is removed
when the write fails, or by the next write of the same target after a crash.

    with atomic_file(path, "w") as f:          # one file
        f.write(text)
    with atomic_folder(path) as tmp:           # a folder of files, e.g. a checkpoint
        (tmp / "model.safetensors").write_bytes(...)

Fault injection: ``fault_hook``, when set, is called as ``fault_hook(stage, path)`` just
before each stage of a write (``STAGES``: "write" the content is written, "fsync" it is
made durable, "rename" it takes the target's place, "fsync-folder" the rename is made
durable). A test sets it to raise at one stage and checks that the previous version
survives.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

STAGES = ("write", "fsync", "rename", "fsync-folder")
fault_hook = None


def _stage(stage: str, path: Path) -> None:
    if fault_hook is not None:
        fault_hook(stage, path)


def fsync_folder(path) -> None:
    """Make a folder's entries (files created or renamed in it) durable; a no-op where the
    platform cannot open a folder (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_file(path, mode: str = "w", **open_kwargs):
    """Open a temporary file beside ``path`` for writing; on a clean exit it replaces ``path``.

    ``mode`` is a writing mode of ``open`` ("w", "wb", "w+b", ...); an exception inside the
    block (or a failure at any stage) removes the temporary file and leaves ``path`` as it was.
    """
    path = Path(path)
    if not mode.startswith("w"):
        raise ValueError(f"atomic_file: mode must write a new file ('w', 'wb', 'w+b', ...), got {mode!r}")
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")   # per process: ranks may share a cache
    try:
        with open(tmp, mode, **open_kwargs) as f:
            _stage("write", path)
            yield f
            f.flush()
            _stage("fsync", path)
            os.fsync(f.fileno())
        _stage("rename", path)
        os.replace(tmp, path)
        _stage("fsync-folder", path)
        fsync_folder(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path, data: bytes) -> None:
    """Replace ``path`` by ``data``, atomically."""
    with atomic_file(path, "wb") as f:
        f.write(data)


def write_text(path, text: str, encoding: str = "utf-8") -> None:
    """Replace ``path`` by ``text``, atomically."""
    with atomic_file(path, "w", encoding=encoding) as f:
        f.write(text)


@contextlib.contextmanager
def atomic_folder(path, carry=()):
    """Yield an empty temporary folder beside ``path``; on a clean exit it replaces ``path``.

    Every file written into it is fsynced before the switch. An existing ``path`` is first
    renamed to ``path.old`` and removed once the new folder is in place, so a crash between
    the two renames leaves the previous version there (``.old``) and never a half-written one
    under the real name. An exception removes the temporary folder and keeps ``path``.

    ``carry`` names files of the previous version that the new one keeps as they are: each is
    hard-linked into the temporary folder, so it stays the same file (a lock held on it,
    e.g. ``jobs.own``'s, stays held).
    """
    path = Path(path)
    tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
    for debris in (tmp, old):                # of a write that crashed
        shutil.rmtree(debris, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for name in carry:
            if (path / name).is_file():
                os.link(path / name, tmp / name)
        _stage("write", path)
        yield tmp
        _stage("fsync", path)
        for f in sorted(tmp.rglob("*")):
            if f.is_file():
                _fsync_file(f)
        fsync_folder(tmp)
        _stage("rename", path)
        moved = path.exists()
        if moved:
            os.rename(path, old)
        try:
            os.rename(tmp, path)
        except BaseException:
            if moved:
                os.rename(old, path)
            raise
        _stage("fsync-folder", path)
        fsync_folder(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if path.exists():                    # the new version (or, restored, the previous one) in place
            shutil.rmtree(old, ignore_errors=True)
