"""Fine-tuning and zero-shot scoring on the strict test device, which refuses silent NumPy
use as CuPy does: the same runs as on the CPU, step for step, with the same predictions.

This is what ``--device cuda`` relies on (batches moved by the loop, predictions read back
to the host); CI has no GPU, and this catches a host array mixed into device arithmetic.
"""
import numpy as np
import pytest

import minitransformer.testing.strict  # noqa: F401  (registers the "strict" device)
from minitransformer import checkpoint
from minitransformer.finetune import PROMPTS, FinetuneConfig, builtin, finetune, label_scores

TASKS = [("classify", "sentiment", "bert"), ("tag", "entities", "bert"), ("seq2seq", "numbers", "t5")]


@pytest.mark.parametrize("task,name,family", TASKS, ids=[t[0] for t in TASKS])
def test_fine_tuning_on_the_strict_device_matches_the_cpu(tiny_checkpoints, task, name, family):
    train, test = builtin(name, "train", 64), builtin(name, "test", 8)
    runs = {device: finetune(task, tiny_checkpoints[family], train, test,
                             FinetuneConfig(steps=3, batch_size=4, max_length=32, device=device))
            for device in ("cpu", "strict")}
    cpu, strict = runs["cpu"], runs["strict"]
    assert strict["train_loss_last"] == pytest.approx(cpu["train_loss_last"], rel=1e-5)
    assert [s["prediction"] for s in strict["samples"]] == [s["prediction"] for s in cpu["samples"]]
    assert strict["metrics"] == cpu["metrics"]


def test_zero_shot_scores_on_the_strict_device_match_the_cpu(tiny_checkpoints):
    model = checkpoint.load_model(tiny_checkpoints["gpt"])
    tokenizer = checkpoint.load_tokenizer(tiny_checkpoints["gpt"])
    prompts = [PROMPTS["sentiment"]["template"].format(text=ex["text"]) for ex in builtin("sentiment", "test", 6)]
    words = list(PROMPTS["sentiment"]["verbalizers"].values())
    cpu = label_scores(model, tokenizer, prompts, words)
    strict = label_scores(model.to("strict"), tokenizer, prompts, words)
    np.testing.assert_allclose(strict, cpu, rtol=1e-5)



@pytest.mark.parametrize("task,name,family", TASKS, ids=[t[0] for t in TASKS])
def test_a_fine_tuning_step_makes_one_transfer(tiny_checkpoints, task, name, family):
    """Each optimizer step of fine-tuning on the strict device brings one thing to the host:
    its loss (what it logs and checks); the targets are counted on the host batch."""
    from minitransformer.finetune import loop, run
    from minitransformer.testing import strict

    cfg = FinetuneConfig(steps=2, batch_size=4, max_length=32, device="strict")
    train = builtin(name, "train", 16)
    base, tokenizer = run.load_base(tiny_checkpoints[family], task, cfg.device)
    handler = run.make_handler(task, tokenizer, train, cfg, base.config.max_positions)
    model = handler.build(base).to(cfg.device)
    data = loop.ExampleBatches([handler.encode(ex) for ex in train], handler.collate, cfg.seed)
    with strict.count_transfers() as transfers:
        losses = loop.fit(model, data, cfg, handler.family)
    assert len(losses) == 2 and np.isfinite(losses).all()
    assert transfers.count == 2, transfers.report()
