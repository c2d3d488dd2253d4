"""The benchmark harness: it runs end to end, it refuses pairs that disagree, and its
counts are right. No timing is asserted anywhere: speed is measured, never tested."""
import json

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import backend
from minitransformer import functional as F

from benchmarks import __main__ as cli
from benchmarks import harness, ops, results, train_steps

# Only the tests that run PyTorch or a transformers twin need them; the rest run anywhere.
torch = harness.import_torch()
try:
    import transformers  # noqa: F401  (only whether it is installed)
except ImportError:
    transformers = None
needs_torch = pytest.mark.skipif(torch is None, reason="needs PyTorch (the dev extra)")
needs_twins = pytest.mark.skipif(torch is None or transformers is None,
                                 reason="needs PyTorch and transformers (the dev extra)")


# ---------------------------------------------------------------------------------------
# The whole harness, in its tiny mode
# ---------------------------------------------------------------------------------------

@needs_twins
def test_tiny_mode_runs_every_part_and_writes_json_and_png(tmp_path, capsys):
    out, png = tmp_path / "result.json", tmp_path / "chart.png"
    assert cli.main(["--tiny", "--only", "peaks,ops,train,profile", "--json", str(out), "--png", str(png)]) == 0
    printed = capsys.readouterr().out
    for heading in ("## Machine peaks", "## Ops", "## Training steps", "## Profile", "load average"):
        assert heading in printed
    result = json.loads(out.read_text())
    assert result["mode"] == "tiny" and result["environment"]["device"] == "cpu"
    assert result["peaks"]["matmul_peak"]["flop_per_s"] > 0
    assert set(result["peaks"]["matmul"]) == {"before", "after"} and "Peak spread:" in printed
    assert result["failures"] == []
    # what a reader of a shared file needs: layout, version, commit, date, machine, arguments
    assert result["schema_version"] == results.SCHEMA_VERSION
    assert result["run"]["minitransformer"] and result["run"]["date"].startswith("20")
    assert result["run"]["arguments"][:3] == ["--tiny", "--only", "peaks,ops,train,profile"]
    assert result["environment"]["machine"]["cpu_count"] >= 1
    assert result["environment"]["versions"]["numpy"] == np.__version__
    # the tables show the spread of the samples beside the median
    assert "ms (min-max)" in printed and "tok/s (min-max)" in printed
    # and two runs compare row by row
    faster = json.loads(out.read_text())
    for row in faster["ops"]:
        for c in row["contenders"].values():
            if "samples" in c:
                c["seconds"], c["samples"] = c["seconds"] / 2, [t / 2 for t in c["samples"]]
    (tmp_path / "faster.json").write_text(json.dumps(faster))
    capsys.readouterr()
    assert cli.main(["compare", str(out), str(tmp_path / "faster.json")]) == 0
    table = capsys.readouterr().out
    assert "| op softmax 64x128 / reference |" in table and "| 2.00x |" in table
    assert "| train gpt micro / ours |" in table and "| 1.00x | yes |" in table
    assert {r["op"] for r in result["ops"]} == set(ops.SHAPES[("cpu", "tiny")])
    for row in result["ops"]:
        assert row["contenders"]["reference"]["rel_error"] == 0.0
        assert "seconds" in row["contenders"]["pytorch"]
    assert [(r["family"], r["shape"]) for r in result["train"]] == [(f, "micro") for f in ("gpt", "bert", "t5")]
    for row in result["train"]:
        assert row["agreement"]["ok"], row
        # the tiny mode times the twin and the fast model (compiling takes longer than the whole run)
        assert set(row["contenders"]) == {"pytorch", "pytorch-fast"}
        assert all(c["agreement"]["ok"] for c in row["contenders"].values()), row["contenders"]
        assert row["tokens_per_s"]["ours"] > 0 and row["mfu"]["pytorch"] > 0 and row["mfu"]["pytorch-fast"] > 0
        assert row["fastest"]["contender"] in ("pytorch", "pytorch-fast")
        assert row["fastest"]["ratio"] == row["ratios"][row["fastest"]["contender"]]
        assert f"| {row['family']} | micro |" in printed
        assert f"{row['family']} micro: ours / the fastest contender" in printed
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
    with pytest.raises(SystemExit):
        cli.parse_args(["--profile", "gpt-mini:pytorch-compiled"])   # the profiler reads eager ops only
    from benchmarks.step_profile import parse_spec
    assert parse_spec("gpt-mini") == ("gpt", "mini", "pytorch")
    assert parse_spec("bert-real:pytorch-fast") == ("bert", "real", "pytorch-fast")
    args = cli.parse_args(["--quick", "--only", "train"])
    assert args.parts == ["peaks", "train"]          # MFU needs the peak of the same run


