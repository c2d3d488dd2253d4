"""The training loop: one loop for the three objectives.

Each optimizer step takes global batch ``step`` from the objective (a pure function of the
seed and the step, so a resumed run or several data-parallel ranks see exactly the batches
one uninterrupted process would), splits it into micro-batches, and accumulates gradients:

    loss = sum over micro-batches of (summed token loss) / (non-ignored targets in the whole batch)

so accumulation (and data parallelism) give the same gradient as one big batch, whatever
the number of real tokens in each piece. Then: clip the global gradient norm, step the
optimizer, log, evaluate now and then, checkpoint now and then.

Randomness (dropout) is re-seeded at every step from (seed, step), so the run needs no RNG
state saved: step N draws the same masks whether or not the run was resumed before it.

A non-finite loss stops the run (``NonFiniteLoss``, naming the step) without saving over
the last good checkpoint. A stop request (``minitransformer.jobs.StopSignals``: SIGTERM,
SIGHUP or Ctrl-C) is read between steps, never inside one: the step in flight finishes,
the run saves it and raises ``jobs.Stopped``. Data-parallel ranks first agree on the stop
(the largest signal any rank received, one all-reduce per step), so all stop after the same
step, and rank 0's save ends in a collective that every rank waits for before it exits.

Model selection. Every evaluation is compared with the best validation loss so far: a loss
strictly lower is an improvement (a tie is not: the earlier checkpoint stays the best).
``keep_best`` writes the model of each new best to ``checkpoints/best`` (never rotated away);
``early_stop = N`` ends the run, saved, after N evaluations in a row without improvement. The
best so far and the count of evaluations since are part of the saved state, so a resumed run
selects the same checkpoint and stops at the same step as an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy

from minitransformer import atomic, backend, checkpoint, dist, jobs, optim
from minitransformer.autograd import no_grad
from minitransformer.models import count_targets


class NonFiniteLoss(RuntimeError):
    """The loss became inf or nan."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    objective: str = "clm"            # "clm" | "mlm" | "span"
    steps: int = 600                  # total optimizer steps of the run (resuming continues to it)
    batch_size: int = 16              # global batch: sequences per optimizer step
    micro_batch_size: int = 0         # sequences per forward/backward; 0 = the whole batch
    lr: float = 2e-3                  # peak learning rate
    warmup: int = 30                  # linear warmup steps
    schedule: str = "cosine"          # "cosine" | "linear" | "inverse-sqrt"
    weight_decay: float = 0.1         # decoupled, not on biases, norms, embeddings
    beta1: float = 0.9
    beta2: float = 0.98
    grad_clip: float = 1.0            # max global gradient norm (0 = off)
    eval_every: int = 100             # steps between validations (0 = only at the end)
    eval_batches: int = 4             # validation batches per evaluation
    save_every: int = 200             # steps between checkpoints (0 = only at the end)
    keep_checkpoints: int = 2         # newest checkpoints kept on disk
    keep_best: bool = False           # also keep the checkpoint of the lowest validation loss, apart
    early_stop: int = 0               # stop after this many evaluations without improvement (0 = never)
    seed: int = 0
    device: str = "cpu"


def step_seed(seed: int, step: int, *more: int) -> int:
    """The RNG seed of one training step: independent streams for every (run seed, step)
    (and for every ``more``, e.g. the first row a data-parallel rank takes)."""
    return int(numpy.random.SeedSequence([seed, step, *more]).generate_state(1, dtype=numpy.uint64)[0] >> 1)


def to_device(batch: dict, device: str) -> dict:
    xp = backend.module_for_device(device)
    return {k: (xp.asarray(v) if device != "cpu" else v) for k, v in batch.items()}


def _rows(batch: dict, lo: int, hi: int) -> dict:
    return {k: v[lo:hi] for k, v in batch.items()}


