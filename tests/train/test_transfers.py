"""A training step stays on the device: one device-to-host transfer per optimizer step.

On a GPU every transfer to the host (``float(x)``, ``loss.item()``, ``int(valid.sum())``, a
target check's ``bool(bad.any())``) waits for all queued work: one per micro-batch or per
parameter leaves the GPU idle between them. The step is designed to make exactly one: the
logged loss and the gradient norm come back together, and every check of the batch that
ran on the device rides along (``backend.check_later``). The strict device counts transfers
as CuPy would make them (``minitransformer.testing.strict``), so these counts hold on a GPU.
"""
import dataclasses

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import backend, generate, models, objectives
from minitransformer.testing import strict
from minitransformer.train import TrainConfig, Trainer

VOCAB = 8192
EOS, PAD, MASK, CLS, SEP = 0, 1, 2, 3, 4
TOKENS = np.random.default_rng(0).integers(5, VOCAB, 4_000)


def _objective(family: str):
    if family == "gpt":
        return objectives.CLMObjective(TOKENS, 32, eos_id=EOS, seed=0)
    if family == "bert":
        return objectives.MLMObjective(TOKENS, 32, vocab_size=VOCAB, mask_id=MASK, cls_id=CLS, sep_id=SEP,
                                       pad_id=PAD, special_ids=(EOS,), seed=0)
    return objectives.SpanCorruptionObjective(TOKENS, 32, vocab_size=VOCAB, eos_id=EOS, pad_id=PAD, seed=0,
                                              special_ids=(EOS, PAD, MASK, CLS, SEP))


def _trainer(family: str, out, device="strict", layers=None, **overrides) -> Trainer:
    """A tiny-preset model of ``family`` (with ``layers`` blocks, if given) training on ``device``:
    4 sequences in 2 micro-batches."""
    mt.manual_seed(0)
    config = models.preset(f"{family}-tiny")
    if layers:
        config = dataclasses.replace(config, n_layer=layers)
    model = models.build(config)
    cfg = TrainConfig(objective=models.preset(f"{family}-tiny").family, steps=4, batch_size=4,
                      micro_batch_size=2, warmup=1, eval_every=0, save_every=0, device=device)
    data = _objective(family)
    return Trainer(model, data, data, dataclasses.replace(cfg, **overrides), out)


@pytest.mark.parametrize("family", ["gpt", "bert", "t5"])
def test_a_training_step_makes_one_transfer(tmp_path, family):
    t = _trainer(family, tmp_path)
    with strict.count_transfers() as transfers:
        metrics = t.train_step()
    assert transfers.count == 1, f"{family} step: {transfers.count} transfers:\n{transfers.report()}"
    assert isinstance(metrics["loss"], float) and isinstance(metrics["grad_norm"], float)
    assert np.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0


def test_the_strict_step_logs_what_the_cpu_step_logs(tmp_path):
    """Keeping the sums on the device changes where they are added, not what they are."""
    steps = {device: _trainer("gpt", tmp_path / device, device=device, layers=1).train_step()
             for device in ("cpu", "strict")}
    assert steps["strict"]["loss"] == pytest.approx(steps["cpu"]["loss"], rel=1e-6)
    assert steps["strict"]["grad_norm"] == pytest.approx(steps["cpu"]["grad_norm"], rel=1e-6)


def test_clipping_makes_no_transfer():
    rng = np.random.default_rng(0)
    params = [mt.tensor(strict.to_strict(rng.standard_normal(s)), requires_grad=True, device="strict")
              for s in ((3, 4), (4,), (5,))]
    for p in params:
        p.grad = strict.to_strict(rng.standard_normal(p.shape))
    host = [backend.to_numpy(p.grad) for p in params]
    with strict.count_transfers() as transfers:
        norm = mt.optim.clip_grad_norm(params, 1.0)
        mt.optim.AdamW(params, lr=1e-3).step()
    assert transfers.count == 0, transfers.report()
    expected = np.sqrt(sum((g ** 2).sum() for g in host))
    assert float(norm) == pytest.approx(expected)
    assert float(mt.optim.clip_grad_norm(params, 0.0)) == pytest.approx(1.0, rel=1e-5)   # clipped to 1


