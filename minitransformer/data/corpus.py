"""Where the text comes from: files, folders, JSON lines, and a corpus every machine has.

A *document* is one string; pre-training streams join documents with an end-of-sequence
token between them, so the model learns where one text stops and the next begins.

- ``read_documents(paths)`` reads ``.txt`` files (a whole file is one document: a book or
  an article stays in one piece), ``.jsonl`` files (one JSON object per line, its ``"text"``
  field is a document), either gzipped (``.txt.gz``, ``.jsonl.gz``), and folders of them,
  recursively, in sorted order. A file named explicitly with another suffix is read as
  text. Empty documents are skipped.
- ``default_corpus()`` needs no download: it is the docstrings of the Python standard
  library installed on this machine (about 1.8 MB of English prose and examples, one
  document per docstring), read from the source files with ``ast`` (nothing is imported).
  Its exact content depends on the Python version.
- ``split_documents(docs, val_fraction)`` puts each document on the validation side when a
  hash of its text falls below ``val_fraction``: the split never depends on the order or on
  the other documents, and duplicate documents land on the same side, so they cannot leak
  from training into validation.
"""
from __future__ import annotations

import ast
import gzip
import hashlib
import json
import os
import sys
import sysconfig
import warnings
from pathlib import Path
from typing import Iterable, Iterator

from minitransformer import atomic

DOCUMENT_SUFFIXES = (".txt", ".jsonl", ".txt.gz", ".jsonl.gz")