# ---------------------------------------------------------------------------------------
# Agreement before speed
# ---------------------------------------------------------------------------------------

def micro_pair(family):
    cfg = train_steps.MICRO[family]
    batch = train_steps.make_batch(family, cfg, 2, 16)
    return train_steps.build_pair(family, cfg, batch, "cpu", torch)


@needs_twins
def test_a_pair_with_one_perturbed_weight_is_refused():
    pair = micro_pair("gpt")
    with torch.no_grad():
        pair.theirs.get_parameter("transformer.h.0.mlp.c_fc.weight")[0, 0] += 0.5
    row = train_steps.bench_pair(pair, "micro", repeat=1, warmup=0, peak_flop_per_s=1e9)
    assert not row["agreement"]["ok"]
    assert "refused" in row and "no speed" in row["refused"]
    assert not {"tokens_per_s", "speed_ratio", "mfu", "seconds"} & set(row)
    assert "REFUSED" in train_steps.table([row])


@needs_twins
def test_a_refused_fast_contender_is_left_out_of_the_timing_and_fails_the_run():
    cfg = train_steps.MICRO["gpt"]
    pairs = train_steps.build_contenders("gpt", cfg, train_steps.make_batch("gpt", cfg, 2, 16), "cpu", torch,
                                         ["pytorch", "pytorch-fast"])
    with torch.no_grad():
        pairs[1].theirs.get_parameter("blocks.0.ff.wi.weight")[0, 0] += 0.5
    row = train_steps.bench_row(pairs, "micro", repeat=1, warmup=0, peak_flop_per_s=1e9)
    assert "refused" in row["contenders"]["pytorch-fast"] and "no speed" in row["refused"]
    assert set(row["seconds"]) == {"ours", "pytorch"} and row["fastest"]["contender"] == "pytorch"
    assert set(row["loss_after_steps"]) == {"pytorch"}
    assert harness.failures({"train": [row]})[0].startswith("REFUSED training pair gpt micro: pytorch-fast:")
    assert "| gpt | micro | 0.02M | 32 | PyTorch fast, eager" in train_steps.table([row])


