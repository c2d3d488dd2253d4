"""Reading documents for curation: .txt and .jsonl files (optionally gzipped), streamed.

Curation must hand every input field back out untouched (ids, URLs, timestamps), and must
say *where* a bad line is, so it reads records itself rather than only texts:

* a ``.jsonl`` line holds one JSON object with a string field ``text`` (the name is
  configurable; the output always calls it ``text``); every other field rides along
  unchanged. A line that is not such an object
  is *malformed*: it is counted and its line number kept for the report, or, with
  ``strict=True``, stops the run with a message naming the file and line;
* any other file (``.txt``, or a named file of another kind) is one document
  (``split="file"``), or one per blank-line-separated paragraph (``"paragraph"``) or per line
  (``"line"``). Its record is ``{"id": "PATH", "text": ...}`` (``"PATH:LINE"`` when
  split). Bytes that are not UTF-8 are replaced by U+FFFD and reported (with
  ``strict=True`` they stop the run).

Files and folders are found as ``pretrain --data`` finds them (``corpus.corpus_files``), so
a curated corpus is read in the same order as its source would be. Files are read line by
line, so memory does not grow with the size of a file (except for one ``.txt`` document in
``"file"`` mode, which is held whole). A file that cannot be read at all is always an error
that names its path.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import os
from pathlib import Path
from typing import Iterator

from ..corpus import corpus_files

TXT_SPLITS = ("file", "paragraph", "line")


@dataclasses.dataclass
class Document:
    """One document on its way through the pipeline."""
    record: dict   # every input field, in order; the text field holds None (see .text)
    text: str      # the current text, changed by the stages that edit it
    source: str    # the file it came from
    line: int      # 1-based line of the record (a .txt document: its first line)

    @property
    def location(self) -> str:
        return f"{self.source}:{self.line}"

    def output(self, text_field: str = "text") -> dict:
        """The record to write: every field in place, the text field renamed "text" (what
        ``pretrain --data`` reads) and holding the cleaned text. The raw text is not kept:
        it may hold the personal data the pipeline scrubbed."""
        return {("text" if k == text_field else k): (self.text if k == text_field else v)
                for k, v in self.record.items()}


@dataclasses.dataclass(frozen=True)
class InputIssue:
    """A line that could not be read as a document, or was read with repairs."""
    source: str
    line: int
    problem: str

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def expand_inputs(paths, exclude: str | Path | None = None) -> list[Path]:
    """The files to read, in the order ``pretrain --data`` would read them (``corpus_files``),
    less those inside ``exclude`` (the output folder, so a rerun never reads its own output)."""
    files = corpus_files([paths] if isinstance(paths, (str, os.PathLike)) else list(paths))
    if exclude is None:
        return files
    skip = Path(exclude).resolve()
    kept = [p for p in files if skip not in p.resolve().parents]
    if not kept:
        raise ValueError(f"every input lies inside the output folder {exclude}; write the output "
                         "somewhere else")
    return kept


def _encodable(record: dict) -> bool:
    """Whether ``record`` can be written back as UTF-8 (JSON escapes can decode to lone
    surrogates, which cannot)."""
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _is_jsonl(path: Path) -> bool:
    return path.name.lower().endswith((".jsonl", ".jsonl.gz"))


class RecordReader:
    """Iterates the documents of a list of files, keeping count of what it read and skipped."""

    def __init__(self, paths, *, text_field: str = "text", txt_split: str = "file",
                 strict: bool = False, exclude: str | Path | None = None,
                 max_issues_kept: int = 100):
        if txt_split not in TXT_SPLITS:
            raise ValueError(f"txt_split must be one of {', '.join(TXT_SPLITS)}, "
                             f"got {txt_split!r}")
        self.files = expand_inputs(paths, exclude)
        self.text_field = text_field
        self.txt_split = txt_split
        self.strict = strict
        self.max_issues_kept = max_issues_kept
        self.issues: list[InputIssue] = []  # the first max_issues_kept of them
        self.n_issues = 0
        self.n_documents = 0
        self.bytes_read = 0                 # uncompressed bytes, for progress and speed

    @property
    def total_bytes(self) -> int | None:
        """Bytes the files hold, when that is known without decompressing them."""
        if any(p.name.lower().endswith(".gz") for p in self.files):
            return None
        return sum(os.path.getsize(p) for p in self.files)

    def summary(self) -> dict:
        return {"files": [str(p) for p in self.files], "documents": self.n_documents,
                "bytes": self.bytes_read, "malformed": self.n_issues,
                "malformed_lines": [i.as_dict() for i in self.issues]}

    def _issue(self, source: str, line: int, problem: str) -> None:
        if self.strict:
            raise ValueError(f"{source}:{line}: {problem}; fix or remove that line, or run "
                             "without --strict (strict=False) to skip such lines and count them "
                             "in the report")
        self.n_issues += 1
        if len(self.issues) < self.max_issues_kept:
            self.issues.append(InputIssue(source, line, problem))

    def __iter__(self) -> Iterator[Document]:
        for path in self.files:
            try:
                opener = gzip.open if path.name.lower().endswith(".gz") else open
                with opener(path, "rb") as f:
                    if _is_jsonl(path):
                        yield from self._jsonl(f, str(path))
                    else:
                        yield from self._txt(f, str(path))
            except (OSError, EOFError) as e:
                # gzip raises OSError (BadGzipFile) or EOFError on a corrupt or cut-off file.
                reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
                raise ValueError(f"cannot read {path}: {reason}; check that the file "
                                 "exists, is readable and is not truncated") from None

    def _jsonl(self, f, source: str) -> Iterator[Document]:
        for number, raw in enumerate(f, 1):
            self.bytes_read += len(raw)
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
                self._issue(source, number, f"not valid JSON ({e})")
                continue
            if not isinstance(record, dict):
                self._issue(source, number, f"expected a JSON object, got {type(record).__name__}")
                continue
            text = record.get(self.text_field)
            if not isinstance(text, str):
                got = (type(text).__name__ if self.text_field in record
                       else f"no such field (it has {', '.join(sorted(record)[:8]) or 'none'})")
                self._issue(source, number, f"expected a string field {self.text_field!r}, got {got}")
                continue
            if b"\\u" in raw and not _encodable(record):
                self._issue(source, number, "a string holds a lone surrogate escape (\\ud800-\\udfff), "
                            "which is not text and cannot be written as UTF-8")
                continue
            record[self.text_field] = None  # the text travels in Document.text only
            self.n_documents += 1
            yield Document(record, text, source, number)

    def _decode(self, raw: bytes, source: str, number: int) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self._issue(source, number, "invalid UTF-8, replaced by U+FFFD")
            return raw.decode("utf-8", "replace")

    def _txt(self, f, source: str) -> Iterator[Document]:
        def document(text: str, first: int) -> Document:
            self.n_documents += 1
            doc_id = source if self.txt_split == "file" else f"{source}:{first}"
            return Document({"id": doc_id, self.text_field: None}, text, source, first)

        if self.txt_split == "file":
            raw = f.read()
            self.bytes_read += len(raw)
            yield document(self._decode(raw, source, 1), 1)
            return
        lines: list[str] = []
        first = 0
        for number, raw in enumerate(f, 1):
            self.bytes_read += len(raw)
            line = self._decode(raw, source, number)
            if not line.strip():  # a blank line ends a paragraph
                if lines:
                    yield document("".join(lines), first)
                    lines = []
                continue
            if not lines:
                first = number
            lines.append(line)
            if self.txt_split == "line":
                yield document(line, number)
                lines = []
        if lines:
            yield document("".join(lines), first)
