"""Corpora (files, folders, JSON lines, the built-in stdlib corpus), the split, token files."""
from __future__ import annotations

import gzip
import json
import math
import os

import numpy as np
import pytest

from minitransformer.data import (
    BPETokenizer,
    corpus_key,
    default_corpus,
    docstrings,
    load_tokens,
    read_documents,
    split_documents,
    token_file_info,
    tokenize_to_file,
)
from minitransformer.data import corpus as corpus_module


@pytest.fixture(scope="module")
def tok():
    return BPETokenizer.train(["the cat sat on the mat. " * 20, "a dog <eos> ate 42 bones"], 400)


# ---------------------------------------------------------------------------------------
# Reading documents
# ---------------------------------------------------------------------------------------

def test_txt_files_folders_and_jsonl(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "two.txt").write_text("second file\n\nstill the second document", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first document", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    (tmp_path / "c.jsonl").write_text('{"text": "line one"}\n\n{"text": "line two", "id": 7}\n',
                                      encoding="utf-8")
    (tmp_path / "ignored.csv").write_text("not, a, document", encoding="utf-8")
    with gzip.open(tmp_path / "d.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"text": "zipped"}) + "\n")
    # Sorted walk: a.txt, c.jsonl, d.jsonl.gz, empty.txt (skipped), then folder b.
    assert list(read_documents(tmp_path)) == [
        "first document", "line one", "line two", "zipped",
        "second file\n\nstill the second document"]
    # A file named explicitly is read whatever its suffix; a str path works as one path.
    assert list(read_documents([tmp_path / "ignored.csv", str(tmp_path / "a.txt")])) == [
        "not, a, document", "first document"]


def test_missing_path_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.txt' does not exist"):
        read_documents([tmp_path / "nowhere.txt"])


def test_empty_corpus_is_an_error(tmp_path):
    (tmp_path / "blank.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="corpus is empty.*blank.txt"):
        list(read_documents(tmp_path / "blank.txt"))
    (tmp_path / "sub").mkdir()
    with pytest.raises(ValueError, match="holds no .txt"):
        read_documents(tmp_path / "sub")
    with pytest.raises(ValueError, match="no corpus paths"):
        read_documents([])


@pytest.mark.parametrize("line, match", [
    ('{"content": "x"}', r"data.jsonl:2: no 'text' field \(found \['content'\]\)"),
    ('[1, 2]', r"data.jsonl:2: no 'text' field"),
    ('{"text": 5}', r"data.jsonl:2: 'text' is a int"),
    ('{"text": ', r"data.jsonl:2: not valid JSON"),
])
def test_jsonl_errors_name_file_and_line(tmp_path, line, match):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "fine"}\n' + line + "\n", encoding="utf-8")
    docs = read_documents(path)
    assert next(docs) == "fine"
    with pytest.raises(ValueError, match=match):
        next(docs)


# ---------------------------------------------------------------------------------------
# The built-in corpus
# ---------------------------------------------------------------------------------------

def test_docstrings_in_source_order():
    source = '''
"""Module doc."""
import os

def f():
    """F doc.

    Example:
        indented
    """
    def inner():
        """Inner doc."""

class C:
    """C doc."""
    async def m(self):
        """M doc."""
    x = "not a docstring"

if os.name:
    def g():
        """G doc."""
try:
    pass
except ImportError:
    def h():
        "H doc."
lam = lambda: "no"
'''
    assert docstrings(source) == ["Module doc.", "F doc.\n\nExample:\n    indented", "Inner doc.",
                                  "C doc.", "M doc.", "G doc.", "H doc."]


def test_default_corpus_is_the_stdlib_docstrings(tmp_path, monkeypatch):
    monkeypatch.setenv("MINITRANSFORMER_CACHE", str(tmp_path))
    monkeypatch.setattr(corpus_module, "_memo", {})
    docs = default_corpus()                          # parsed from source
    assert len(docs) > 3000 and sum(map(len, docs)) > 1_000_000
    assert all(isinstance(d, str) and d.strip() for d in docs)
    assert any(d.startswith("JSON (JavaScript Object Notation)") for d in docs)   # json/__init__.py
    root, files = corpus_module.stdlib_source_files()
    skipped = {"test", "tests", "idle_test", "site-packages"}
    assert files and not any(skipped & set(f.relative_to(root).parts) for f in files)
    assert list(tmp_path.glob("default_corpus-*.json")), "the parsed corpus is cached on disk"
    monkeypatch.setattr(corpus_module, "_memo", {})
    assert default_corpus() == docs                  # read back from the disk cache


# ---------------------------------------------------------------------------------------
# Train / validation split
# ---------------------------------------------------------------------------------------

def test_split_by_hash_is_stable_and_near_the_fraction():
    docs = [f"document number {i}" for i in range(20000)]
    train, val = split_documents(docs, val_fraction=0.1)
    assert len(train) + len(val) == len(docs)
    in_val = set(val)
    assert train == [d for d in docs if d not in in_val]        # order kept
    # Binomial(20000, 0.1): sd 42; 5 sd either side.
    assert abs(len(val) - 2000) < 5 * math.sqrt(20000 * 0.1 * 0.9)
    # Independent of order and of the other documents; duplicates stay together.
    train2, val2 = split_documents(list(reversed(docs))[:5000] + [val[0]] * 3, val_fraction=0.1)
    assert set(val2) <= set(val) and val2.count(val[0]) == 3
    other_train, other_val = split_documents(docs, val_fraction=0.1, salt="another split")
    assert set(other_val) != set(val)
    with pytest.raises(ValueError, match="val_fraction must be in"):
        split_documents(docs, val_fraction=1.0)


# ---------------------------------------------------------------------------------------
# Token files
# ---------------------------------------------------------------------------------------

def test_token_file_round_trip(tmp_path, tok):
    docs = ["the cat sat", "on the <eos> mat", "a dog"]
    path = tokenize_to_file(docs, tok, tmp_path / "corpus.tokens")
    tokens = load_tokens(path)
    assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint16 and not tokens.flags.writeable
    expected = []
    for d in docs:
        expected += tok.encode(d, disallowed_special=()) + [tok.eos_id]
    assert tokens.tolist() == expected
    info = token_file_info(path)
    assert (info.num_tokens, info.num_documents, info.key) == (len(expected), 3, corpus_key(docs, tok))
    # "<eos>" written in a document is text, not the control token.
    assert tokens.tolist().count(tok.eos_id) == 3


def test_token_file_is_reused_when_key_matches(tmp_path, tok, monkeypatch):
    docs = ["the cat sat", "on the mat"]
    path = tokenize_to_file(docs, tok, tmp_path / "c.tokens")
    stamp = path.stat().st_mtime_ns
    calls = []
    original = tok.encode
    monkeypatch.setattr(tok, "encode", lambda *a, **k: calls.append(1) or original(*a, **k))
    assert tokenize_to_file(list(docs), tok, path) == path
    assert not calls and path.stat().st_mtime_ns == stamp
    tokenize_to_file(docs + ["a dog"], tok, path)              # different corpus: rewritten
    assert calls and token_file_info(path).num_documents == 3
    calls.clear()
    tokenize_to_file(iter(docs), tok, path)                    # one-shot iterator: always written
    assert calls and token_file_info(path).key == corpus_key(docs, tok)


def test_uint32_for_large_vocabularies(tmp_path):
    class Huge:
        vocab_size, eos_id, fingerprint = 70000, 69999, "huge"

        def encode(self, text, disallowed_special=()):
            return [ord(c) + 65536 for c in text]

    tokens = load_tokens(tokenize_to_file(["ab"], Huge(), tmp_path / "h.tokens"))
    assert tokens.dtype == np.uint32 and tokens.tolist() == [65633, 65634, 69999]


def test_token_file_errors(tmp_path, tok):
    with pytest.raises(ValueError, match="no documents to tokenize"):
        tokenize_to_file([], tok, tmp_path / "empty.tokens")
    assert not list(tmp_path.iterdir()), "no partial file is left behind"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokens(tmp_path / "missing.tokens")
    (tmp_path / "junk.tokens").write_bytes(b"hello world" * 10)
    with pytest.raises(ValueError, match="not a token file"):
        load_tokens(tmp_path / "junk.tokens")
    path = tokenize_to_file(["the cat sat"], tok, tmp_path / "t.tokens")
    with open(path, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ValueError, match="truncated or damaged"):
        load_tokens(path)
    assert os.path.getsize(path) > 64
