"""Checkpoints that survive crashes: write aside, verify, then switch a pointer.

A training run's folder looks like this:

    out/
      latest                      text file naming the newest complete checkpoint
      metrics.jsonl               one JSON object per logged step / evaluation
      checkpoints/best/           with --keep-best: the lowest validation loss so far (never rotated;
                                  no optimizer state: a model to use, not a point to resume from)
      checkpoints/step-000200/    a complete checkpoint:
        model.safetensors           weights (safetensors: no code runs on load)
        optimizer.safetensors       optimiser state (Adam moments, step count)
        config.json                 model config (family + fields)
        trainer_state.json          step, data cursor, training config, file checksums
        tokenizer.json              when the run has a tokenizer
        README.md                   the model card

A save writes the folder ``step-N`` and then the pointer ``latest``, each through
``minitransformer.atomic`` (written aside, fsynced, renamed into place, the parent folder
fsynced). A crash at any moment leaves ``latest`` naming a complete, checksummed checkpoint;
a leftover ``.tmp`` folder is ignored and removed by the next save. On load every file's
SHA-256 is compared with the one recorded in ``trainer_state.json``, so a truncated or
corrupted file is refused with a message naming it.

A save that fails (a full disk, a quota, a read-only mount: any ``OSError``) leaves the
previous checkpoint as it was, since nothing it wrote is in place until the last rename, and
raises ``SaveError``: one line naming the path, the system's reason and the checkpoint kept.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
from pathlib import Path

from minitransformer import atomic

STATE_FILE = "trainer_state.json"
FINETUNE_FILE = "finetune.json"    # marks a fine-tuned model folder (see minitransformer.finetune)
FORMAT_VERSION = 1
BEST = "best"                      # checkpoints/best: the lowest validation loss of the run


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete or corrupted."""


