"""One fine-tuning run from start to report, and fine-tuned models on disk.

``finetune(task, model_dir, train, evaluation, config)``:

1. load the pre-trained checkpoint and its tokenizer; check that its family suits the task
   (classify and tag need an encoder, BERT; seq2seq an encoder-decoder, T5);
2. read the label set from the training examples and refuse evaluation labels outside it;
3. put the task's head on the pre-trained body (or, with ``from_scratch``, build the same
   architecture with random weights: the control that shows what pre-training bought);
4. train (``loop.fit``), predict the evaluation examples, score them and the baselines;
5. return the report (and, with ``out_dir``, save the model, tokenizer and report).

A fine-tuned folder holds ``model.safetensors``, ``config.json`` (the body's config),
``tokenizer.json``, ``finetune.json`` (task, labels, lengths) and ``report.json``;
``load_finetuned`` rebuilds the model and its task from it. While the run trains, its
checkpoints live in the folder's ``training/`` (``loop.RunCheckpoints``), from which
``resume=True`` continues it bit for bit; the finished model takes the folder's place, and
they go with the rest of the old folder.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from collections import Counter
from pathlib import Path

from minitransformer import atomic, backend, checkpoint, families, jobs
from minitransformer.finetune import tasks as tasks_module
from minitransformer.finetune.classify import Classification
from minitransformer.finetune.loop import ExampleBatches, FinetuneConfig, RunCheckpoints, data_fingerprint, fit
from minitransformer.finetune.seq2seq import Seq2Seq
from minitransformer.finetune.tag import Tagging

HANDLERS = {"classify": Classification, "tag": Tagging, "seq2seq": Seq2Seq}
INFO_FILE = checkpoint.FINETUNE_FILE
REPORT_FILE = "report.json"
TRAINING_DIR = "training"          # a run's checkpoints, inside the fine-tuned folder until it is done


def load_base(model_dir, task: str, device: str = "cpu"):
    """(pre-trained model, tokenizer) from a checkpoint or run folder, checked for ``task``."""
    tasks_module.check_task(task)
    if is_finetuned(model_dir):
        raise ValueError(f"{model_dir} is already a fine-tuned model; fine-tune from the pre-trained "
                         "checkpoint it came from, or score it with 'minitransformer evaluate'")
    model = checkpoint.load_model(model_dir, device=device)
    family, want = model.config.family, HANDLERS[task].family
    if family != want:
        raise ValueError(f"task {task!r} fine-tunes a {want.upper()} model, but {model_dir} holds a "
                         f"{family.upper()} model; pre-train one with 'minitransformer pretrain "
                         f"--objective {families.get(want).objective}' (zero-shot use of a GPT model is "
                         "'minitransformer evaluate')")
    tokenizer = checkpoint.load_tokenizer(model_dir)
    if tokenizer is None:
        raise FileNotFoundError(f"{model_dir} has no tokenizer.json; fine-tuning needs the tokenizer "
                                "the model was pre-trained with")
    return model, tokenizer


def make_handler(task: str, tokenizer, train: list[dict], config: FinetuneConfig, max_positions):
    """The task object (encoding, head, prediction, scoring) for ``train``'s labels."""
    length = config.max_length if max_positions is None else min(config.max_length, max_positions)
    if task == "classify":
        return Classification(tokenizer, tasks_module.label_set(train, task), length)
    if task == "tag":
        return Tagging(tokenizer, tasks_module.label_set(train, task), length)
    handler = Seq2Seq(tokenizer, length, num_beams=config.num_beams)
    handler.fit_lengths(train)
    return handler


def evaluate_handler(handler, model, examples: list[dict], train: list[dict] | None,
                     batch_size: int = 64) -> dict:
    """Predict and score ``examples``; with ``train``, also the baselines and the margin."""
    t0 = time.perf_counter()
    predictions = handler.predict(model, examples, batch_size)
    report = {"metrics": handler.score(examples, predictions), "primary_metric": handler.primary,
              "eval_examples": len(examples), "eval_seconds": round(time.perf_counter() - t0, 2)}
    if train is not None:
        baselines = handler.baselines(train, examples)
        best = max(b[handler.primary] for b in baselines.values())
        report["baselines"] = baselines
        report["margin_over_best_baseline"] = report["metrics"][handler.primary] - best
    report["samples"] = [dict(_sample_input(ex, handler.task), prediction=p)
                         for ex, p in list(zip(examples, predictions))[:5]]
    return report


def _sample_input(example: dict, task: str) -> dict:
    keep = {"classify": ("text", "label"), "tag": ("tokens", "tags"), "seq2seq": ("input", "target")}[task]
    return {k: example[k] for k in keep if k in example}


