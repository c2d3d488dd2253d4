"""The benchmark harness: it runs end to end, it refuses pairs that disagree, and its
counts are right. No timing is asserted anywhere: speed is measured, never tested."""
import json

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import backend
from minitransformer import functional as F

from benchmarks import __main__ as cli
from benchmarks import harness, ops, train_steps

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


# ---------------------------------------------------------------------------------------
# The whole harness, in its tiny mode
# ---------------------------------------------------------------------------------------

def test_tiny_mode_runs_every_part_and_writes_json_and_png(tmp_path, capsys):
    out, png = tmp_path / "result.json", tmp_path / "chart.png"
    assert cli.main(["--tiny", "--only", "peaks,ops,train,profile", "--json", str(out), "--png", str(png)]) == 0
    printed = capsys.readouterr().out
    for heading in ("## Machine peaks", "## Ops", "## Training steps", "## Profile", "load average"):
        assert heading in printed
    result = json.loads(out.read_text())
    assert result["mode"] == "tiny" and result["environment"]["device"] == "cpu"
    assert result["peaks"]["matmul_peak"]["flop_per_s"] > 0
    assert {r["op"] for r in result["ops"]} == set(ops.SHAPES[("cpu", "tiny")])
    for row in result["ops"]:
        assert row["contenders"]["reference"]["rel_error"] == 0.0
        assert "seconds" in row["contenders"]["pytorch"]
    assert [(r["family"], r["shape"]) for r in result["train"]] == [(f, "micro") for f in ("gpt", "bert", "t5")]
    for row in result["train"]:
        assert row["agreement"]["ok"], row
        assert row["tokens_per_s"]["ours"] > 0 and row["mfu"]["pytorch"] > 0
        assert f"| {row['family']} | micro |" in printed
    assert "matmul" in result["profile"]["categories"]
    try:
        import matplotlib  # noqa: F401  (only whether it is installed)
    except ImportError:
        return
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cuda_without_a_gpu_is_refused_in_one_line(capsys):
    if backend.has_cuda():
        pytest.skip("this machine has a GPU")
    assert cli.main(["--tiny", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --device cuda needs CuPy") and "\n" not in err


@pytest.mark.gpu
def test_tiny_mode_on_cuda(tmp_path):
    out = tmp_path / "result.json"
    assert cli.main(["--tiny", "--device", "cuda", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert all(r["agreement"]["ok"] for r in result["train"])


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        cli.parse_args(["--only", "ops,speed"])
    with pytest.raises(SystemExit):
        cli.parse_args(["--profile", "gpt-huge"])
    args = cli.parse_args(["--quick", "--only", "train"])
    assert args.parts == ["peaks", "train"]          # MFU needs the peak of the same run


# ---------------------------------------------------------------------------------------
# Agreement before speed
# ---------------------------------------------------------------------------------------

def micro_pair(family):
    cfg = train_steps.MICRO[family]
    batch = train_steps.make_batch(family, cfg, 2, 16)
    return train_steps.build_pair(family, cfg, batch, "cpu", torch)


def test_a_pair_with_one_perturbed_weight_is_refused():
    pair = micro_pair("gpt")
    with torch.no_grad():
        pair.theirs.get_parameter("transformer.h.0.mlp.c_fc.weight")[0, 0] += 0.5
    row = train_steps.bench_pair(pair, "micro", repeat=1, warmup=0, peak_flop_per_s=1e9)
    assert not row["agreement"]["ok"]
    assert "refused" in row and "no speed" in row["refused"]
    assert not {"tokens_per_s", "speed_ratio", "mfu", "seconds"} & set(row)
    assert "REFUSED" in train_steps.table([row])


def test_a_gradient_that_differs_alone_is_caught_and_named():
    pair = micro_pair("t5")
    their = pair.theirs.get_parameter("decoder.block.0.layer.2.DenseReluDense.wo.weight")
    their.register_hook(lambda g: g * 1.001)          # the loss is untouched, one gradient is not
    check = train_steps.agreement(pair)
    assert check["loss_rel"] <= train_steps.LOSS_TOLERANCE
    assert not check["ok"] and check["worst_grad"] == "decoder.blocks.0.ff.wo.weight"
    assert check["worst_grad_rel"] == pytest.approx(1e-3, rel=0.05)


def test_a_float32_only_difference_is_settled_in_float64_and_the_weights_come_back_exactly():
    pair = micro_pair("t5")
    before = {n: p.data.copy() for n, p, _, _ in pair.params}
    their = pair.theirs.get_parameter("encoder.block.0.layer.0.SelfAttention.q.weight")
    # what rounding at a ReLU kink looks like: float32 gradients apart, float64 ones equal
    their.register_hook(lambda g: g * 1.001 if g.dtype == torch.float32 else g)
    check = train_steps.agreement(pair)
    assert check["ok"] and check["worst_grad_rel"] > train_steps.GRAD_TOLERANCE
    assert check["float64"]["ok"] and check["float64"]["worst_grad_rel"] < 1e-10
    assert check["float32_vs_float64"]["pytorch"] == pytest.approx(1e-3, rel=0.05)
    assert "float64 agrees" in check["note"]
    assert pair.ours.dtype == np.float32 and their.dtype == torch.float32
    for name, p, q, layout in pair.params:
        assert np.array_equal(p.data, before[name])
        assert np.array_equal(q.detach().numpy(), p.data.T if layout == "conv1d" else p.data)


def test_bert_pair_agrees_including_its_exactly_zero_key_bias_gradients():
    check = train_steps.agreement(micro_pair("bert"))
    assert check["ok"], check
    assert 0.0 <= check["largest_exact_zero"] <= train_steps.ZERO_TOLERANCE
    assert check["exact_zero_rel"] and all("attn.k.bias" in n for n in check["exact_zero_rel"])


def test_an_op_contender_that_disagrees_is_refused(monkeypatch):
    real = ops._torch_call
    monkeypatch.setattr(ops, "_torch_call", lambda *a: real(*a) * 1.01)
    row = ops.bench_op("softmax", (8, 16), "cpu", repeat=1, warmup=0, torch=torch)
    assert "refused" in row["contenders"]["pytorch"] and "seconds" not in row["contenders"]["pytorch"]
    assert "seconds" in row["contenders"]["reference"]
    assert "REFUSED softmax / pytorch" in ops.table([row])


# ---------------------------------------------------------------------------------------
# The model FLOP count against the matrix products the model actually runs
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", train_steps.FAMILIES)
def test_model_flops_count_every_weight_product_the_forward_runs(monkeypatch, family):
    performed = []
    real = F.Linear.forward

    def counting(ctx, x, weight, bias):
        rows = int(np.prod(x.shape[:-1]))
        performed.append(2 * rows * weight.shape[0] * weight.shape[1])
        return real(ctx, x, weight, bias)
    monkeypatch.setattr(F.Linear, "forward", staticmethod(counting))
    cfg = train_steps.MICRO[family]
    batch = train_steps.make_batch(family, cfg, 2, 16)
    mt.manual_seed(0)
    model = mt.models.build(cfg)
    model.loss(batch)
    # forward 2 FLOPs per multiply-add, backward twice that: 3x the forward's products
    assert train_steps.model_flops(family, cfg, batch)["weights"] == 3 * sum(performed)


# ---------------------------------------------------------------------------------------
# Timing helpers (behaviour only)
# ---------------------------------------------------------------------------------------

def test_interleaved_runs_warmup_then_alternates():
    calls = []
    times = harness.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                                repeat=3, warmup=2)
    assert calls == ["a", "b"] * 5
    assert [len(v) for v in times.values()] == [3, 3]


def test_median_ratio_is_taken_round_by_round():
    times = {"ours": [1.0, 2.0, 10.0], "pytorch": [2.0, 2.0, 50.0]}
    assert harness.median_ratio(times, "pytorch", "ours") == 2.0


def test_rel_error_reads_every_array_kind():
    a = np.array([3.0, 4.0])
    assert harness.rel_error(mt.tensor(a), torch.tensor(a)) == 0.0
    assert harness.rel_error(a * 1.5, a) == pytest.approx(0.5)
    assert harness.rel_error(np.zeros(2), np.zeros(2)) == 0.0


def test_op_timer_times_every_op_through_the_engine_hook():
    from benchmarks.step_profile import OpTimer
    from minitransformer.autograd import hooks

    cfg = train_steps.MICRO["gpt"]
    batch = train_steps.make_batch("gpt", cfg, 2, 16)
    model = mt.models.build(cfg)
    with OpTimer(lambda: None) as timer:
        model.loss(batch).backward()
    blocks = cfg.n_layer
    # per block qkv, o, fc, proj; then the tied head
    assert timer.calls["Linear.forward"] == timer.calls["Linear.backward"] == 4 * blocks + 1
    assert set(timer.seconds) == set(timer.calls) and all(s >= 0 for s in timer.seconds.values())
    assert not hooks.observing()
