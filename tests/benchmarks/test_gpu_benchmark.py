"""The GPU parts of the benchmark, on a machine without a GPU: they must not crash, must say
what they skip, and must print what a GPU run measures (bf16 context, GPU memory)."""
import pytest

from benchmarks import __main__ as cli
from benchmarks import harness, ops, train_steps

torch = harness.import_torch()
try:
    import transformers  # noqa: F401  (only whether it is installed)
except ImportError:
    transformers = None


def test_gpu_memory_is_only_measured_on_a_gpu():
    calls = []
    assert harness.peak_memory({"kernel": lambda: calls.append(1)}, "cpu") == {}
    assert calls == []          # nothing runs on the CPU


def test_the_bf16_context_contender_exists_only_on_a_gpu():
    runs, _ = ops.contenders("attention", (1, 2, 16, 8), "cpu", torch)
    assert "pytorch_bf16" not in runs


def test_gpu_attention_shapes_span_1024_to_8192_with_gpt2_heads():
    shapes = ops.SHAPES[("cuda", "full")]["attention"]
    assert {s[2] for s in shapes} == {1024, 2048, 4096, 8192}
    assert all(s[1] == 12 and s[3] == 64 for s in shapes)
    assert {s[2] for s in ops.SHAPES[("cuda", "quick")]["attention"]} >= {1024, 4096, 8192}


def test_the_table_prints_the_bf16_context_and_the_memory():
    row = {"op": "attention", "shape": [2, 12, 4096, 64], "unit": "flop", "contenders": {
        "reference": {"seconds": 0.1, "rate": 1e12, "samples": [0.1], "peak_bytes": 3 * 2**30},
        "kernel": {"seconds": 0.01, "rate": 1e13, "samples": [0.01], "peak_bytes": 2**20},
        "pytorch": {"seconds": 0.008, "rate": 1.2e13, "samples": [0.008], "peak_bytes": 2**21},
        "pytorch_bf16": {"seconds": 0.002, "rate": 5e13, "samples": [0.002], "peak_bytes": 2**20}}}
    text = ops.table([row])
    assert "context: attention 2x12x4096x64 in PyTorch bf16 (SDPA): 2.00 ms, 50.0 TFLOP/s, 5.0x faster" in text
    assert "GPU memory at the peak of one call, attention 2x12x4096x64: reference 3,072 MiB, kernel 1 MiB" in text


def test_batch_option_is_checked():
    assert cli.parse_args(["--batch", "16"]).batch == 16
    with pytest.raises(SystemExit):
        cli.parse_args(["--batch", "0"])


@pytest.mark.skipif(torch is None or transformers is None, reason="needs PyTorch and transformers (the dev extra)")
def test_the_batch_replaces_the_shapes_own():
    rows = train_steps.run("cpu", ["micro"], 1, 0, torch, ["gpt"], batch_size=3)
    assert rows[0]["batch"] == [3, 16]
    assert "peak_bytes" not in rows[0]      # GPU memory is measured on a GPU only