class SaveError(OSError):
    """Writing a checkpoint failed (e.g. the disk is full); the previous one is kept."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_json(path: Path, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)


def save_arrays(path: Path, arrays: dict, metadata: dict | None = None) -> None:
    """Write named arrays (any device) as a safetensors file (``hf.tensor_file.write_tensors``)."""
    from minitransformer.hf.tensor_file import write_tensors

    write_tensors(path, arrays, metadata)


def load_arrays(path: Path) -> dict:
    """Read a safetensors file into NumPy arrays in their stored dtypes (bfloat16 as float32);
    a damaged file raises CheckpointError (``hf.tensor_file.read_tensors``)."""
    from minitransformer.hf.tensor_file import read_tensors

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    return read_tensors(path, float_dtype=None)


def config_to_dict(config) -> dict:
    d = dataclasses.asdict(config)
    d["family"] = config.family
    return d


def config_from_dict(d: dict):
    """The config a config.json of ours describes (its ``family`` names the config class)."""
    from minitransformer import families

    d = dict(d)
    family = d.pop("family", None)
    if not isinstance(family, str) or family not in families.NAMES:
        raise CheckpointError(f"config.json names family {family!r}; expected one of {sorted(families.NAMES)}")
    config_class = families.get(family).config_class
    fields = {f.name for f in dataclasses.fields(config_class)}
    return config_class(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in fields})


def save_checkpoint(run_dir, step: int, model, optimizer=None, state: dict | None = None,
                    tokenizer=None, card: str | None = None, keep: int = 0) -> Path:
    """Save a complete checkpoint for ``step`` under ``run_dir`` and point ``latest`` at it.

    ``keep`` > 0 deletes all but the newest ``keep`` checkpoints afterwards.
    """
    run_dir = Path(run_dir)
    try:
        return _save_checkpoint(run_dir, step, model, optimizer, state, tokenizer, card, keep)
    except OSError as e:
        raise SaveError(_save_failed(run_dir, step, e)) from e


def _save_failed(run_dir: Path, step: int, error: OSError) -> str:
    """One line: what could not be written, why (the system's words), and what is kept."""
    where = error.filename or run_dir / "checkpoints" / f"step-{step:06d}"
    reason = error.strerror or str(error)
    try:
        kept = (run_dir / "latest").read_text().strip()
        previous = json.loads((run_dir / kept / STATE_FILE).read_text())["step"]
        kept = f"the previous checkpoint, step {previous}, is kept: {run_dir / 'latest'} -> {kept}"
    except (OSError, ValueError, KeyError, TypeError):
        kept = "there is no earlier checkpoint to keep"
    return f"could not save the checkpoint of step {step}: {reason} ({where}); {kept}"


def _save_checkpoint(run_dir: Path, step: int, model, optimizer, state, tokenizer, card, keep: int) -> Path:
    ckpt_root = run_dir / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    for stale in [*ckpt_root.glob("*.tmp"), *ckpt_root.glob("*.old")]:   # debris of an interrupted save
        shutil.rmtree(stale, ignore_errors=True)
    name = f"step-{step:06d}"
    final = ckpt_root / name
    with atomic.atomic_folder(final) as tmp:
        _write_files(tmp, step, model, optimizer, state, tokenizer, card)
    atomic.write_text(run_dir / "latest", f"checkpoints/{name}\n")

    if keep > 0:
        complete = sorted(p for p in ckpt_root.glob("step-*") if re.fullmatch(r"step-\d+", p.name))
        for old in complete[:-keep]:
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    return final


def _write_files(folder: Path, step: int, model, optimizer, state, tokenizer, card) -> None:
    """A checkpoint's files in ``folder``: weights, optimizer state (if any), config,
    tokenizer and card (if given), then the state file with the checksums of all the others."""
    save_arrays(folder / "model.safetensors", model.state_dict(), {"format": "pt"})
    if optimizer is not None:
        save_arrays(folder / "optimizer.safetensors", optimizer.state_dict())
    _write_json(folder / "config.json", config_to_dict(model.config))
    if tokenizer is not None:
        tokenizer.save(folder / "tokenizer.json")
    if card is not None:
        (folder / "README.md").write_text(card)
    files = sorted(p.name for p in folder.iterdir())
    full_state = dict(state or {}, step=step, format_version=FORMAT_VERSION,
                      checksums={f: _sha256(folder / f) for f in files})
    _write_json(folder / STATE_FILE, full_state)


def save_best(run_dir, step: int, model, state: dict, tokenizer=None, card: str | None = None) -> Path:
    """Write the best checkpoint of a run, ``checkpoints/best``, replacing the previous best.

    The same crash-safe folder write and checksums as ``save_checkpoint`` (a crash leaves the
    previous best whole), without the optimizer state and without touching ``latest``;
    ``state`` records the step and its ``best`` validation loss, which ``best_of`` reads back.
    """
    final = Path(run_dir) / "checkpoints" / BEST
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_folder(final) as tmp:
        _write_files(tmp, step, model, None, state, tokenizer, card)
    return final


def best_of(run_dir) -> tuple[Path, dict] | None:
    """(folder, {"step", "val_loss"}) of a run's best checkpoint, or None when it keeps none."""
    folder = Path(run_dir) / "checkpoints" / BEST
    try:
        best = json.loads((folder / STATE_FILE).read_text()).get("best")
    except (OSError, json.JSONDecodeError):
        return None
    return (folder, best) if isinstance(best, dict) else None


def resolve(path) -> Path:
    """A checkpoint folder from a run folder (follows ``latest``), a step folder, or a hub id."""
    path = Path(path)
    if not path.exists():
        from minitransformer.hf import hub

        if not hub.looks_like_hub_id(str(path)):
            raise FileNotFoundError(f"no such checkpoint or run folder: {path}")
        return hub.locate(path)
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
    """Rebuild the model saved in a checkpoint (or run) folder, with its weights.

    A config whose model would not fit in memory is refused before anything is allocated
    (``minitransformer.limits``).
    """
    from minitransformer import limits, models

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
    config = config_from_dict(raw)
    limits.check_fits(config, "float32", source=str(config_path))      # before anything is allocated
    model = models.build(config)
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
    from minitransformer.hf.tokenizer_json import load_tokenizer_json

    return load_tokenizer_json(f)