@needs_twins
def test_a_gradient_of_one_part_of_a_fused_projection_is_read_from_its_rows():
    cfg = train_steps.MICRO["t5"]
    pair = train_steps.build_contenders("t5", cfg, train_steps.make_batch("t5", cfg, 2, 16), "cpu", torch,
                                        ["pytorch-fast"])[0]
    assert pair.optimizer_kind in ("fused", "foreach")
    kv = pair.theirs.get_parameter("decoder.blocks.0.cross_attn.kv.weight")
    scale = torch.ones(kv.shape[0], 1)
    scale[kv.shape[0] // 2:] = 1.001                  # only the v rows: the loss is untouched
    kv.register_hook(lambda g: g * scale)
    check = train_steps.agreement(pair)
    assert check["loss_rel"] <= train_steps.LOSS_TOLERANCE and not check["ok"]
    assert check["worst_grad"] == "decoder.blocks.0.cross_attn.v.weight"
    assert check["worst_grad_rel"] == pytest.approx(1e-3, rel=0.05)
    assert check["grad_rel"]["decoder.blocks.0.cross_attn.k.weight"] < train_steps.GRAD_TOLERANCE


@needs_torch
@pytest.mark.parametrize("bidirectional", [True, False])
def test_the_fast_t5_buckets_are_ours(bidirectional):
    from benchmarks import torch_contenders

    from minitransformer.nn.attention import relative_position_bucket

    offsets = np.arange(-300, 301)
    want = relative_position_bucket(offsets, bidirectional, 32, 128)
    got = torch_contenders.relative_position_bucket(torch.from_numpy(offsets), bidirectional, 32, 128)
    assert np.array_equal(got.numpy(), want)


@needs_torch
def test_the_fast_gpt_refuses_a_padded_batch_and_drops_a_mask_of_ones():
    from benchmarks import torch_contenders

    batch = train_steps.make_batch("gpt", train_steps.MICRO["gpt"], 2, 16)
    assert set(torch_contenders.batch_for("gpt", batch)) == {"input_ids", "labels"}
    batch["attention_mask"][0, -3:] = 0
    with pytest.raises(ValueError, match="takes no attention_mask, but this batch pads"):
        torch_contenders.batch_for("gpt", batch)


def test_default_contenders_compile_only_outside_the_tiny_mode_and_only_on_the_cpu(monkeypatch):
    monkeypatch.setattr(train_steps, "compiler_present", lambda: "/usr/bin/c++")
    assert train_steps.default_contenders("cpu", "quick") == ["pytorch", "pytorch-fast", "pytorch-compiled"]
    assert train_steps.default_contenders("cpu", "tiny") == ["pytorch", "pytorch-fast"]
    assert train_steps.default_contenders("cuda", "quick") == ["pytorch"]
    monkeypatch.setattr(train_steps, "compiler_present", lambda: None)
    assert train_steps.default_contenders("cpu", "full") == ["pytorch", "pytorch-fast"]
    with pytest.raises(SystemExit):
        cli.parse_args(["--contenders", "pytorch,jax"])


# ---------------------------------------------------------------------------------------
# Peak memory, each contender alone in a fresh process
# ---------------------------------------------------------------------------------------

@needs_twins
def test_peak_memory_is_measured_in_a_fresh_process():
    m = train_steps.peak_memory("gpt", "micro", "pytorch-fast", threads=1)
    assert m["baseline"] > 0 and m["peak"] > 0 and m["steps"] == 3
    if m["steady"] is not None:                  # where the system can restart the peak count
        assert 0 < m["steady"] <= m["peak"]


def test_the_table_shows_each_contenders_memory_beside_its_speed():
    samples = {"ours": [1.0], "pytorch-fast": [2.0]}
    row = {"family": "gpt", "shape": "micro", "params": 20_000, "tokens_per_step": 32,
           "contenders": {"pytorch-fast": {"label": "PyTorch fast, eager", "optimizer": "fused",
                                           "agreement": {"loss_rel": 0.0, "worst_grad_rel": 1e-7}}},
           "samples": samples, "seconds": {"ours": 1.0, "pytorch-fast": 2.0},
           "tokens_per_s": {"ours": 32.0, "pytorch-fast": 16.0}, "ratios": {"pytorch-fast": 2.0},
           "fastest": {"contender": "pytorch-fast", "ratio": 2.0},
           "memory": {"ours": {"peak": 300 * 2**20, "steady": 200 * 2**20},
                      "pytorch-fast": {"peak": 400 * 2**20, "steady": None}}}
    text = train_steps.table([row])
    assert "| ours | 32 (32-32) | - | - | 300 (200) | - | - |" in text
    assert "| PyTorch fast, eager (AdamW fused) | 16 (16-16) | 2.00x | - | 400 | 0.0e+00 | 1.0e-07 |" in text
    assert "gpt micro: ours / the fastest contender (PyTorch fast, eager) = 2.00x" in text


@needs_twins
def test_a_gradient_that_differs_alone_is_caught_and_named():
    pair = micro_pair("t5")
    their = pair.theirs.get_parameter("decoder.block.0.layer.2.DenseReluDense.wo.weight")
    their.register_hook(lambda g: g * 1.001)          # the loss is untouched, one gradient is not
    check = train_steps.agreement(pair)
    assert check["loss_rel"] <= train_steps.LOSS_TOLERANCE
    assert not check["ok"] and check["worst_grad"] == "decoder.blocks.0.ff.wo.weight"
    assert check["worst_grad_rel"] == pytest.approx(1e-3, rel=0.05)


@needs_twins
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


@needs_twins
def test_bert_pair_agrees_including_its_exactly_zero_key_bias_gradients():
    check = train_steps.agreement(micro_pair("bert"))
    assert check["ok"], check
    assert 0.0 <= check["largest_exact_zero"] <= train_steps.ZERO_TOLERANCE
    assert check["exact_zero_rel"] and all("attn.k.bias" in n for n in check["exact_zero_rel"])


@needs_torch
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
    real_gemm = F._gemm

    def counting_gemm(a, b, out, trans_a=False, trans_b=False, accumulate=False):
        # the blocked language-model head (GPT): without gradients, only its logits' products
        performed.append(2 * out.shape[0] * out.shape[1] * (a.shape[0] if trans_a else a.shape[1]))
        return real_gemm(a, b, out, trans_a=trans_a, trans_b=trans_b, accumulate=accumulate)
    monkeypatch.setattr(F, "_gemm", counting_gemm)
    cfg = train_steps.MICRO[family]
    batch = train_steps.make_batch(family, cfg, 2, 16)
    mt.manual_seed(0)
    model = mt.models.build(cfg)
    with mt.no_grad():                  # the forward's products only
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


@needs_torch
def test_rel_error_reads_every_array_kind():
    a = np.array([3.0, 4.0])
    assert harness.rel_error(mt.tensor(a), torch.tensor(a)) == 0.0
    assert harness.rel_error(a * 1.5, a) == pytest.approx(0.5)
    assert harness.rel_error(np.zeros(2), np.zeros(2)) == 0.0


# ---------------------------------------------------------------------------------------
# The peak is the best sustained rate; untrustworthy figures fail the run
# ---------------------------------------------------------------------------------------

def test_the_matmul_peak_is_the_best_sample_of_every_size_and_source():
    p = harness.matmul_peak("cpu", "tiny", repeat=3, torch=torch)
    every = [r for by_source in p["samples"].values() for rates in by_source.values() for r in rates]
    assert len(p["samples"]) == len(harness.PEAK_SIZES[("cpu", "tiny")][0]) >= 2
    assert p["flop_per_s"] == max(every)
    assert p["sizes"][p["n"]][p["source"]] == p["flop_per_s"]


def test_combining_the_peaks_takes_the_better_and_records_the_spread():
    def measured(best, low):
        return {"sizes": {64: {"numpy": low}, 128: {"numpy": best}}, "source": "numpy", "n": 128,
                "flop_per_s": best}
    p = {"matmul": {"before": measured(100.0, 60.0)}, "matmul_peak": {"flop_per_s": 100.0}}
    harness.combine_peaks(p, measured(120.0, 90.0))
    assert p["matmul_peak"]["flop_per_s"] == 120.0 and p["matmul_peak"]["measured"] == "after"
    assert p["matmul_spread"] == {"min": 60.0, "max": 120.0, "before": 100.0, "after": 120.0}


def _forced_low_peak(device, mode, repeat, torch=None):
    """A peak far below what any step reaches, as a badly measured one would be."""
    return {"sizes": {8: {"numpy": 1.0}}, "samples": {8: {"numpy": [1.0]}}, "rel_error": {},
            "source": "numpy", "n": 8, "flop_per_s": 1.0}


@needs_twins
def test_an_mfu_above_100_percent_is_a_warning_naming_the_row_and_a_failed_run(monkeypatch, capsys):
    monkeypatch.setattr(harness, "matmul_peak", _forced_low_peak)
    assert cli.main(["--tiny", "--only", "train", "--families", "gpt"]) == 1
    err = capsys.readouterr().err
    assert "warning: MFU above 100% in row gpt micro" in err


@needs_torch
def test_a_refused_pair_fails_the_run(monkeypatch, capsys):
    real = ops._torch_call
    monkeypatch.setattr(ops, "_torch_call", lambda *a: real(*a) * 1.01)
    assert cli.main(["--tiny", "--only", "ops"]) == 1
    err = capsys.readouterr().err
    assert "warning: REFUSED op softmax" in err


def test_failures_lists_nothing_for_a_clean_result():
    row = {"family": "gpt", "shape": "micro", "mfu": {"ours": 0.7, "pytorch": 0.69}}
    assert harness.failures({"train": [row], "ops": []}) == []
    row["mfu"]["ours"] = 1.01
    assert harness.failures({"train": [row]})[0].startswith("MFU above 100% in row gpt micro (ours: 101.0%)")


def test_compare_refuses_a_missing_or_foreign_file_in_one_line(tmp_path, capsys):
    assert cli.main(["compare", str(tmp_path / "nope.json"), str(tmp_path / "nope.json")]) == 2
    assert capsys.readouterr().err.strip() == f"error: compare: no results file at {tmp_path / 'nope.json'}"
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"mode": "quick", "ops": []}))
    assert cli.main(["compare", str(old), str(old)]) == 2
    assert "schema version None" in capsys.readouterr().err
    assert cli.main(["compare", str(old)]) == 2


def test_op_timer_times_every_op_through_the_engine_hook():
    from benchmarks.step_profile import OpTimer
    from minitransformer.autograd import hooks

    cfg = train_steps.MICRO["gpt"]
    batch = train_steps.make_batch("gpt", cfg, 2, 16)
    model = mt.models.build(cfg)
    with OpTimer(lambda: None) as timer:
        model.loss(batch).backward()
    blocks = cfg.n_layer
    # per block qkv, o, fc; proj with the activation; then the tied head with the loss
    assert timer.calls["Linear.forward"] == timer.calls["Linear.backward"] == 3 * blocks
    assert timer.calls["ActivationLinear.forward"] == timer.calls["ActivationLinear.backward"] == blocks
    assert timer.calls["LinearCrossEntropy.forward"] == timer.calls["LinearCrossEntropy.backward"] == 1
    assert set(timer.seconds) == set(timer.calls) and all(s >= 0 for s in timer.seconds.values())
    assert not hooks.observing()
