"""The fine-tuning loop: batches of labelled examples, AdamW, a short schedule.

Fine-tuning is pre-training's loop on a different loss: the same AdamW (no decay on
biases, norms and embeddings), a warmup then a decay of the learning rate, global-norm
clipping, and the loss averaged over the batch's targets (sentences for classification,
labelled words for tagging, target tokens for seq2seq). The differences are the data (a
few thousand labelled examples, seen for several epochs) and the length (hundreds of
steps, not tens of thousands).

Warmup matters more here than in pre-training. The new head starts random, so the first
gradients into the pre-trained body are noise; at full learning rate a few such steps can
push the [CLS] position's attention into a saturated state where it reads the same thing
for every input, and the classifier then never learns (measured: a tiny BERT stuck at
50% for 600 steps after a 20-step warmup, 84.5-97.5% over four seeds after warming up over
the first 10% of 1000 steps). Hence BERT's recipe: warm up over 10% of the steps, then
decay linearly to zero.

The learning rate matters as much, and differs by task. A sentence classifier reads one
vector, and the cheapest way to lower its loss while the label signal is still faint is to
make that vector the same for every input (the loss then sits at ln 2 for two labels).
Measured on the 4-layer, width-128 ``bert-tiny`` preset pre-trained for 300 steps: at lr
1e-3 the spread of the [CLS] vector across inputs fell from 0.20 to 0.007 in 300 steps
and accuracy stayed at 50% after 1000; at 3e-4 the same run reached 97.3%. The tagger,
with a target at every word, learns at 1e-3 (entity F1 0.974 against 0.849 at 3e-4 after
300 steps). T5 on number words to digits: the 2-layer, width-128 ``t5-tiny`` preset
(400 steps of span corruption) reaches exact match 0.697 after 1500 steps at 1e-3 against
0.343 at 3e-3 (and 0.203 after 600 steps at 1e-3); the width-64 model of ``tiny`` does
better at 3e-3 (0.990 against 0.927). Wider models want lower rates, as in pre-training.
``FinetuneConfig.for_task`` holds defaults measured on the command line's presets.

Batch ``i`` is a pure function of (seed, i): position p = i * batch_size + r of the
stream is example ``perm_e[p mod n]`` of epoch e = p // n, each epoch its own permutation.
Dropout is re-seeded from (seed, step), as in pre-training, so a run is reproducible.

That is also why a fine-tuning run resumes bit for bit: a checkpoint (``RunCheckpoints``,
written as pre-training writes its own, through ``minitransformer.checkpoint``) holds the
weights, the optimizer state (Adam's moments and step count), the step and the losses so
far; the batches and the dropout masks of the steps after it depend on nothing else. A stop
request (``jobs.StopSignals``: SIGTERM, SIGHUP, Ctrl-C) is read between steps: the step in
flight finishes, is saved, and ``jobs.Stopped`` is raised.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import numpy

from minitransformer import backend, checkpoint, jobs, optim
from minitransformer.models import count_targets
from minitransformer.train import step_seed, to_device


# Per-task defaults (see the module docstring for the measurements behind the rates).
TASK_DEFAULTS = {"classify": {"steps": 1000, "lr": 3e-4},
                 "tag": {"steps": 300, "lr": 1e-3},
                 "seq2seq": {"steps": 1500, "lr": 1e-3}}


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    steps: int = 300               # optimizer steps
    batch_size: int = 16           # examples per step
    lr: float = 1e-3               # peak learning rate (tiny models tolerate more than BERT's 2e-5)
    warmup: int | None = None      # linear warmup steps; None: 10% of the steps (BERT's recipe)
    schedule: str = "linear"       # "linear" (to 0, as BERT fine-tunes), "cosine" or "inverse-sqrt"
    weight_decay: float = 0.01     # decoupled; not on biases, norms, embeddings
    grad_clip: float = 1.0         # max global gradient norm (0 = off)
    seed: int = 0                  # head initialisation, batch order, dropout
    max_length: int = 128          # tokens per input; longer ones are truncated (and counted)
    eval_batch_size: int = 64      # examples per forward pass when predicting
    num_beams: int = 1             # seq2seq decoding: 1 = greedy
    device: str = "cpu"

    def __post_init__(self):
        for name in ("steps", "batch_size", "max_length", "eval_batch_size", "num_beams"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"FinetuneConfig: {name} must be a positive integer, got {v!r}")
        if not self.lr > 0:
            raise ValueError(f"FinetuneConfig: lr must be positive, got {self.lr!r}")
        if self.warmup is not None and self.warmup < 0:
            raise ValueError(f"FinetuneConfig: warmup must be >= 0, got {self.warmup!r}")

    @classmethod
    def for_task(cls, task: str, **overrides) -> "FinetuneConfig":
        """The defaults measured to work for ``task`` (steps and lr), with ``overrides``."""
        if task not in TASK_DEFAULTS:
            raise ValueError(f"unknown task {task!r}; choose one of: {', '.join(TASK_DEFAULTS)}")
        return cls(**{**TASK_DEFAULTS[task], **{k: v for k, v in overrides.items() if v is not None}})

    @property
    def warmup_steps(self) -> int:
        return max(1, self.steps // 10) if self.warmup is None else self.warmup


class ExampleBatches:
    """Shuffled batches over a fixed list of encoded examples.

    features: one encoded example per item (whatever ``collate`` takes);
    collate: list of features -> dict of (padded) arrays, the batch a model's loss reads.
    """

    def __init__(self, features: list, collate, seed: int = 0):
        if not features:
            raise ValueError("no training examples to fine-tune on")
        self.features, self.collate, self.seed = features, collate, seed
        self._perms: dict[int, numpy.ndarray] = {}

    def __len__(self) -> int:
        return len(self.features)

    def permutation(self, epoch: int) -> numpy.ndarray:
        if epoch not in self._perms:
            rng = numpy.random.default_rng(numpy.random.SeedSequence([self.seed, epoch]))
            self._perms[epoch] = rng.permutation(len(self.features))
        return self._perms[epoch]

    def batch(self, index: int, batch_size: int, rows=None) -> dict:
        n = len(self.features)
        positions = index * batch_size + numpy.arange(batch_size)
        if rows is not None:
            positions = positions[rows]
        picks = [int(self.permutation(int(p) // n)[int(p) % n]) for p in positions]
        return self.collate([self.features[i] for i in picks])


class RunCheckpoints:
    """The checkpoints of one fine-tuning run in ``run_dir``: every ``save_every`` steps (0:
    only when stopped), the newest ``keep`` kept, as ``pretrain`` keeps its own.

    ``fingerprint`` names the training data (``data_fingerprint``); with ``resume``, the
    latest checkpoint is loaded and refused if it was made with another config or data.
    """

    def __init__(self, run_dir, cfg: FinetuneConfig, fingerprint: str, save_every: int = 0, keep: int = 2,
                 resume: bool = False):
        if save_every < 0 or keep < 1:
            raise ValueError(f"save_every must be >= 0 and keep >= 1, got {save_every} and {keep}")
        self.run_dir, self.cfg, self.fingerprint = Path(run_dir), cfg, fingerprint
        self.save_every, self.keep, self.resume = save_every, keep, resume

    def _config(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self.cfg).items() if k != "device"}

    def save(self, step: int, model, optimizer, losses: list, history: list) -> Path:
        state = {"finetune_config": self._config(), "data": self.fingerprint, "losses": losses, "history": history}
        return checkpoint.save_checkpoint(self.run_dir, step, model, optimizer, state, keep=self.keep)

    def restore(self, model, optimizer) -> tuple[int, list, list]:
        """(step, losses, history) of the latest checkpoint, loaded into ``model`` and
        ``optimizer``; (0, [], []) when not resuming."""
        if not self.resume:
            return 0, [], []
        if not (self.run_dir / "latest").is_file():
            raise FileNotFoundError(f"--resume: {self.run_dir} has no fine-tuning checkpoint to resume from")
        ckpt = checkpoint.resolve(self.run_dir)
        state = checkpoint.verify(ckpt)
        saved, now = state.get("finetune_config", {}), self._config()
        changed = [f"{k}={saved.get(k)!r}, now {v!r}" for k, v in now.items() if saved.get(k) != v]
        if changed:
            raise ValueError(f"cannot resume {self.run_dir}: it was fine-tuned with {'; '.join(changed)}; "
                             "use the same settings, or another --out")
        if state.get("data") != self.fingerprint:
            raise ValueError(f"cannot resume {self.run_dir}: it was fine-tuned on other training data; "
                             "use the same data, or another --out")
        model.load_state_dict(checkpoint.load_arrays(ckpt / "model.safetensors"))
        optimizer.load_state_dict(checkpoint.load_arrays(ckpt / "optimizer.safetensors"))
        history = [{"step": r["step"], "loss": r["loss"], "lr": r["lr"]} for r in state["history"]]  # in log order
        return int(state["step"]), list(state["losses"]), history


def data_fingerprint(examples) -> str:
    """A short hash of the training examples (their order included)."""
    text = json.dumps(list(examples), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fit(model, data: ExampleBatches, cfg: FinetuneConfig, family: str, progress=None,
        checkpoints: RunCheckpoints | None = None, stop=None) -> list[float]:
    """Train ``model`` for ``cfg.steps`` steps on ``data``; returns the loss of every step.

    ``progress``, if given, is called after each step with {"step", "loss", "lr"} (on
    resuming, first once for each step done before, from the checkpoint).
    ``checkpoints`` saves the run now and then and resumes it; ``stop`` (a
    ``jobs.StopSignals``) is read before every step: once raised, the last step is saved and
    ``jobs.Stopped`` raised.
    """
    model.to(cfg.device)
    opt = optim.AdamW(model, lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay,
                      no_decay=optim.no_decay_names(model))
    schedule = optim.make_schedule(cfg.schedule, cfg.lr, cfg.warmup_steps, cfg.steps)
    start, losses, history = checkpoints.restore(model, opt) if checkpoints is not None else (0, [], [])
    for record in history:
        if progress is not None:
            progress(record)
    saved = start
    model.train()
    for step in range(start, cfg.steps):
        if stop is not None and stop.requested:
            if checkpoints is None:
                where = "nothing was saved (no --out)"
            elif step == 0:
                where = "nothing was saved (no step completed)"
            else:
                path = checkpoints.save(step, model, opt, losses, history) if step != saved \
                    else checkpoint.resolve(checkpoints.run_dir)
                where = f"saved in {path}"
            raise jobs.Stopped(f"stopped by {stop.name} after step {step} of {cfg.steps}; {where}",
                               stop.exit_status)
        value = _step(model, opt, data, cfg, family, step, schedule(step))
        losses.append(value)
        if math.isfinite(value):
            record = {"step": step + 1, "loss": value, "lr": opt.lr}
            history.append(record)
            if progress is not None:
                progress(dict(record))
        if checkpoints is not None and checkpoints.save_every and (step + 1) % checkpoints.save_every == 0 \
                and step + 1 < cfg.steps:        # the last step's state is the fine-tuned model itself
            checkpoints.save(step + 1, model, opt, losses, history)
            saved = step + 1
    model.eval()
    return losses


def _step(model, opt, data: ExampleBatches, cfg: FinetuneConfig, family: str, step: int, lr: float) -> float:
    """One optimizer step on batch ``step``; its mean loss (nan when the batch has no target)."""
    backend.manual_seed(step_seed(cfg.seed, step))
    host_batch = data.batch(step, cfg.batch_size)
    n = count_targets(host_batch, family)     # on the host: counting on a device would wait for it
    if n == 0:                       # e.g. every word truncated away: nothing to learn
        return float("nan")
    loss = model.loss(to_device(host_batch, cfg.device), reduction="sum") * (1.0 / n)
    value = float(loss.item())       # the step's one transfer to the host
    if not math.isfinite(value):
        raise FloatingPointError(f"fine-tuning loss became {value} at step {step}; lower the "
                                 "learning rate (--lr) or check the data")
    loss.backward()
    opt.lr = lr
    optim.clip_grad_norm(model, cfg.grad_clip)
    opt.step()
    opt.zero_grad()
    return value


def pad(rows: list[list[int]], value: int, length: int | None = None) -> numpy.ndarray:
    """Right-pad integer rows to one length: (B, T) int64."""
    t = length if length is not None else max(len(r) for r in rows)
    out = numpy.full((len(rows), t), value, dtype=numpy.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]
