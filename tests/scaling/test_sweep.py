"""The sweep driver: trains each size, saves each result as it finishes, resumes, reports."""
import json
import signal

import numpy as np
import pytest

from minitransformer import data, jobs, recipes, scaling
from minitransformer.cli import main

TEXT = ("The function returns the sum of the list. The method copies the list and returns it. "
        "Return the number of items in the list. The class holds a list of names.\n")
BATCH, BLOCK = 4, 16
TOKENS = BATCH * BLOCK * 5                                  # five steps per run


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    for i in range(24):
        (folder / f"doc{i}.txt").write_text(TEXT * (1 + i % 3))
    return folder


@pytest.fixture(scope="module")
def setup(corpus, tmp_path_factory):
    """Tokenizer, objectives and two tiny GPT sizes, with every cache in a temporary folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINITRANSFORMER_CACHE", str(tmp_path_factory.mktemp("cache")))
        train_docs, val_docs, _ = recipes.load_corpus([corpus], val_fraction=0.2)
        tok = data.BPETokenizer.train(train_docs, 400)
        train = recipes.make_objective("clm", recipes.token_stream(train_docs, tok, "train"), tok, BLOCK, 0)
        val = recipes.make_objective("clm", recipes.token_stream(val_docs, tok, "val"), tok, BLOCK, 1,
                                     shuffle=False)
    sizes = [scaling.parse_size("16x1"), scaling.parse_size("24x1x2")]
    runs = [(s.name, scaling.sweep_config("gpt", s, tok, BLOCK)) for s in sizes]
    return runs, train, val


def sweep(setup, out, progress=None, **options):
    runs, train, val = setup
    options = dict(dict(tokens=TOKENS, batch_size=BATCH, data_key="tiny"), **options)
    return scaling.run_sweep(runs, train, val, out, progress=progress, **options)


def test_each_run_trains_saves_its_result_and_is_skipped_next_time(setup, tmp_path):
    events = []
    results = sweep(setup, tmp_path, events.append)
    assert [r["name"] for r in results] == ["d16-L1-H1", "d24-L1-H2"]
    for r in results:
        assert r["steps"] == 5 and r["tokens"] == TOKENS
        assert np.isfinite(r["val_loss"]) and r["val_loss"] > 0
        assert r["non_embedding_params"] == scaling.count_parameters(
            dict(setup[0])[r["name"]])["non_embedding"]
        assert r["compute"] == pytest.approx(r["flops_per_token"] * r["tokens"])
        assert json.loads((tmp_path / "runs" / r["name"] / "result.json").read_text()) == r
    kinds = [e["event"] for e in events]
    assert kinds == (["start"] + ["step"] * 5 + ["done"]) * 2
    assert results[1]["non_embedding_params"] > results[0]["non_embedding_params"]

    again = []
    assert sweep(setup, tmp_path, again.append) == results
    assert [e["event"] for e in again] == ["skip", "skip"]


def test_an_interrupted_sweep_resumes_where_it_stopped_and_ends_the_same(setup, tmp_path):
    straight = sweep(setup, tmp_path / "straight")

    stop = jobs.StopSignals()

    def interrupt(e):                       # as a SIGTERM during step 3 of the second run would
        if e["event"] == "step" and e["index"] == 1 and e["step"] == 3:
            stop.request(signal.SIGTERM)

    with pytest.raises(jobs.Stopped, match="stopped by SIGTERM after step 3 of 5") as stopped:
        sweep(setup, tmp_path / "resumed", interrupt, stop=stop)
    assert stopped.value.status == 128 + signal.SIGTERM
    assert (tmp_path / "resumed" / "runs" / "d16-L1-H1" / "result.json").is_file()
    assert not (tmp_path / "resumed" / "runs" / "d24-L1-H2" / "result.json").exists()
    events = []
    resumed = sweep(setup, tmp_path / "resumed", events.append)
    assert events[0]["event"] == "skip"
    start = next(e for e in events if e["event"] == "start")
    assert start["resumed"] and start["step"] == 3
    assert [e["step"] for e in events if e["event"] == "step"] == [4, 5]
    for a, b in zip(straight, resumed):
        assert a["val_loss"] == b["val_loss"]


def test_a_sweep_folder_refuses_other_settings(setup, tmp_path):
    sweep(setup, tmp_path)
    with pytest.raises(ValueError, match="tokens was 320, now 640"):
        sweep(setup, tmp_path, tokens=2 * TOKENS)


def test_sizes_parse_with_default_heads_and_refuse_nonsense():
    assert scaling.parse_size("128x4") == scaling.ModelSize(128, 4, 4)
    assert scaling.parse_size("48x2") == scaling.ModelSize(48, 2, 1)
    assert scaling.parse_size("96x3x2").name == "d96-L3-H2"
    for bad in ("128", "128x", "axb", "0x2", "100x2x3"):
        with pytest.raises(ValueError, match="WIDTHxLAYERS|divisible"):
            scaling.parse_size(bad)


def test_quick_ladder_spans_ten_times_in_non_embedding_parameters():
    tok_like = type("Tok", (), {"vocab_size": 1024, "pad_id": 0, "eos_id": 1})()
    configs = [scaling.sweep_config("gpt", s, tok_like, 128) for s in scaling.QUICK_SIZES]
    counts = [scaling.count_parameters(c)["non_embedding"] for c in configs]
    assert len(counts) >= 5 and counts == sorted(counts)
    assert counts[-1] / counts[0] >= 10
    assert len({c.n_layer for c in configs}) == 1                  # one depth: width is what varies
    # Every width starts with GPT-2's signal scale: std x sqrt(width) as at 0.02 and 768.
    for c in configs:
        assert c.initializer_range * c.n_embd ** 0.5 == pytest.approx(0.02 * 768 ** 0.5)
        assert c.resid_pdrop == c.embd_pdrop == c.attn_pdrop == 0.0


def fake_results(n, loss, tokens=300_000):
    out = []
    for i, (ni, li) in enumerate(zip(n, loss)):
        out.append({"name": f"run{i}", "non_embedding_params": int(ni), "params": int(ni) + 100_000,
                    "flops_per_token": 6.0 * (ni + 100_000), "tokens": tokens,
                    "compute": 6.0 * (ni + 100_000) * tokens, "lr": 3e-3, "train_loss": li + 0.01,
                    "val_loss": li, "seconds": 60.0})
    return out


def test_report_fits_and_writes_json_and_table(tmp_path):
    n = np.geomspace(2e4, 2e6, 6)
    results = fake_results(n, 2.5 + 40 * n ** -0.3)
    analysis = scaling.analyse(results)
    assert analysis["fit_N"]["alpha"] == pytest.approx(0.3, rel=1e-4)
    assert analysis["span"] == pytest.approx(100)
    scaling.write_report(results, analysis, tmp_path)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["analysis"]["references"]["kaplan_alpha_N"] == 0.076
    text = (tmp_path / "report.txt").read_text()
    assert "run5" in text and "alpha = 0.300" in text and "0.34" in text and "0.076" in text


def test_report_draws_the_plots_when_matplotlib_is_installed(tmp_path):
    pytest.importorskip("matplotlib")             # shown as a skip without it, not a silent pass
    n = np.geomspace(2e4, 2e6, 6)
    results = fake_results(n, 2.5 + 40 * n ** -0.3)
    paths = scaling.write_report(results, scaling.analyse(results), tmp_path)
    for name in ("loss_vs_params.png", "loss_vs_compute.png"):
        assert tmp_path / name in paths
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_of_too_few_sizes_says_so(tmp_path):
    analysis = scaling.analyse(fake_results([1e4, 2e4], [3.0, 2.9]))
    assert "fit_N" not in analysis
    assert scaling.format_fits(analysis) == ["no fit: 2 model sizes: a fit needs at least 3"]


def test_scale_command_runs_a_sweep_prints_the_table_and_fit(corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINITRANSFORMER_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "sweep"
    args = ["scale", "--data", str(corpus), "--sizes", "16x1", "24x1", "32x1", "--tokens", str(TOKENS),
            "--batch-size", str(BATCH), "--block-size", str(BLOCK), "--vocab-size", "400",
            "--out", str(out), "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "[3/3] d32-L1-H1: validation loss" in printed
    assert "non-emb N" in printed and "L(N) = E + A / N^alpha" in printed
    assert "alpha_N = 0.076" in printed and "alpha = 0.34" in printed
    assert (out / "report.json").is_file() and (out / "report.txt").is_file()
    assert main(args) == 0
    assert capsys.readouterr().out.count("finished before") == 3


def test_scale_command_help_and_bad_input(capsys):
    with pytest.raises(SystemExit):
        main(["scale", "--help"])
    assert "examples:" in capsys.readouterr().out
    assert main(["scale", "--sizes", "64", "--quick"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "WIDTHxLAYERS" in err[0]