# Parts of the standard library that are not documentation of it: test suites (one-line
# "Test that ..." docstrings) and installed third-party packages.
_SKIPPED_FOLDERS = {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"}


def cache_dir() -> Path:
    """Folder for derived files that can be rebuilt (token files, the parsed default corpus):
    ``$MINITRANSFORMER_CACHE``, else ``$XDG_CACHE_HOME/minitransformer``, else
    ``~/.cache/minitransformer``."""
    if os.environ.get("MINITRANSFORMER_CACHE"):
        return Path(os.environ["MINITRANSFORMER_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "minitransformer"


# ---------------------------------------------------------------------------------------
# Files and folders
# ---------------------------------------------------------------------------------------

def _suffix_kind(path: Path) -> str | None:
    name = path.name.lower()
    for kind in ("jsonl", "txt"):
        if name.endswith(f".{kind}") or name.endswith(f".{kind}.gz"):
            return kind
    return None


def corpus_files(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """The files ``read_documents`` will read, in order; raises for a missing path or a
    folder without any ``.txt``/``.jsonl`` file."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise ValueError("no corpus paths given; pass at least one .txt/.jsonl file or folder")
    files: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"corpus path {str(p)!r} does not exist; expected a .txt or "
                                    ".jsonl file or a folder of them")
        if p.is_dir():
            found = []
            for root, dirs, names in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += [Path(root) / n for n in sorted(names)
                          if not n.startswith(".") and _suffix_kind(Path(n))]
            if not found:
                raise ValueError(f"corpus folder {str(p)!r} holds no {', '.join(DOCUMENT_SUFFIXES)} "
                                 "files")
            files += found
        else:
            files.append(p)
    return files


def _open_text(path: Path):
    # Undecodable bytes become U+FFFD: one bad byte should not stop a large corpus.
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, "r", encoding="utf-8", errors="replace")


def json_lines(lines: Iterable[str], source, what: str, error=ValueError) -> Iterator[tuple[int, object]]:
    """(line number, parsed value) for each non-blank line of a JSON-lines file.

    A line that is not JSON raises ``error`` naming ``source``, the line and ``what`` the
    file is (e.g. "a .jsonl corpus"); checking the values is the caller's job.
    """
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as e:
            raise error(f"{source}:{lineno}: not valid JSON ({e.msg}); each line of {what} must be "
                        "one JSON object") from None


def _documents_of(path: Path) -> Iterator[str]:
    if _suffix_kind(path) != "jsonl":
        with _open_text(path) as f:
            text = f.read()
        if text.strip():
            yield text
        return
    with _open_text(path) as f:
        for lineno, record in json_lines(f, path, "a .jsonl corpus"):
            if not isinstance(record, dict) or "text" not in record:
                keys = sorted(record)[:8] if isinstance(record, dict) else type(record).__name__
                raise ValueError(f"{path}:{lineno}: no 'text' field (found {keys}); each line must "
                                 "be a JSON object with a 'text' string")
            text = record["text"]
            if not isinstance(text, str):
                raise ValueError(f"{path}:{lineno}: 'text' is a {type(text).__name__}, expected a string")
            if text.strip():
                yield text


def read_documents(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> Iterator[str]:
    """An iterator over the documents in ``paths`` (files or folders; see the module doc).

    Missing paths raise at once; a corpus with no non-empty document raises ValueError when
    the iterator is exhausted.
    """
    files = corpus_files(paths)

    def documents():
        count = 0
        for f in files:
            for doc in _documents_of(f):
                count += 1
                yield doc
        if count == 0:
            raise ValueError(f"the corpus is empty: {len(files)} file(s) "
                             f"({', '.join(str(f) for f in files[:3])}{', ...' if len(files) > 3 else ''}) "
                             "hold no non-empty document")

    return documents()


# ---------------------------------------------------------------------------------------
# The built-in corpus: standard-library docstrings
# ---------------------------------------------------------------------------------------

_memo: dict[str, list[str]] = {}


def stdlib_source_files() -> tuple[Path, list[Path]]:
    """The standard library's folder and its ``.py`` files (tests and site-packages skipped),
    sorted by relative path."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_FOLDERS and not d.startswith("."))
        files += [Path(folder) / n for n in names if n.endswith(".py")]
    files.sort(key=lambda p: p.relative_to(root).as_posix())
    return root, files


def docstrings(source: bytes | str) -> list[str]:
    """Docstrings of a module's source, in source order: the module's, then each class's
    and function's where it is defined (nested ones included), cleaned of indentation."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # e.g. invalid escape sequences in old code
        tree = ast.parse(source)
    found = []

    def visit(node):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc and doc.strip():
                found.append(doc)
        for child in ast.iter_child_nodes(node):
            # Only statements hold definitions; skipping expressions keeps the walk cheap.
            if isinstance(child, (ast.stmt, ast.excepthandler, ast.match_case)):
                visit(child)

    visit(tree)
    return found


def default_corpus() -> list[str]:
    """The docstrings of the local Python standard library, one document each, in a fixed
    order (files sorted by path, then source order). Parsed once, then served from memory
    and from a file in ``cache_dir()`` keyed by the source files' names, sizes and times."""
    root, files = stdlib_source_files()
    if not files:
        raise FileNotFoundError(f"no Python source files under {str(root)!r}: this Python ships "
                                "its standard library without sources; pass a corpus with --data")
    signature = hashlib.sha256(repr(sys.version_info).encode())
    for f in files:
        st = f.stat()
        signature.update(f"{f.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    key = signature.hexdigest()[:20]
    if key in _memo:
        return list(_memo[key])
    cached = cache_dir() / f"default_corpus-{key}.json"
    docs = None
    try:
        docs = json.loads(cached.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    if not (isinstance(docs, list) and all(isinstance(d, str) for d in docs)):
        docs = []
        for f in files:
            try:
                docs += docstrings(f.read_bytes())
            except (SyntaxError, ValueError):
                continue    # a file that is not valid Python for this interpreter
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_text(cached, json.dumps(docs, ensure_ascii=False))
        except OSError:
            pass            # an unwritable cache only costs a re-parse next time
    _memo[key] = docs
    return list(docs)


# ---------------------------------------------------------------------------------------
# Train / validation split
# ---------------------------------------------------------------------------------------

def document_hash_fraction(doc: str, salt: str = "") -> float:
    """A number in [0, 1) fixed by the document's text (and ``salt``)."""
    digest = hashlib.blake2b((salt + "\0" + doc).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


def is_validation(doc: str, val_fraction: float, salt: str = "") -> bool:
    """Whether ``split_documents`` puts ``doc`` on the validation side (for streaming)."""
    return document_hash_fraction(doc, salt) < val_fraction


def split_documents(docs: Iterable[str], val_fraction: float = 0.01,
                    salt: str = "") -> tuple[list[str], list[str]]:
    """(train, validation) lists, by document hash; order within each side is kept.

    About ``val_fraction`` of the documents go to validation; change ``salt`` for a
    different split of the same corpus.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    train, val = [], []
    for doc in docs:
        (val if is_validation(doc, val_fraction, salt) else train).append(doc)
    return train, val
