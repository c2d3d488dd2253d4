"""A sweep of model sizes: the ladder, each rung's config and rate, and the runs.

``run_sweep`` trains a ladder of model sizes on the same data and token budget and collects
the points a scaling law is fitted to (``fit``); ``minitransformer scale`` drives it and
writes the report (``report``). Every run is resumable and its result kept on disk.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy

from minitransformer.scaling.flops import chinchilla_tokens, training_flops
from minitransformer.scaling.parameters import count_parameters


@dataclasses.dataclass(frozen=True)
class ModelSize:
    """One rung of a size ladder: width, depth and heads (feed-forward 4 x width)."""

    d_model: int
    n_layers: int
    n_heads: int

    @property
    def name(self) -> str:
        return f"d{self.d_model}-L{self.n_layers}-H{self.n_heads}"


def parse_size(text: str) -> ModelSize:
    """"WIDTHxLAYERS" or "WIDTHxLAYERSxHEADS" (heads default: the most, up to one per 32 of
    width, that divide the width)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (2, 3) or min(parts) < 1:
        raise ValueError(f"model size {text!r} is not WIDTHxLAYERS or WIDTHxLAYERSxHEADS with "
                         "positive integers; e.g. 64x3 or 64x3x2")
    d, layers = parts[:2]
    heads = parts[2] if len(parts) == 3 else max(h for h in range(1, max(d // 32, 1) + 1) if d % h == 0)
    if d % heads:
        raise ValueError(f"model size {text!r}: width {d} is not divisible by {heads} heads")
    return ModelSize(d, layers, heads)


# Ladders of width at a fixed depth: with a budget this short, a deeper model of the same
# size is still slower to train, and mixing depths would mix that into the trend. Non-embedding
# parameters (GPT): 25 thousand to 1.6 million (quick, 62x), 0.2 to 12.6 million (full, 64x).
# Heads of 32 dimensions where the width allows.
QUICK_SIZES = tuple(parse_size(f"{d}x2") for d in (32, 48, 64, 96, 128, 192, 256))
FULL_SIZES = tuple(parse_size(f"{d}x4") for d in (64, 96, 128, 192, 256, 384, 512))



def sweep_config(family: str, size: ModelSize, tokenizer, seq_len: int):
    """The config of ``family`` at ``size``, with the tokenizer's vocabulary and special ids
    and room for ``seq_len`` positions; no dropout (short runs underfit).

    GPT and BERT initialise with std 0.02 whatever the width, a value chosen for width 768.
    A width-32 model drawn that way starts with signals 5x smaller than one of width 768,
    and spends much of a short run escaping that start; so every width here draws with std
    0.02 sqrt(768 / width), which gives them all the start of the published models. (T5
    already scales its init by the fan-in.)
    """
    from minitransformer import families, recipes

    fam = families.get(family)
    shape = fam.shape(size.d_model, size.n_layers, size.n_heads, seq_len,
                      init_std=0.02 * math.sqrt(768 / size.d_model))
    return recipes.model_config(fam.tiny_preset, tokenizer, seq_len, **shape)


def default_lr(config) -> float:
    """Peak learning rate for a sweep run: the family's ``pretrain`` rate at width 128 (the
    tiny presets), times sqrt(128 / width) (narrower models take larger steps), kept within
    [1e-3, 6e-3] for a rate of 3e-3 (BERT's 1e-3: a third of that)."""
    from minitransformer import families

    reference = 3e-3                        # the rate the bounds are stated for
    lr = min(max(reference * math.sqrt(128 / config.d_model), 1e-3), 6e-3)
    return lr * families.of(config).lr / reference


def _batch_shape(data):
    """(seq_len, decoder_len or None, mlm_fraction) of the objective's batches."""
    b = data.batch(0, 1)
    dec = b.get("decoder_input_ids")
    return (b["input_ids"].shape[1], None if dec is None else dec.shape[1],
            float(getattr(data, "mlm_probability", 0.15)))


def write_json(path: Path, obj) -> None:
    """``obj`` as indented JSON, written whole or not at all (a temporary file, then a rename)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def _train_loss_tail(run_dir: Path, fraction: float = 0.1):
    """Mean training loss over the last ``fraction`` of the logged steps (a smoother end point)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    losses = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line) if line.strip() else {}
        if "loss" in rec:
            losses[rec["step"]] = rec["loss"]      # a resumed run may log a step twice
    if not losses:
        return None
    steps = sorted(losses)
    tail = steps[-max(1, int(len(steps) * fraction)):]
    return float(numpy.mean([losses[s] for s in tail]))


def run_sweep(runs, train_data, val_data, out_dir, *, tokens: int, batch_size: int = 16,
              lr: float | None = None, warmup_fraction: float = 0.05, seed: int = 0,
              device: str = "cpu", max_eval_batches: int = 16, data_key: str = "",
              progress=None, stop=None) -> list[dict]:
    """Train each (name, config) of ``runs`` on the same data for the same ``tokens``; return
    one result dict per run, in order.

    Each run lives in ``out_dir/runs/NAME`` and writes ``result.json`` when it finishes;
    calling again with the same settings skips finished runs and resumes an interrupted one
    from its checkpoint. ``out_dir/sweep.json`` records the settings (plus ``data_key``,
    naming the data) and a later call with other settings is refused. Every run has the
    same token budget, a cosine schedule over its own steps with ``warmup_fraction`` warmup,
    and ``default_lr`` unless ``lr`` is given; it is evaluated once, at the end, on up to
    ``max_eval_batches`` validation batches. ``progress(event)`` receives dicts with
    "event": "start" | "step" | "done" | "skip" and "index", "name", and the step's metrics
    or the run's result. ``stop`` (a ``jobs.StopSignals``) is read before every step of every
    run: once raised, the current run saves its last step and ``jobs.Stopped`` is raised, so
    that calling again resumes it.
    """
    from minitransformer import backend, families, models
    from minitransformer.train import TrainConfig, Trainer

    runs = list(runs)
    if not runs:
        raise ValueError("run_sweep: no runs given; pass (name, config) pairs")
    names = [name for name, _ in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"run_sweep: run names must be distinct, got {names}")
    if not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"run_sweep: tokens must be a positive integer budget, got {tokens!r}")
    family = families.of(runs[0][1]).name
    if any(families.of(c).name != family for _, c in runs):
        raise ValueError("run_sweep: every run of a sweep must be of one family, got "
                         f"{sorted({families.of(c).name for _, c in runs})}")
    seq_len, decoder_len, mlm_fraction = _batch_shape(train_data)
    steps = -(-tokens // (batch_size * seq_len))
    out_dir = Path(out_dir)
    settings = {"family": family, "tokens": tokens, "batch_size": batch_size, "seq_len": seq_len,
                "steps": steps, "lr": lr, "warmup_fraction": warmup_fraction, "seed": seed,
                "data": data_key}
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / "sweep.json").is_file():
        old = json.loads((out_dir / "sweep.json").read_text())
        changed = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
        if changed:
            what = ", ".join(f"{k} was {a!r}, now {b!r}" for k, (a, b) in changed.items())
            raise ValueError(f"{out_dir} holds a sweep with other settings ({what}); use the "
                             "same settings to resume it, or another output folder")
    write_json(out_dir / "sweep.json", settings)
    eval_batches = max(1, min(max_eval_batches, getattr(val_data, "num_blocks", batch_size) // batch_size))

    def emit(**event):
        if progress is not None:
            progress(event)

    results = []
    for index, (name, config) in enumerate(runs):
        run_dir = out_dir / "runs" / name
        result_path = run_dir / "result.json"
        config_dict = dataclasses.asdict(config)
        if result_path.is_file():
            done = json.loads(result_path.read_text())
            if done.get("config") != config_dict:
                raise ValueError(f"{run_dir} holds a finished run of another config; remove it or "
                                 "use another output folder")
            results.append(done)
            emit(event="skip", index=index, name=name, result=done)
            continue
        if stop is not None and stop.requested:          # between two runs: nothing to save
            from minitransformer import jobs

            raise jobs.Stopped(f"stopped by {stop.name} before run {name}; the finished runs are kept",
                               stop.exit_status)
        params = count_parameters(config)
        flops = training_flops(config, batch_size, seq_len, decoder_len, mlm_fraction)
        flops /= batch_size * seq_len                                # per token
        run_lr = lr or default_lr(config)
        cfg = TrainConfig(objective=families.get(family).objective, steps=steps, batch_size=batch_size,
                          lr=run_lr, warmup=max(1, round(warmup_fraction * steps)),
                          schedule="cosine", eval_every=0, eval_batches=eval_batches,
                          save_every=0, keep_checkpoints=1, seed=seed, device=device)
        backend.manual_seed(seed)
        trainer = Trainer(models.build(config), train_data, val_data, cfg, run_dir,
                          card_info={"name": f"{name}: {family} scaling sweep run"})
        resumed = trainer.resume()
        emit(event="start", index=index, name=name, steps=steps, step=trainer.step, resumed=resumed,
             params=params, lr=run_lr)
        t0 = time.perf_counter()
        final = trainer.fit(progress=lambda m: emit(event="step", index=index, name=name, **m), stop=stop)
        seconds = time.perf_counter() - t0
        result = {
            "name": name, "index": index, "family": family, "config": config_dict,
            "d_model": config.d_model, "n_layers": config.n_layers, "n_heads": config.n_heads,
            "params": params["total"], "non_embedding_params": params["non_embedding"],
            "embedding_params": params["embedding"],
            "flops_per_token": flops, "tokens": trainer.tokens_seen,
            "compute": flops * trainer.tokens_seen, "steps": trainer.step, "lr": run_lr,
            "val_loss": final.get("val_loss"), "train_loss": _train_loss_tail(run_dir),
            "seconds": seconds, "resumed": resumed,
            "chinchilla_tokens": chinchilla_tokens(params["total"]),
        }
        write_json(result_path, result)
        results.append(result)
        emit(event="done", index=index, name=name, result=result)
    return results