def evaluate(model, objective, batches: int, batch_size: int, device: str = "cpu") -> dict:
    """Validation loss (nats per target token), perplexity, and, for a family that reports it
    (masked LM), the accuracy on the predicted tokens."""
    from minitransformer import families

    accuracy = families.of(model).reports_accuracy
    was_training = model.training
    model.eval()
    total, count, correct = 0.0, 0, 0
    with no_grad():
        for i in range(batches):
            batch = to_device(objective.batch(i, batch_size), device)
            n = count_targets(batch, model)
            if n == 0:
                continue
            if accuracy:                        # the argmax of the logits at every target
                logits = model(batch["input_ids"], attention_mask=batch["attention_mask"],
                               token_type_ids=batch["token_type_ids"])
                from minitransformer.functional import cross_entropy

                total += float(cross_entropy(logits, batch["labels"], reduction="sum").item())
                labels = backend.to_numpy(batch["labels"])
                pred = backend.to_numpy(logits.data.argmax(axis=-1))
                correct += int(((pred == labels) & (labels != -100)).sum())
            else:
                total += float(model.loss(batch, reduction="sum").item())
            count += n
    model.train(was_training)
    loss = total / max(count, 1)
    out = {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0)), "val_tokens": count}
    if accuracy:
        out["val_accuracy"] = correct / max(count, 1)
    return out