def test_bad_labels_still_stop_the_step_with_a_clear_error(tmp_path):
    """The check of the labels ran on the device; its verdict comes back with the loss, and
    the step stops before the optimizer moves a weight."""
    t = _trainer("gpt", tmp_path, layers=1)
    real = t.train_data.batch

    def bad_batch(step, size, rows=None):
        batch = real(step, size, rows=rows)
        batch["labels"] = batch["labels"].copy()
        batch["labels"][0, 3] = VOCAB + 7
        return batch
    t.train_data.batch = bad_batch
    before = {k: backend.to_numpy(v).copy() for k, v in t.model.state_dict().items()}
    with pytest.raises(ValueError, match=rf"target ids \[{VOCAB + 7}\] are outside \[0, {VOCAB}\)"):
        t.train_step()
    after = t.model.state_dict()
    assert all(np.array_equal(before[k], backend.to_numpy(after[k])) for k in before)


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("temperature,top_k,top_p", [(0.0, 0, 1.0), (0.8, 40, 0.9)])
def test_generation_brings_one_token_row_to_the_host_per_step(use_cache, temperature, top_k, top_p):
    mt.manual_seed(0)
    model = models.build(dataclasses.replace(models.preset("gpt-tiny"), n_layer=1))
    prompts = [[5, 6, 7], [8, 9]]
    expected = generate.generate(model, prompts, max_new_tokens=4, temperature=temperature, top_k=top_k,
                                 top_p=top_p, seed=0, use_cache=use_cache)
    model.to("strict")
    with strict.count_transfers() as transfers:
        out = generate.generate(model, prompts, max_new_tokens=4, temperature=temperature, top_k=top_k,
                                top_p=top_p, seed=0, use_cache=use_cache)
    assert transfers.count == 4, transfers.report()
    assert out == expected


def test_seq2seq_decoding_brings_one_token_row_to_the_host_per_step():
    mt.manual_seed(0)
    model = models.build(dataclasses.replace(models.preset("t5-tiny"), num_layers=1, num_decoder_layers=1))
    inputs = [[5, 6, 7], [8, 9]]
    expected = generate.seq2seq_greedy(model, inputs, max_new_tokens=4, eos_id=VOCAB - 1)
    model.to("strict")
    with strict.count_transfers() as transfers:
        out = generate.seq2seq_greedy(model, inputs, max_new_tokens=4, eos_id=VOCAB - 1)
    assert transfers.count == len(out[0]) == 4, transfers.report()
    assert out == expected


# ---------------------------------------------------------------------------------------
# The CUDA kernels' wrappers: the strict device runs the reference ops, never a CUDA
# wrapper (kernels.dispatch), so each wrapper's host-side code runs here on strict arrays,
# its kernel launches replaced by launches that do nothing, to count what it transfers.
# ---------------------------------------------------------------------------------------

def _wrapper_args(name: str):
    """Arguments for kernel ``name`` as the ops call it (float32, small shapes), on the strict device."""
    rng = np.random.default_rng(0)

    def f(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    x, q = f(4, 8), f(1, 2, 4, 8)
    targets = np.array([1, -100, 7, 0, 3, 2])
    args = {
        "softmax_forward": (x, np.ones((4, 8), bool)),
        "softmax_backward": (x, f(4, 8)),
        "cross_entropy_forward": (f(6, 8), targets, -100, 0.1),
        "cross_entropy_backward": (f(6, 8), targets, f(6), f(6), -100, 0.1),
        "attention_forward": (q, f(1, 2, 4, 8), f(1, 2, 4, 8), None, None, None, True),
        "attention_backward": (q, f(1, 2, 4, 8), f(1, 2, 4, 8), f(1, 2, 4, 8), f(1, 2, 4), f(1, 2, 4, 8),
                               None, None, None, True),
        "gelu_forward": (x, "tanh"),
        "gelu_backward": (x, f(4, 8), "tanh"),
        "layer_norm_forward": (x, f(8), f(8), 1e-5),
        "layer_norm_backward": (x, f(8), f(4), f(4), f(4, 8)),
        "rms_norm_forward": (x, f(8), 1e-6),
        "rms_norm_backward": (x, f(8), f(4), f(4, 8)),
        "embedding_backward": (np.array([[1, 2, 3], [0, 9, 2]]), f(2, 3, 8), 10),
        "adamw_update": (f(4, 8), f(4, 8), f(4, 8), np.abs(f(4, 8)), 1e-3, 0.9, 0.98, 1e-8, 0.1, 0.1, 0.02),
    }
    if name not in args:
        pytest.fail(f"kernel {name!r} has a CUDA wrapper but no arguments here; add them to _wrapper_args")
    return [strict.to_strict(a) for a in args[name]]


class _NoLaunch:
    """Stands for a configured kernel launch, ``kernel[grid, block, stream]``: running it does nothing."""

    def __init__(self, *_config, **_options):
        pass

    def __call__(self, *args):
        return None


def _cuda_kernels():
    from minitransformer.kernels import dispatch

    return [name for name, (_, cuda_module) in sorted(dispatch._TABLE.items()) if cuda_module]


@pytest.mark.parametrize("name", _cuda_kernels())
def test_the_cuda_wrappers_make_no_transfer(name, monkeypatch):
    """Each wrapper's host-side code, kernels built (Numba compiles lazily) but never launched."""
    import importlib

    from numba.cuda import dispatcher

    from minitransformer.kernels import dispatch

    module = importlib.import_module(f"minitransformer.kernels.{dispatch._TABLE[name][1]}")
    monkeypatch.setattr(dispatcher.CUDADispatcher, "configure", lambda self, *a, **k: _NoLaunch(*a, **k))
    args = _wrapper_args(name)
    with strict.count_transfers() as transfers:
        getattr(module, name)(*args)
    assert transfers.count == 0, f"{name}: {transfers.count} transfers:\n{transfers.report()}"
    backend.to_numpy(args[0])                      # read back the checks it left waiting
