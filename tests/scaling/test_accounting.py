"""Parameter, FLOP and memory accounting against what the models actually hold and compute."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer import functional, kernels, models, scaling
from minitransformer.autograd import hooks, ops
from minitransformer.nn import attention as nn_attention
from minitransformer.nn import layers as nn_layers
from minitransformer.nn.module import Parameter

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(models.PRESETS))
def test_parameter_formula_equals_the_built_model_for_every_preset(name, monkeypatch):
    # Only the shapes matter here: uninitialised weights build the 124M-parameter models
    # without drawing (or touching) a hundred million random numbers.
    def empty(shape, std):
        return Parameter(np.empty(shape, dtype=np.float32))

    monkeypatch.setattr(nn_layers, "normal", empty)
    monkeypatch.setattr(nn_attention, "normal", empty)
    cfg = models.preset(name)
    counts = scaling.count_parameters(cfg)
    assert counts["total"] == models.build(cfg).num_parameters()
    assert counts["embedding"] + counts["non_embedding"] == counts["total"]
    assert counts["non_embedding"] > 0 and counts["embedding"] > 0


def test_gpt2_non_embedding_count_is_kaplans():
    # Kaplan et al. report GPT-2 small as 85M non-embedding parameters.
    assert scaling.count_parameters(models.preset("gpt2"))["non_embedding"] == 85_056_000


configs = st.one_of(
    st.builds(lambda d, h, L, v, inner: models.GPTConfig(vocab_size=v, n_positions=17, n_embd=d * h,
                                                          n_layer=L, n_head=h, n_inner=inner),
              st.integers(2, 8), st.integers(1, 3), st.integers(1, 3), st.integers(5, 50),
              st.none() | st.integers(3, 40)),
    st.builds(lambda d, h, L, v, f, act: models.BERTConfig(
        vocab_size=v, hidden_size=d * h, num_hidden_layers=L, num_attention_heads=h,
        intermediate_size=f, max_position_embeddings=19, type_vocab_size=3, hidden_act=act),
              st.integers(2, 8), st.integers(1, 3), st.integers(1, 3), st.integers(5, 50),
              st.integers(3, 40), st.sampled_from(["gelu", "relu"])),
    st.builds(lambda d, kv, h, f, L, Ld, ff, tie: models.T5Config(
        vocab_size=37, d_model=d, d_kv=kv, num_heads=h, d_ff=f, num_layers=L,
        num_decoder_layers=Ld, feed_forward_proj=ff, tie_word_embeddings=tie,
        relative_attention_num_buckets=8),
              st.integers(4, 24), st.integers(2, 8), st.integers(1, 3), st.integers(3, 40),
              st.integers(1, 3), st.none() | st.integers(1, 3), st.sampled_from(["relu", "gated-gelu"]),
              st.booleans()),
)


@settings(max_examples=30, deadline=None)
@given(configs)
def test_parameter_formula_equals_the_built_model_for_any_config(cfg):
    assert scaling.count_parameters(cfg)["total"] == models.build(cfg).num_parameters()


def test_accounting_refuses_what_is_not_a_config():
    with pytest.raises(TypeError, match="GPTConfig, BERTConfig or T5Config"):
        scaling.count_parameters("gpt2")
    with pytest.raises(ValueError, match="seq_len must be a positive integer"):
        scaling.training_flops(models.preset("gpt-tiny"), 2, 0)


# ---------------------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------------------

def _batch(family, cfg, rng, b=4, t=64):
    v = cfg.vocab_size
    ids = rng.integers(5, v, (b, t))
    if family == "gpt":
        return {"input_ids": ids, "labels": ids}, {}
    if family == "bert":
        labels = np.where(rng.random((b, t)) < 0.15, ids, -100)
        return {"input_ids": ids, "labels": labels}, {"mlm_fraction": float((labels != -100).mean())}
    dec = rng.integers(5, v, (b, t // 2))
    return ({"input_ids": ids, "decoder_input_ids": dec, "labels": dec}, {"decoder_len": t // 2})


SMALL = {
    "gpt": models.GPTConfig(vocab_size=500, n_positions=64, n_embd=64, n_layer=2, n_head=4),
    "bert": models.BERTConfig(vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=100, max_position_embeddings=64),
    "t5": models.T5Config(vocab_size=500, d_model=64, d_kv=12, d_ff=100, num_layers=2, num_decoder_layers=3,
                          num_heads=4, feed_forward_proj="gated-gelu"),
}


@pytest.mark.parametrize("mode", ["reference", "auto"])
def test_flop_formula_matches_the_products_executed_in_a_gpt_step(mode):
    cfg = SMALL["gpt"]
    batch, _ = _batch("gpt", cfg, np.random.default_rng(0))
    model = models.build(cfg)
    with kernels.using(mode), scaling.count_matmul_flops() as count:
        model.loss(batch).backward()
    formula = scaling.training_flops(cfg, 4, 64)
    # The formula's pieces: 6 x (4 d^2 + 2 d f per layer + the tied head V d) + 12 L d T.
    n_mm = 2 * (4 * 64 * 64 + 2 * 64 * 256) + 500 * 64
    assert formula == 4 * 64 * (6 * n_mm + 12 * 2 * 64 * 64)
    assert abs(count.total - formula) / formula < 0.05
    # Exactly: the head runs on every position (the loss ignores the last one's target).
    assert formula == count.total
    # Backward runs twice the forward's products; the blocked head runs its gradients'
    # two products (2 of its 3) in forward, while its logits are at hand.
    early = 2 * count.by_op["LinearCrossEntropy.forward"] // 3
    assert count.backward + early == 2 * (count.forward - early)


@pytest.mark.parametrize("family", ["bert", "t5"])
def test_flop_formula_is_exact_for_bert_and_t5(family):
    cfg = SMALL[family]
    batch, shape = _batch(family, cfg, np.random.default_rng(1))
    model = models.build(cfg)
    with kernels.using("reference"), scaling.count_matmul_flops() as count:
        model.loss(batch).backward()
    assert count.total == pytest.approx(scaling.training_flops(cfg, 4, 64, **shape), rel=1e-12)


@pytest.mark.parametrize("family", ["gpt", "bert", "t5"])
def test_logit_rows_and_step_flops_are_what_a_real_step_runs(family):
    """One account for every user: the rows the output layer runs on (which the memory
    formulas charge for the logits and their gradient) and the FLOPs of the step, against
    what the engine's observer sees in a real forward and backward. One logit row more or
    less is V d FLOPs and V numbers: far outside the tolerance, which only absorbs float
    rounding of BERT's fractional mlm_fraction x B x T."""
    cfg = SMALL[family]
    batch, shape = _batch(family, cfg, np.random.default_rng(2))
    b, t = batch["input_ids"].shape
    model = models.build(cfg)
    logits = []

    def observer(fn, phase, ctx, arrays, run):
        out = run()
        if phase == "forward" and fn is functional.LinearCrossEntropy:
            logits.append(ctx.h.shape[0])                          # the blocked head's rows
        elif phase == "forward" and fn.flops(ctx, phase, *arrays) and out.shape[-1] == cfg.vocab_size:
            logits.append(out.size // cfg.vocab_size)              # the output layer's product
        return out

    with kernels.using("reference"), mt.autograd.observe(observer), scaling.count_matmul_flops() as count:
        model.loss(batch).backward()
    assert len(logits) == 1
    assert logits[0] == pytest.approx(scaling.logit_rows(cfg, b, t, **shape), rel=1e-12)
    flops = scaling.step_flops(cfg, b, t, **shape)
    assert count.total == pytest.approx(flops["total"], rel=1e-12)
    assert count.by_op.get("FlashAttention.forward", 0) + count.by_op.get("MatMul.forward", 0) > 0
    if family == "gpt":     # its blocked head holds the logits, their gradient written over them
        workspace = scaling.backward_workspace(cfg, b, t, kernels="auto", **shape)
        assert workspace == logits[0] * cfg.vocab_size * 4


def test_flop_counter_restores_the_ops_even_after_an_error():
    before = (ops.MatMul.__dict__["forward"], functional.Linear.__dict__["backward"],
              functional.FlashAttention.__dict__["forward"])
    with pytest.raises(RuntimeError):
        with scaling.count_matmul_flops():
            raise RuntimeError("boom")
    after = (ops.MatMul.__dict__["forward"], functional.Linear.__dict__["backward"],
             functional.FlashAttention.__dict__["forward"])
    assert before == after
    assert not hooks.observing()                    # the counter's observer is gone
    with scaling.count_matmul_flops() as count:
        pass
    assert count.total == 0


def test_chinchilla_tokens_and_compute_optimal_split():
    assert scaling.chinchilla_tokens(70e9) == 1_400_000_000_000
    opt = scaling.chinchilla_optimal(6 * 70e9 * 1.4e12)
    assert opt["params"] == pytest.approx(70e9) and opt["tokens"] == pytest.approx(1.4e12)
    with pytest.raises(ValueError, match="positive"):
        scaling.chinchilla_tokens(0)


def test_summary_reports_counts_flops_memory_and_tokens():
    lines = scaling.summary(models.preset("gpt2"), batch_size=8, seq_len=1024)
    text = "\n".join(lines)
    assert "124,439,808" in text and "85,056,000 non-embedding" in text
    assert "FLOP" in text and "GiB" in text and "Chinchilla" in text
    a = scaling.account(models.preset("gpt2"), 8, 1024)
    assert a["memory"]["total"] == sum(v for k, v in a["memory"].items() if k != "total")
    assert a["memory"]["adam_states"] == 8 * a["parameters"]["total"]


# ---------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------

def _base(a):
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def graph_bytes(loss, params) -> int:
    """Bytes of the distinct arrays the autograd graph of ``loss`` holds, weights excluded:
    the leaf Tensors its nodes take and the arrays each op saved for backward, also inside
    a saved tuple (the blocked head's gradients, computed in forward), except one of the
    shape of a weight the op takes: that weight's gradient, which the estimate counts with
    the gradients. (A node keeps its other inputs as nodes, not arrays.)"""
    weights = {id(_base(p.data)) for p in params}
    held, seen, stack = {}, set(), [loss._node]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        leaves = [i for i in node.inputs if isinstance(i, mt.Tensor)]
        arrays = [i.data for i in leaves]
        arrays += [v for v in node.ctx.__dict__.values() if isinstance(v, np.ndarray)]
        own_weights = {i.data.shape for i in leaves if id(_base(i.data)) in weights}
        arrays += [a for v in node.ctx.__dict__.values() if isinstance(v, tuple)
                   for a in v if isinstance(a, np.ndarray) and a.shape not in own_weights]
        for a in arrays:
            b = _base(a)
            if id(b) not in weights:
                held[id(b)] = b.nbytes
        stack.extend(i for i in node.inputs if i is not None and not isinstance(i, mt.Tensor))
    return sum(held.values())


ACTIVATION_CASES = [
    ("gpt", models.GPTConfig(vocab_size=300, n_positions=48, n_embd=48, n_layer=2, n_head=3)),
    ("gpt", models.GPTConfig(vocab_size=300, n_positions=48, n_embd=48, n_layer=2, n_head=3,
                             resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)),
    ("bert", models.BERTConfig(vocab_size=300, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                               intermediate_size=100, max_position_embeddings=48)),
    ("bert", models.BERTConfig(vocab_size=300, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                               intermediate_size=100, max_position_embeddings=48, hidden_act="relu",
                               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)),
    ("t5", models.T5Config(vocab_size=300, d_model=48, d_kv=20, d_ff=100, num_layers=2, num_decoder_layers=1,
                           num_heads=3)),
    ("t5", models.T5Config(vocab_size=300, d_model=48, d_kv=20, d_ff=100, num_layers=1, num_heads=3,
                           dropout_rate=0.0, feed_forward_proj="gated-gelu", tie_word_embeddings=False)),
]


@pytest.mark.parametrize("mode", ["auto", "reference"])
@pytest.mark.parametrize("family,cfg", ACTIVATION_CASES)
def test_activation_estimate_matches_what_the_graph_holds(family, cfg, mode):
    batch, shape = _batch(family, cfg, np.random.default_rng(2), b=4, t=48)
    model = models.build(cfg)
    model.train()
    with kernels.using(mode):
        held = graph_bytes(model.loss(batch, reduction="sum"), list(model.parameters()))
    estimate = sum(scaling.activation_memory(cfg, 4, 48, kernels=mode, **shape).values())
    # The estimate leaves out arrays of a few numbers per token (row statistics, ids).
    assert 0.98 * held <= estimate <= held


RSS_SCRIPT = textwrap.dedent("""
    import gc, json
    import numpy as np
    from minitransformer import models, optim, scaling

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024

    def train_step(model, batch):
        opt = optim.AdamW(model, lr=1e-3)
        loss = model.loss(batch, reduction="sum")
        (loss * (1.0 / batch["input_ids"].size)).backward()
        optim.clip_grad_norm(model, 1.0)
        opt.step()
        opt.zero_grad()

    B, T = 16, 128
    cfg = models.GPTConfig(vocab_size=2048, n_positions=T, n_embd=128, n_layer=4, n_head=4,
                           resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (B, T))
    batch = {"input_ids": ids, "labels": ids}
    # Warm up: compile the kernels and let BLAS allocate its buffers, which are not the step's.
    train_step(models.build(cfg), batch)
    gc.collect()
    open("/proc/self/clear_refs", "w").write("5")       # reset the peak (VmHWM) to the current RSS
    before = status("VmRSS:")
    train_step(models.build(cfg), batch)
    print(json.dumps({"increase": status("VmHWM:") - before,
                      "estimate": scaling.training_memory(cfg, B, T)}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads peak RSS from /proc (Linux)")
def test_memory_estimate_matches_the_peak_rss_of_a_training_step():
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("cannot reset the peak RSS (/proc/self/clear_refs is not writable)")
    # A fixed mmap threshold makes glibc return every large freed array to the system at
    # once, so the peak counts live arrays rather than what the allocator keeps cached.
    env = dict(os.environ, PYTHONPATH=str(ROOT), MALLOC_MMAP_THRESHOLD_="65536")
    r = subprocess.run([sys.executable, "-c", RSS_SCRIPT], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    increase, estimate = out["increase"], out["estimate"]
    # Activations dominate: the comparison is not decided by the weights alone.
    assert estimate["activations"] > 5 * estimate["weights"]
    assert abs(estimate["total"] - increase) <= 0.2 * increase, (increase, estimate)