class Trainer:
    """Runs (or resumes) one training run in ``out_dir``.

    ``progress``, if given, is called after each step with a dict of the step's metrics
    (the CLI draws a progress bar from it); nothing here prints. ``comm`` is the
    data-parallel communicator (``minitransformer.dist``); without one the run is a single
    process, whose communicator does nothing.
    """

    def __init__(self, model, train_data, val_data, config: TrainConfig, out_dir, tokenizer=None,
                 card_info: dict | None = None, comm=None):
        self.model = model
        self.train_data = train_data
        self.val_data = val_data
        self.cfg = config
        self.out_dir = Path(out_dir)
        self.tokenizer = tokenizer
        self.card_info = dict(card_info or {})
        model.to(config.device)               # before the optimizer, whose state follows the weights
        self.optimizer = optim.AdamW(
            model, lr=config.lr, betas=(config.beta1, config.beta2),
            weight_decay=config.weight_decay, no_decay=optim.no_decay_names(model),
        )
        self.distribute(comm or dist.SingleProcess())
        self.schedule = optim.make_schedule(config.schedule, config.lr, config.warmup, config.steps)
        self.step = 0
        self.tokens_seen = 0
        self.last_eval: dict = {}
        self.best: dict | None = None         # {"step", "val_loss"} of the lowest validation loss so far
        self.evals_since_best = 0             # evaluations in a row that did not improve on it
        self.stopped_early = False

    def distribute(self, comm) -> None:
        """Train over ``comm`` (a ``minitransformer.dist`` communicator): each rank takes its
        rows of every global batch; with ZeRO-1 the optimizer is sharded. Call before
        ``resume`` and ``fit``."""
        self.comm = comm
        self.optimizer = comm.wrap_optimizer(self.optimizer)

    # ---------------------------------------------------------------- checkpoints
    def _state(self) -> dict:
        return {"data_cursor": self.step, "tokens_seen": self.tokens_seen,
                "train_config": dataclasses.asdict(self.cfg), "last_eval": self.last_eval,
                "best": self.best, "evals_since_best": self.evals_since_best}

    def save(self) -> Path:
        from minitransformer.model_card import model_card

        card = model_card(self.model, self.cfg, step=self.step, tokens=self.tokens_seen,
                          metrics=self.last_eval, info=self.card_info, which="last", best=self.best)
        return checkpoint.save_checkpoint(self.out_dir, self.step, self.model, self.optimizer,
                                          self._state(), self.tokenizer, card,
                                          keep=self.cfg.keep_checkpoints)

    def resume(self) -> bool:
        """Load the latest checkpoint in ``out_dir`` if there is one; True when resumed."""
        if not (self.out_dir / "latest").is_file():
            return False
        ckpt = checkpoint.resolve(self.out_dir)
        state = checkpoint.verify(ckpt)
        saved = state.get("train_config", {})
        for key in ("objective", "batch_size", "seed"):
            if key in saved and saved[key] != getattr(self.cfg, key):
                raise ValueError(f"cannot resume {self.out_dir}: it was trained with {key}={saved[key]!r}, "
                                 f"now {key}={getattr(self.cfg, key)!r}; use the same value or a new --out")
        self.model.load_state_dict(checkpoint.load_arrays(ckpt / "model.safetensors"))
        self.optimizer.load_state_dict(checkpoint.load_arrays(ckpt / "optimizer.safetensors"))
        self.step = int(state["data_cursor"])
        self.tokens_seen = int(state.get("tokens_seen", 0))
        self.last_eval = state.get("last_eval", {})
        self.best = state.get("best")
        self.evals_since_best = int(state.get("evals_since_best", 0))
        self._truncate_metrics(self.step)
        return True

    def _truncate_metrics(self, step: int) -> None:
        """Drop the metrics of steps after ``step``: a crashed run logged steps past its last
        checkpoint, and the resumed run replays them; kept, they would appear twice."""
        path = self.out_dir / "metrics.jsonl"
        if self.comm.rank != 0 or not path.is_file():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue                 # a line torn by the crash
            if isinstance(record, dict) and record.get("step", 0) <= step:
                kept.append(line)
        atomic.write_text(path, "".join(k + "\n" for k in kept))

    def _log(self, record: dict) -> None:
        if self.comm.rank != 0:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    # ---------------------------------------------------------------- one step
    def train_step(self) -> dict:
        """One optimizer step on global batch ``self.step``; returns its metrics."""
        cfg = self.cfg
        lo, hi = self.comm.row_range(cfg.batch_size)
        # A rank whose rows start at lo > 0 draws its dropout masks from a stream of its own;
        # one stream for all would give every rank the same masks.
        backend.manual_seed(step_seed(cfg.seed, self.step) if lo == 0 else step_seed(cfg.seed, self.step, lo))
        batch = self.train_data.batch(self.step, cfg.batch_size, rows=slice(lo, hi))
        local_count = count_targets(batch, self.model)
        count = self.comm.sum_int(local_count)
        micro = cfg.micro_batch_size or (hi - lo)
        losses = []                           # each micro-batch's summed loss, kept on the device
        self.model.train()
        for start in range(0, hi - lo, micro):
            part = _rows(batch, start, start + micro)     # on the host: the model moves what it needs
            if count_targets(part, self.model) == 0:
                continue
            loss = self.model.loss(part, reduction="sum")
            losses.append(loss.data.astype("float64"))
            (loss * (1.0 / max(count, 1))).backward()
        self.comm.allreduce_gradients(self.model)
        grad_norm = optim.clip_grad_norm(self.model, cfg.grad_clip)
        # The step's one transfer to the host: the loss and the gradient norm together (and the
        # verdicts of the checks of the batch made on the device, which raise here if one failed).
        local_loss, grad_norm = self._to_host(losses, grad_norm)
        loss_sum = self.comm.sum_float(local_loss)
        mean_loss = loss_sum / max(count, 1)
        if not math.isfinite(mean_loss):
            self.optimizer.zero_grad()
            raise NonFiniteLoss(f"loss became {mean_loss} at step {self.step}; stopped without saving "
                                f"it, the last good checkpoint in {self.out_dir} is kept (lower the "
                                "learning rate or check the data)")
        lr = self.schedule(self.step)
        self.optimizer.lr = lr
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.step += 1
        tokens = cfg.batch_size * int(batch["input_ids"].shape[1])      # the whole global batch
        self.tokens_seen += tokens
        return {"step": self.step, "loss": mean_loss, "lr": lr, "grad_norm": grad_norm,
                "tokens": tokens, "targets": count}

    @staticmethod
    def _to_host(losses: list, grad_norm) -> tuple[float, float]:
        """(sum of the micro-batch losses, the gradient norm) as floats, in one transfer."""
        if not losses:
            return 0.0, float(backend.to_numpy(grad_norm))
        xp = backend.xp(losses[0])
        both = backend.to_numpy(xp.stack([xp.stack(losses).sum(), xp.asarray(grad_norm, dtype="float64")]))
        return float(both[0]), float(both[1])

    # ---------------------------------------------------------------- the run
    def fit(self, progress=None, until: int | None = None, stop=None) -> dict:
        """Train from the current step to ``config.steps`` (or stop, saved, at step ``until``,
        to be resumed later: the schedule still runs to ``config.steps``); returns the final
        metrics.

        ``stop`` (a ``jobs.StopSignals``, or anything with ``requested``, ``received`` and
        ``request``) is read before every step: once raised, on any rank, the run saves the
        last completed step (unless it just did) and raises ``jobs.Stopped``.
        """
        cfg = self.cfg
        self.model.to(cfg.device)
        last_saved = self.step
        end = cfg.steps if until is None else min(until, cfg.steps)
        self.stopped_early = self._patience_spent()        # a run that stopped early stays stopped
        if self.stopped_early:
            end = self.step
        while self.step < end:
            if self._stop_agreed(stop):
                if self.step != last_saved:
                    self._save_if_rank0()
                raise jobs.Stopped(f"stopped by {stop.name} after step {self.step} of {cfg.steps}; "
                                   f"{self._saved_where()}", stop.exit_status)
            t0 = time.perf_counter()
            m = self.train_step()
            m["tokens_per_s"] = m["tokens"] / max(time.perf_counter() - t0, 1e-9)
            self._log({k: m[k] for k in ("step", "loss", "lr", "grad_norm", "tokens_per_s")})
            if (cfg.eval_every and self.step % cfg.eval_every == 0) or self.step == cfg.steps:
                self.last_eval = {"step": self.step, **evaluate(
                    self.model, self.val_data, cfg.eval_batches, cfg.batch_size, cfg.device)}
                self._log(self.last_eval)
                m.update(self.last_eval)
                self.stopped_early = self._select(self.last_eval) and self.step < cfg.steps
            if progress is not None:
                progress(m)
            if self.stopped_early:
                end = self.step                             # saved below, as at the end of a run
            if (cfg.save_every and self.step % cfg.save_every == 0) or self.step == end:
                self._save_if_rank0()
                last_saved = self.step
        return dict(self.last_eval, step=self.step, tokens_seen=self.tokens_seen, stopped_early=self.stopped_early,
                    best=self.best)

    # ---------------------------------------------------------------- model selection
    def _select(self, metrics: dict) -> bool:
        """Compare an evaluation with the best so far: a strictly lower (finite) validation loss
        is the new best (saved to ``checkpoints/best`` with ``keep_best``); anything else counts
        one more evaluation without improvement. True when ``early_stop`` says: stop now."""
        loss = metrics["val_loss"]
        if math.isfinite(loss) and (self.best is None or loss < self.best["val_loss"]):
            self.best = {"step": self.step, "val_loss": loss}
            self.evals_since_best = 0
            if self.cfg.keep_best and self.comm.rank == 0:
                self.save_best()
        else:
            self.evals_since_best += 1
        return self._patience_spent()

    def _patience_spent(self) -> bool:
        return self.cfg.early_stop > 0 and self.evals_since_best >= self.cfg.early_stop

    def save_best(self) -> Path:
        """Write the model as it is now to ``checkpoints/best``, described as the best checkpoint.

        The weights, config, tokenizer and card only: the best checkpoint is for using the
        model, and the run resumes from ``latest``. Every rank holds the same weights, so rank 0
        writes it alone, without the (possibly sharded) optimizer state."""
        from minitransformer.model_card import model_card

        card = model_card(self.model, self.cfg, step=self.step, tokens=self.tokens_seen,
                          metrics=self.last_eval, info=self.card_info, which="best", best=self.best)
        return checkpoint.save_best(self.out_dir, self.step, self.model, self._state(), self.tokenizer, card)

    def _stop_agreed(self, stop) -> bool:
        """Whether to stop before the next step: the same answer on every rank, since the
        launcher ends the whole job as soon as one rank exits. A rank that received no
        signal itself takes the one another rank received (for its exit status)."""
        if stop is None:
            return False
        received = self.comm.max_int(int(stop.received or 0), dist.STOP)
        if received and not stop.requested:
            stop.request(received)
        return bool(received)

    def _saved_where(self) -> str:
        if self.step == 0 or not (self.out_dir / "latest").is_file():
            return "nothing was saved (no step completed)"
        kept = (self.out_dir / "latest").read_text().strip()
        return f"saved: {self.out_dir / 'latest'} -> {kept}"

    def _save_if_rank0(self):
        """Save the checkpoint of this step (rank 0 writes). Every rank waits for the end of
        the save, and learns whether it worked: a failed save (a full disk) stops them all."""
        self.comm.gather_optimizer_state(self.optimizer)   # a sharded state comes together on rank 0
        error = None
        if self.comm.rank == 0:
            try:
                self.save()
            except checkpoint.SaveError as e:
                error = e
        if self.comm.sum_int(int(error is not None), dist.SAVED):
            raise error or checkpoint.SaveError(f"rank 0 could not save the checkpoint of step {self.step} "
                                                "(its message says why); the previous checkpoint is kept")
