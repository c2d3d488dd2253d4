"""Models by hub id, read from a huggingface_hub cache built on disk (no network), exported
runs, and model cards as a person choosing a model reads them."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import checkpoint, hf
from minitransformer.cli import main, safe_text
from minitransformer.model_card import choosing_sections, read_front_matter

pytest.importorskip("huggingface_hub")

REVISION = "0123456789abcdef0123456789abcdef01234567"
HUB_CARD = """---
license: apache-2.0
language: en
tags:
- exotic
pipeline_tag: text-generation
model-index:
- name: tiny
  results: []
---
# tiny gpt

## Intended uses & limitations
For tests only. \x1b[2J\x1b]0;pwned\x07Cleared your screen.

## Training data
Nothing at all.

### Limitations and bias
Knows nothing.

## Citation
none
"""


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """A cache in huggingface_hub's layout holding one GPT under testorg/tiny-gpt, and its source folder."""
    root = tmp_path_factory.mktemp("hub")
    mt.manual_seed(0)
    model = mt.models.build(mt.models.preset("gpt-tiny"))
    source = hf.save_pretrained(model, root / "source", card=HUB_CARD)
    repo = root / "cache" / "models--testorg--tiny-gpt"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    for f in source.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    return root / "cache", source


def logits(model):
    return model(np.array([[1, 2, 3, 4]])).numpy()


def test_a_hub_id_loads_from_the_cache_with_the_folders_logits(hub_cache):
    cache, source = hub_cache
    by_id = hf.load_pretrained("testorg/tiny-gpt", cache_dir=cache, local_files_only=True)
    np.testing.assert_array_equal(logits(by_id), logits(hf.load_pretrained(source)))


def test_an_existing_folder_wins_and_a_missing_id_names_both_tries(hub_cache, tmp_path, monkeypatch):
    cache, source = hub_cache
    monkeypatch.chdir(tmp_path)
    (tmp_path / "testorg").mkdir()
    (tmp_path / "testorg" / "tiny-gpt").symlink_to(source)            # a local folder of the same name
    assert hf.locate("testorg/tiny-gpt", cache_dir=cache, local_files_only=True) == Path("testorg/tiny-gpt")
    with pytest.raises(FileNotFoundError) as e:
        hf.load_pretrained("testorg/absent", cache_dir=cache, local_files_only=True)
    assert f"no such folder {tmp_path / 'testorg' / 'absent'}" in str(e.value)
    assert "as a hub id, 'testorg/absent' is not in the local cache" in str(e.value)
    with pytest.raises(FileNotFoundError, match="not a hub id"):
        hf.locate("./nowhere/at/all")


def test_offline_through_the_environment_in_a_fresh_process(hub_cache):
    """huggingface_hub reads HF_HUB_OFFLINE and HF_HUB_CACHE at import: a fresh process sets them."""
    cache, source = hub_cache
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    code = ("import sys, numpy as np, minitransformer as mt; "
            "m = mt.hf.load_pretrained('testorg/tiny-gpt'); "
            "np.save(sys.stdout.buffer, m(np.array([[1, 2, 3, 4]])).numpy())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    import io
    np.testing.assert_array_equal(np.load(io.BytesIO(out.stdout)), logits(hf.load_pretrained(source)))
    # the command line resolves the id the same way, and info shows what a chooser needs
    info = subprocess.run([sys.executable, "-m", "minitransformer", "info", "testorg/tiny-gpt"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert info.returncode == 0, info.stderr[-2000:]
    assert "license: apache-2.0; pipeline_tag: text-generation" in info.stdout
    assert "## Limitations and bias\nKnows nothing." in info.stdout
    assert "## Training data\nNothing at all." in info.stdout
    assert "Citation" not in info.stdout                 # not what a chooser needs; --card shows it
    assert "\x1b" not in info.stdout and "\x07" not in info.stdout and "Cleared your screen." in info.stdout


def test_our_cards_carry_the_front_matter_hubs_read(tmp_path):
    model = mt.models.build(mt.models.preset("bert-tiny"))
    folder = hf.save_pretrained(model, tmp_path / "bert")
    meta, body = read_front_matter((folder / "README.md").read_text())
    assert meta["library_name"] == "minitransformer" and meta["pipeline_tag"] == "fill-mask"
    assert "minitransformer" in meta["tags"] and "bert" in meta["tags"] and meta["license"] == "unknown"
    assert body.lstrip().startswith("# ")
    headings = [h for h, _ in choosing_sections(body)]
    assert "Intended uses" in headings and "Limitations" in headings


def test_safe_text_removes_escapes_and_controls_but_keeps_layout():
    assert safe_text("a\x1b[31mred\x1b[0m\tb\nc\x00\x9b\x1b]8;;http://x\x1b\\link") == "ared\tb\nclink"


def test_export_round_trips_a_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--steps", "3", "--out", str(run), "--eval-every", "0"]) == 0
    out = tmp_path / "exported"
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert f"wrote {out}: gpt" in capsys.readouterr().out
    ours = checkpoint.load_model(run)
    np.testing.assert_array_equal(logits(hf.load_pretrained(out)), logits(ours))
    assert (out / "tokenizer.json").is_file() and "library_name: minitransformer" in (out / "README.md").read_text()
    transformers = pytest.importorskip("transformers")
    theirs = transformers.GPT2LMHeadModel.from_pretrained(out)
    import torch
    with torch.no_grad():
        t = theirs(torch.tensor([[1, 2, 3, 4]])).logits.numpy()
    np.testing.assert_allclose(t, logits(ours), rtol=1e-4, atol=1e-5)
    assert main(["export", str(run), "--out", str(out)]) == 2          # refuses to write over it
    assert "already holds something" in capsys.readouterr().err
