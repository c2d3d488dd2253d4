"""Checkpoints that survive crashes: write aside, verify, then switch a pointer.

A training run's folder looks like this:

    out/
      latest                      text file naming the newest complete checkpoint
      metrics.jsonl               one JSON object per logged step / evaluation
      checkpoints/step-000200/    a complete checkpoint:
        model.safetensors           weights (safetensors: no code runs on load)
        optimizer.safetensors       optimiser state (Adam moments, step count)
        config.json                 model config (family + fields)
        trainer_state.json          step, data cursor, training config, file checksums
        tokenizer.json              when the run has a tokenizer
        README.md                   the model card

A save writes every file into ``step-N.tmp``, fsyncs, renames the folder to ``step-N``
(atomic on POSIX), then replaces ``latest`` by writing ``latest.tmp`` and renaming it over.
A crash at any moment leaves ``latest`` naming a complete, checksummed checkpoint; a
leftover ``.tmp`` folder is ignored and removed by the next save. On load every file's
SHA-256 is compared with the one recorded in ``trainer_state.json``, so a truncated or
corrupted file is refused with a message naming it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy

from minitransformer import backend

STATE_FILE = "trainer_state.json"
FINETUNE_FILE = "finetune.json"    # marks a fine-tuned model folder (see minitransformer.finetune)
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete or corrupted."""


def _write_point(path: Path) -> None:
    """Called just before each file or folder of a save is written, renamed or deleted.

    Does nothing; a crash test replaces it to stop a save at every such point in turn.
    """


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def save_arrays(path: Path, arrays: dict, metadata: dict | None = None) -> None:
    """Write named arrays (any device) as a safetensors file, fsynced."""
    from safetensors.numpy import save_file

    host = {k: numpy.ascontiguousarray(backend.to_numpy(v)) for k, v in arrays.items()}
    save_file(host, str(path), metadata={k: str(v) for k, v in (metadata or {}).items()})
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def load_arrays(path: Path) -> dict:
    """Read a safetensors file into NumPy arrays; a damaged file raises CheckpointError."""
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for bad headers/data
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


def config_to_dict(config) -> dict:
    d = dataclasses.asdict(config)
    d["family"] = config.family
    return d


def config_from_dict(d: dict):
    from minitransformer import models

    d = dict(d)
    family = d.pop("family", None)
    classes = {"gpt": models.GPTConfig, "bert": models.BERTConfig, "t5": models.T5Config}
    if family not in classes:
        raise CheckpointError(f"config.json names family {family!r}; expected one of {sorted(classes)}")
    fields = {f.name for f in dataclasses.fields(classes[family])}
    return classes[family](**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in fields})


def save_checkpoint(run_dir, step: int, model, optimizer=None, state: dict | None = None,
                    tokenizer=None, card: str | None = None, keep: int = 0) -> Path:
    """Save a complete checkpoint for ``step`` under ``run_dir`` and point ``latest`` at it.

    ``keep`` > 0 deletes all but the newest ``keep`` checkpoints afterwards.
    """
    run_dir = Path(run_dir)
    ckpt_root = run_dir / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    for stale in ckpt_root.glob("*.tmp"):          # debris of an interrupted save
        _write_point(stale)
        shutil.rmtree(stale, ignore_errors=True)
    name = f"step-{step:06d}"
    tmp = ckpt_root / f"{name}.tmp"
    _write_point(tmp)
    tmp.mkdir()

    _write_point(tmp / "model.safetensors")
    save_arrays(tmp / "model.safetensors", model.state_dict(), {"format": "pt"})
    if optimizer is not None:
        _write_point(tmp / "optimizer.safetensors")
        save_arrays(tmp / "optimizer.safetensors", optimizer.state_dict())
    _write_point(tmp / "config.json")
    _write_json(tmp / "config.json", config_to_dict(model.config))
    if tokenizer is not None:
        _write_point(tmp / "tokenizer.json")
        tokenizer.save(tmp / "tokenizer.json")
    if card is not None:
        _write_point(tmp / "README.md")
        (tmp / "README.md").write_text(card)
    files = sorted(p.name for p in tmp.iterdir())
    full_state = dict(state or {}, step=step, format_version=FORMAT_VERSION,
                      checksums={f: _sha256(tmp / f) for f in files})
    _write_point(tmp / STATE_FILE)
    _write_json(tmp / STATE_FILE, full_state)
    _fsync_dir(tmp)

    final = ckpt_root / name
    if final.exists():
        _write_point(final)
        shutil.rmtree(final)
    _write_point(final)
    os.rename(tmp, final)
    _fsync_dir(ckpt_root)

    pointer_tmp = run_dir / "latest.tmp"
    _write_point(pointer_tmp)
    pointer_tmp.write_text(f"checkpoints/{name}\n")
    with open(pointer_tmp, "rb+") as f:
        os.fsync(f.fileno())
    _write_point(run_dir / "latest")
    os.replace(pointer_tmp, run_dir / "latest")
    _fsync_dir(run_dir)

    if keep > 0:
        complete = sorted(p for p in ckpt_root.glob("step-*") if not p.name.endswith(".tmp"))
        for old in complete[:-keep]:
            if old != final:
                _write_point(old)
                shutil.rmtree(old, ignore_errors=True)
    return final