def finetune(task: str, model_dir, train: list[dict], evaluation: list[dict],
             config: FinetuneConfig | None = None, out_dir=None, from_scratch: bool = False,
             progress=None, data_description: str = "", save_every: int = 0, keep_checkpoints: int = 2,
             resume: bool = False, stop=None) -> dict:
    """Fine-tune the checkpoint in ``model_dir`` on ``train``; return the report on ``evaluation``.

    ``config``: None for the task's defaults (``FinetuneConfig.for_task``).
    ``from_scratch``: same architecture and tokenizer, random weights (the control run).
    With ``out_dir``: a checkpoint every ``save_every`` steps (0: only when stopped) in
    ``out_dir/training``, the newest ``keep_checkpoints`` kept; ``resume`` continues from
    the latest. ``stop`` (a ``jobs.StopSignals``): see ``loop.fit``.
    """
    t0 = time.perf_counter()
    tasks_module.check_task(task)
    config = FinetuneConfig.for_task(task) if config is None else config
    if out_dir is not None:
        check_run_folder(out_dir, resume)
    elif resume:
        raise ValueError("resume=True needs the out_dir of the run to continue")
    base, tokenizer = load_base(model_dir, task, config.device)
    train = _checked(train, task, "the training data")
    handler = make_handler(task, tokenizer, train, config, base.config.max_positions)
    evaluation = _checked(evaluation, task, "the evaluation data", handler.labels)

    backend.manual_seed(config.seed)                   # the new head's (or the whole model's) init
    model = handler.build(base.config if from_scratch else base).to(config.device)
    data = ExampleBatches([handler.encode(ex) for ex in train], handler.collate, config.seed)
    truncated_train = handler.truncated
    checkpoints = None
    if out_dir is not None:
        checkpoints = RunCheckpoints(Path(out_dir) / TRAINING_DIR, config, data_fingerprint(train),
                                     save_every, keep_checkpoints, resume)
    losses = fit(model, data, config, handler.family, progress, checkpoints, stop)
    handler.truncated = 0
    report = {"task": task, "model": str(model_dir), "init": "random" if from_scratch else "pre-trained",
              "family": handler.family, "data": data_description, "train_examples": len(train),
              **({"labels": handler.labels} if handler.labels is not None else {}),
              "config": dataclasses.asdict(config),
              "train_loss_first": _mean(losses[:10]), "train_loss_last": _mean(losses[-10:])}
    report.update(evaluate_handler(handler, model, evaluation, train, config.eval_batch_size))
    report["truncated"] = {"train": truncated_train, "eval": handler.truncated}
    warning = learned_nothing(report, train, task)
    if warning:
        report["warnings"] = [warning]
    report["seconds"] = round(time.perf_counter() - t0, 2)
    if out_dir is not None:
        save_finetuned(out_dir, model, tokenizer, handler, report)
        report["saved_to"] = str(out_dir)
    return report


def prior_loss(train: list[dict], task: str) -> float | None:
    """The loss of a model that ignores its input: the entropy of the training labels.

    A classifier that always answers the label frequencies p has cross-entropy
    H(p) = -sum_c p_c log p_c (per sentence, or per word for tags); a fine-tuning run
    whose loss ends there has learned nothing from the inputs. None for seq2seq.
    """
    if task == "seq2seq":
        return None
    labels = [ex["label"] for ex in train] if task == "classify" else [t for ex in train for t in ex["tags"]]
    counts = Counter(labels).values()
    n = sum(counts)
    return -sum(c / n * math.log(c / n) for c in counts)


def learned_nothing(report: dict, train: list[dict], task: str) -> str | None:
    """A warning if the run ended at the input-blind loss (see ``loop``: a collapsed run)."""
    prior, last = prior_loss(train, task), report["train_loss_last"]
    if prior is None or not math.isfinite(last) or last < 0.95 * prior:
        return None
    return (f"the training loss ended at {last:.3f}, no lower than always answering the label "
            f"frequencies ({prior:.3f}): the model learned nothing from its inputs; try a lower "
            f"learning rate (this run: {report['config']['lr']:g}) or more steps")


def _checked(examples, task: str, source: str, labels=None) -> list[dict]:
    """The examples checked field by field (and, given ``labels``, label by label)."""
    if not examples:
        raise ValueError(f"{source} holds no examples")
    checked = [tasks_module.check_example(ex, task, tasks_module.where(examples, i, source))
               for i, ex in enumerate(examples)]
    if isinstance(examples, tasks_module.Examples):
        checked = tasks_module.Examples(checked, examples.source, examples.lines)
    if labels is not None:
        tasks_module.check_labels(checked, labels, task, source)
    return checked


