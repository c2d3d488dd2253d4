"""The curation pipeline end to end: files in, curated .jsonl and report out, bad input, CLI."""
import dataclasses
import gzip
import json

import numpy as np
import pytest

from minitransformer.cli import main
from minitransformer.data.curate import (CurateConfig, Document, Pipeline, RecordReader,
                                         TokenCounter, curate, load_config)
from minitransformer.data.curate.synthetic import JUNK_KINDS, Prose, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A 300 kB generated corpus with planted near-duplicates, exact copies and junk."""
    path = tmp_path_factory.mktemp("corpus") / "crawl.jsonl"
    labels = write_corpus(path, 300_000, seed=3, near_dup_share=0.15, words=(150, 400))
    return path, labels


@pytest.fixture(scope="module")
def curated(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return out, curate([corpus[0]], out)


def read_jsonl(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def test_the_generator_writes_prose_that_passes_every_rule_and_junk_that_does_not():
    prose = Prose(seed=11)
    rng = np.random.default_rng(0)
    no_dedup = CurateConfig.from_dict({"exact_dedup": {"enabled": False}, "minhash": {"enabled": False}})
    docs = [Document({"id": i}, prose.document(rng, int(rng.integers(60, 1500))), "mem", i)
            for i in range(40)]
    assert len(list(Pipeline(no_dedup).run(docs))) == 40
    for kind in JUNK_KINDS:
        junk = [Document({"id": i}, prose.junk(rng, kind), "mem", i) for i in range(5)]
        assert list(Pipeline(no_dedup).run(junk)) == [], kind


def test_output_keeps_fields_and_drops_what_was_planted(corpus, curated):
    path, labels = corpus
    out, report = curated
    kept = read_jsonl(out / "curated.jsonl")
    ids = [r["id"] for r in kept]
    assert ids == sorted(ids)                                         # input order
    assert all(set(r) == {"id", "url", "text"} and r["url"].endswith(r["id"]) for r in kept)
    assert not set(ids) & (labels.near_duplicates | labels.exact_copies | labels.junk)
    assert len(ids) == labels.documents - len(labels.near_duplicates | labels.exact_copies | labels.junk)
    assert report.stage("minhash").dropped["near_duplicate"] == len(labels.near_duplicates)


def test_report_counts_add_up(corpus, curated):
    out, report = curated
    previous_docs, previous_tokens = report.docs_in, report.tokens_in
    for stage in report.stages:
        assert (stage.docs_in, stage.tokens_in) == (previous_docs, previous_tokens)
        assert stage.docs_in - stage.docs_out == sum(stage.dropped.values())
        for reason, examples in stage.examples.items():
            assert 1 <= len(examples) <= min(3, stage.dropped[reason])
            assert all(e["location"].startswith(str(corpus[0])) for e in examples)
        previous_docs, previous_tokens = stage.docs_out, stage.tokens_out
    assert report.docs_in == corpus[1].documents
    assert report.tokens_out == sum(TokenCounter()(r["text"]) for r in read_jsonl(out / "curated.jsonl"))
    saved = json.loads((out / "report.json").read_text())
    assert saved["summary"]["docs_out"] == report.docs_out
    assert [s["name"] for s in saved["stages"]] == [f.name for f in dataclasses.fields(CurateConfig)]
    assert saved["summary"]["token_unit"].startswith("GPT-2 pre-split words")
    table = report.table()
    assert "blocklist (off)" in table and "near_duplicate" in table and "all stages" in table


def test_funnel_chart_is_drawn_when_matplotlib_is_installed(curated):
    pytest.importorskip("matplotlib")
    out, report = curated
    assert report.funnel == str(out / "funnel.png")
    assert (out / "funnel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_pipeline_is_deterministic(corpus, curated, tmp_path):
    out, report = curated
    again = curate([corpus[0]], tmp_path)
    assert (tmp_path / "curated.jsonl").read_bytes() == (out / "curated.jsonl").read_bytes()
    def strip(r):
        return {k: v for k, v in r.to_dict().items() if k not in ("summary", "output", "funnel")}
    assert strip(again) == strip(report)


def test_malformed_jsonl_lines_are_counted_with_line_numbers(tmp_path):
    path = tmp_path / "mixed.jsonl"
    good = json.dumps({"id": "g", "text": "fine"})
    path.write_text("\n".join([good, "{not json", "[1, 2]", '{"id": 3}', "", '{"text": 7}', good]) + "\n",
                    encoding="utf-8")
    with open(path, "ab") as f:
        f.write(b'{"text": "caf\xe9"}\n{"text": "lone \\udc00"}\n{"text": "pair \\ud83d\\ude00"}\n')
    reader = RecordReader([path])
    assert [(d.line, d.text) for d in reader] == [(1, "fine"), (7, "fine"), (10, "pair \U0001F600")]
    assert [(i.line, i.problem.split(" (")[0]) for i in reader.issues] == [
        (2, "not valid JSON"), (3, "expected a JSON object, got list"),
        (4, "expected a string field 'text', got no such field"),
        (6, "expected a string field 'text', got int"), (8, "not valid JSON"),
        (9, "a string holds a lone surrogate escape")]
    assert reader.summary()["malformed"] == 6
    with pytest.raises(ValueError, match=r"mixed.jsonl:2: not valid JSON.*without --strict"):
        list(RecordReader([path], strict=True))


def test_unreadable_files_name_their_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        RecordReader([tmp_path / "missing.jsonl"])
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(gzip.compress(b'{"text": "a"}\n' * 100)[:40])
    with pytest.raises(ValueError, match="cannot read .*broken.jsonl.gz"):
        list(RecordReader([broken]))
    notgz = tmp_path / "plain.txt.gz"
    notgz.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="cannot read .*plain.txt.gz"):
        list(RecordReader([notgz]))


def test_txt_files_split_by_file_paragraph_or_line(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"first para\nstill first\n\n\nsecond \xff para\n")
    (doc,) = RecordReader([path])
    assert doc.record == {"id": str(path), "text": None} and doc.text.startswith("first para")
    paragraphs = RecordReader([path], txt_split="paragraph")
    assert [(d.line, d.text) for d in paragraphs] == [(1, "first para\nstill first\n"),
                                                      (5, "second \ufffd para\n")]
    assert [i.line for i in paragraphs.issues] == [5]
    lines = RecordReader([tmp_path], txt_split="line")
    assert [d.output()["id"] for d in lines] == [f"{path}:1", f"{path}:2", f"{path}:5"]


def test_the_text_field_is_configurable_and_written_back_as_text(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"content": "Alpha beta gamma.", "id": 9}) + "\n", encoding="utf-8")
    (doc,) = RecordReader([src], text_field="content")
    doc.text = "cleaned"
    assert doc.output("content") == {"text": "cleaned", "id": 9}


def test_output_folder_is_never_read_as_input(corpus, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jsonl").write_bytes(corpus[0].read_bytes())
    first = curate([src], src / "out", CurateConfig.from_dict({"minhash": {"enabled": False}}))
    second = curate([src], src / "out", CurateConfig.from_dict({"minhash": {"enabled": False}}))
    assert first.docs_in == second.docs_in == corpus[1].documents


def test_token_counts_use_the_tokenizer_when_given():
    class Chars:                           # any object with encode(text) will do
        def encode(self, text):
            return list(text)

    counter = TokenCounter(Chars(), "chars")
    assert counter("héllo") == 5 and counter.unit == "BPE tokens (chars)"
    assert TokenCounter()("Hello, world!  It's") == 7   # Hello , ␣world ! ␣ ␣It 's


def test_config_files_and_their_errors(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"c4": {"min_sentences": 3, "enabled": False}, "minhash": {"bands": 20}}))
    cfg = load_config(path)
    assert (cfg.c4.min_sentences, cfg.c4.enabled, cfg.minhash.bands, cfg.minhash.rows) == (3, False, 20, 8)
    assert cfg.gopher_quality.max_hash_ratio == 0.1
    path.write_text(json.dumps({"c4": {"min_sentence": 3}}))
    with pytest.raises(ValueError, match="c4 has no setting 'min_sentence'; its settings are enabled"):
        load_config(path)
    path.write_text(json.dumps({"gopher_quality": {"min_words": 1.5}}))
    with pytest.raises(ValueError, match="gopher_quality.min_words must be int, got 1.5"):
        load_config(path)
    path.write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_config(path)
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        load_config(tmp_path / "nothere.json")
    assert CurateConfig.from_dict(CurateConfig().to_dict()) == CurateConfig()


# --------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------

def test_cli_runs_prints_the_table_and_applies_flags(corpus, tmp_path, capsys):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"c4": {"enabled": False}, "pii": {"max_hits": 9}}))
    words = tmp_path / "words.txt"
    words.write_text("zzzz\n")
    status = main(["curate", str(corpus[0]), "--out", str(tmp_path / "o"), "--config", str(config),
                   "--no-minhash", "--gopher-quality-min-words", "60", "--blocklist", str(words),
                   "--no-c4-drop-policy-lines", "--no-progress"])
    out = capsys.readouterr().out
    assert status == 0
    assert "c4 (off)" in out and "minhash (off)" in out and "\nblocklist " in out
    saved = json.loads((tmp_path / "o" / "report.json").read_text())["config"]
    assert saved["gopher_quality"]["min_words"] == 60 and saved["pii"]["max_hits"] == 9
    assert saved["c4"]["drop_policy_lines"] is False and saved["blocklist"]["path"] == str(words)
    assert (tmp_path / "o" / "curated.jsonl").exists()


def test_cli_print_config_is_a_loadable_config(tmp_path, capsys):
    assert main(["curate", "--print-config", "--minhash-rows", "4", "--no-pii"]) == 0
    path = tmp_path / "c.json"
    path.write_text(capsys.readouterr().out)
    cfg = load_config(path)
    assert cfg.minhash.rows == 4 and not cfg.pii.enabled


@pytest.mark.parametrize("args, message", [
    (["--out", "{tmp}/o"], "expected at least one input"),
    (["{tmp}/none.jsonl", "--out", "{tmp}/o"], "none.jsonl' does not exist"),
    (["{corpus}"], "expected --out DIR"),
    (["{corpus}", "--out", "{corpus}"], "is a file"),
    (["{corpus}", "--out", "{tmp}/o", "--normalize-form", "NFX"], "normalize.form must be one of"),
    (["{bad}", "--out", "{tmp}/o", "--strict"], "bad.jsonl:1: not valid JSON"),
])
def test_cli_user_errors_are_one_line_with_status_2(args, message, corpus, tmp_path, capsys):
    (tmp_path / "bad.jsonl").write_text("oops\n")
    args = [a.format(tmp=tmp_path, corpus=corpus[0], bad=tmp_path / "bad.jsonl") for a in args]
    assert main(["curate", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_cli_counts_tokens_with_a_trained_tokenizer(tmp_path, capsys):
    from minitransformer.data import BPETokenizer

    docs = [" ".join(["Alpha beta gamma delta."] * 20), "Gamma delta <eos> epsilon."]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    tok = BPETokenizer.train(docs, vocab_size=300, num_sentinels=0)
    path = tok.save(tmp_path / "tokenizer.json")
    off = [f"--no-{s}" for s in ("gopher-repetition", "gopher-quality", "fineweb", "c4", "minhash")]
    assert main(["curate", str(src), "--out", str(tmp_path / "o"), "--tokenizer", str(path), *off]) == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())["summary"]
    assert report["token_unit"] == f"BPE tokens ({path})"
    assert report["tokens_in"] == sum(len(tok.encode(t, disallowed_special=())) for t in docs)