def resolve(path) -> Path:
    """A checkpoint folder from either a run folder (follows ``latest``) or a step folder."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such checkpoint or run folder: {path}")
    if (path / "latest").is_file():
        target = path / (path / "latest").read_text().strip()
        if not target.is_dir():
            raise CheckpointError(f"{path / 'latest'} names {target}, which does not exist")
        return target
    return path


def verify(ckpt: Path) -> dict:
    """Read trainer_state.json and check every file's checksum; return the state."""
    state_path = ckpt / STATE_FILE
    if not state_path.is_file():
        raise CheckpointError(f"{ckpt} has no {STATE_FILE}: not a complete checkpoint")
    try:
        state = json.loads(state_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{state_path} is corrupted ({e})") from None
    for name, digest in state.get("checksums", {}).items():
        f = ckpt / name
        if not f.is_file():
            raise CheckpointError(f"checkpoint file {f} is missing")
        if _sha256(f) != digest:
            raise CheckpointError(f"checkpoint file {f} is corrupted or truncated (checksum mismatch); "
                                  "resume from an earlier checkpoint or retrain")
    return state


def load_model(path, device: str = "cpu"):
    """Rebuild the model saved in a checkpoint (or run) folder, with its weights."""
    from minitransformer import models

    ckpt = resolve(path)
    if (ckpt / STATE_FILE).is_file():
        verify(ckpt)
    config_path = ckpt / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{ckpt} has no config.json; is it a minitransformer checkpoint?")
    raw = json.loads(config_path.read_text())
    task = json.loads((ckpt / FINETUNE_FILE).read_text()).get("task") if (ckpt / FINETUNE_FILE).is_file() else None
    if task not in (None, "seq2seq"):
        # A classifier's weights are a body plus a task head, not a pre-training model;
        # T5 fine-tunes with its own head, so a seq2seq folder loads as a plain T5.
        raise CheckpointError(f"{ckpt} holds a model fine-tuned for {task!r}, not a pre-trained one; load it "
                              "with minitransformer.finetune.load_finetuned, or score it with "
                              f"'minitransformer evaluate --model {ckpt}'")
    if "family" not in raw:           # a transformers-format folder
        from minitransformer import hf

        return hf.load_pretrained(ckpt).to(device)
    model = models.build(config_from_dict(raw))
    model.load_state_dict(load_arrays(ckpt / "model.safetensors"))
    return model.to(device)


def load_tokenizer(path):
    """The tokenizer saved with a checkpoint, or None if it has none.

    Any tokenizer.json: our byte-level BPE, or the WordPiece (BERT) and Unigram (T5) files of
    transformers-format folders.
    """
    ckpt = resolve(path)
    f = ckpt / "tokenizer.json"
    if not f.is_file():
        return None
    from minitransformer.data.hf_tokenizers import load_tokenizer_json

    return load_tokenizer_json(f)