def _mean(values) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")


# =======================================================================================
# Fine-tuned models on disk
# =======================================================================================

def check_out_dir(out_dir) -> Path:
    """``out_dir`` if a fine-tuned model may be saved there: new, empty (but for a run's lock
    and checkpoints), or a fine-tuned folder (which is replaced). Checked before training,
    so a mistake costs no time."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; give a folder for the fine-tuned model")
    ours = {jobs.LOCK_FILE, TRAINING_DIR}
    if out.is_dir() and any(p.name not in ours for p in out.iterdir()) and not is_finetuned(out):
        raise FileExistsError(f"{out} exists and is not a fine-tuned model folder (it has no {INFO_FILE}); "
                              "choose a new or empty folder, so that nothing in it is overwritten")
    return out


def check_run_folder(out_dir, resume: bool) -> Path:
    """``out_dir`` if a fine-tuning run may start there (``check_out_dir``) or, with
    ``resume``, continue there; a stopped run is not started over by mistake."""
    out = check_out_dir(out_dir)
    stopped = (out / TRAINING_DIR / "latest").is_file()
    if resume and not stopped:
        raise FileNotFoundError(f"--resume: {out} holds no stopped fine-tuning run to continue (no "
                                f"{TRAINING_DIR}/latest); start it without --resume")
    if stopped and not resume:
        raise FileExistsError(f"{out} holds a stopped fine-tuning run; pass --resume to continue it, or "
                              "choose another --out")
    return out


def save_finetuned(out_dir, model, tokenizer, handler, report: dict | None = None) -> Path:
    """Write the fine-tuned model folder, all or nothing.

    Everything is written in a sibling ``.tmp`` folder first, which then takes the place of
    ``out_dir`` (``minitransformer.atomic``); a save that fails part-way leaves an earlier
    fine-tuned model there untouched, and raises ``checkpoint.SaveError`` saying so. The
    run's lock file goes over to the new folder (the same file: the lock stays held).
    """
    out = check_out_dir(out_dir)
    try:
        with atomic.atomic_folder(out, carry=(jobs.LOCK_FILE,)) as tmp:
            checkpoint.save_arrays(tmp / "model.safetensors", model.state_dict(), {"format": "pt"})
            (tmp / "config.json").write_text(json.dumps(checkpoint.config_to_dict(model.config), indent=2))
            tokenizer.save(tmp / "tokenizer.json")
            info = {"task": handler.task, "head": type(model).__name__, **handler.info()}
            (tmp / INFO_FILE).write_text(json.dumps(info, indent=2))
            if report is not None:
                write_report(report, tmp / REPORT_FILE)
    except OSError as e:
        kept = "its training checkpoints are kept" if (out / TRAINING_DIR / "latest").is_file() else \
            "it is as it was"
        raise checkpoint.SaveError(f"could not save the fine-tuned model in {out}: {e.strerror or e} "
                                   f"({e.filename or out}); {kept}") from e
    return out


def is_finetuned(path) -> bool:
    return (Path(path) / INFO_FILE).is_file()


def load_finetuned(path, device: str = "cpu", num_beams: int = 1):
    """(task handler, model) from a folder written by ``save_finetuned``."""
    path = Path(path)
    if not is_finetuned(path):
        raise FileNotFoundError(f"{path} has no {INFO_FILE}: not a fine-tuned model folder (write one "
                                "with 'minitransformer finetune --out DIR')")
    info = json.loads((path / INFO_FILE).read_text())
    config = checkpoint.config_from_dict(json.loads((path / "config.json").read_text()))
    from minitransformer.data import BPETokenizer

    tokenizer = BPETokenizer.load(path / "tokenizer.json")
    task = info["task"]
    if task == "classify":
        handler = Classification(tokenizer, info["labels"], info["max_length"])
    elif task == "tag":
        handler = Tagging(tokenizer, info["labels"], info["max_length"])
    else:
        handler = Seq2Seq(tokenizer, info["max_length"], info["max_target_length"], num_beams)
    model = handler.build(config)
    model.load_state_dict(checkpoint.load_arrays(path / "model.safetensors"))
    return handler, model.to(device)


def evaluate_finetuned(path, examples: list[dict], device: str = "cpu", batch_size: int = 64,
                       num_beams: int = 1) -> dict:
    """Score a fine-tuned model on ``examples`` (labels outside its label set are refused)."""
    handler, model = load_finetuned(path, device, num_beams)
    examples = _checked(examples, handler.task, "the evaluation data", handler.labels)
    report = {"task": handler.task, "model": str(path)}
    report.update(evaluate_handler(handler, model, examples, None, batch_size))
    return report


def write_report(report: dict, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    return path
