"""Tokenize a corpus once, into one flat file of token ids read back by memory mapping.

Pre-training reads the same tokens for many epochs; tokenizing them each time would cost
more than the model on a small machine. So the corpus is encoded once into a file:

    header (64 bytes) | id, id, ..., eos | id, ..., eos | ...     one EOS after each document

ids are uint16 when the vocabulary fits in 65,536 ids, else uint32. ``load_tokens`` maps
the file read-only (``np.memmap``): the operating system pages in only what a batch
touches, so a corpus larger than memory works.

The header records a key: a hash of the tokenizer and of every document's text. Asked to
write a file that already exists with the same key, ``tokenize_to_file`` returns at once,
so a second run reuses the first one's work. Documents are encoded with
``disallowed_special=()``: a document that mentions ``"<eos>"`` gets the text, never the
control token.

Header layout (little-endian): magic ``b"MTTOKv1\\0"``, item size (uint16), two reserved
bytes and four of padding, number of tokens (uint64), number of documents (uint64),
the 32-byte SHA-256 key.
"""
from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path
from typing import Iterable, NamedTuple

import numpy as np

from minitransformer.atomic import atomic_file

_MAGIC = b"MTTOKv1\0"
_HEADER = struct.Struct("<8sHH4xQQ32s")
HEADER_BYTES = _HEADER.size          # 64
_FLUSH_TOKENS = 1 << 20              # tokens buffered in memory before a write


class TokenFileInfo(NamedTuple):
    num_tokens: int
    num_documents: int
    dtype: np.dtype
    key: str


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned type that holds every id."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def _key_hasher(tokenizer) -> "hashlib._Hash":
    h = hashlib.sha256(b"minitransformer token file v1\0")
    h.update(tokenizer.fingerprint.encode())
    return h


def _add_document(h, doc: str) -> None:
    # Length-prefixed, so ["ab", "c"] and ["a", "bc"] hash differently.
    data = doc.encode("utf-8", "surrogatepass")
    h.update(len(data).to_bytes(8, "little"))
    h.update(data)


def _normalize_key(key: str) -> str:
    """A 64-hex-digit key as given, any other string hashed to one."""
    if len(key) == 64 and all(c in "0123456789abcdef" for c in key.lower()):
        return key.lower()
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def corpus_key(docs: Iterable[str], tokenizer) -> str:
    """The key a token file of ``docs`` encoded by ``tokenizer`` carries (hex SHA-256)."""
    h = _key_hasher(tokenizer)
    for doc in docs:
        _add_document(h, doc)
    return h.hexdigest()


def token_file_info(path: str | os.PathLike) -> TokenFileInfo:
    """What a token file's header says; raises ValueError for a file that is not one."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"token file {str(path)!r} does not exist; write it with "
                                "tokenize_to_file(docs, tokenizer, path)")
    with open(path, "rb") as f:
        raw = f.read(HEADER_BYTES)
    if len(raw) < HEADER_BYTES or raw[:8] != _MAGIC:
        raise ValueError(f"{path}: not a token file (no {_MAGIC[:7].decode()} header); write it "
                         "with tokenize_to_file")
    _, itemsize, _, n, docs, key = _HEADER.unpack(raw)
    if itemsize not in (2, 4):
        raise ValueError(f"{path}: token size {itemsize} bytes, expected 2 or 4")
    expected = HEADER_BYTES + n * itemsize
    actual = path.stat().st_size
    if actual != expected:
        raise ValueError(f"{path}: {actual} bytes, but its header promises {n} tokens "
                         f"({expected} bytes); the file is truncated or damaged, delete it")
    return TokenFileInfo(n, docs, np.dtype(f"<u{itemsize}"), key.hex())


def load_tokens(path: str | os.PathLike) -> np.memmap:
    """The token ids of a token file as a read-only, memory-mapped 1-D array."""
    info = token_file_info(path)
    if info.num_tokens == 0:
        raise ValueError(f"{path}: holds no tokens")
    return np.memmap(path, dtype=info.dtype, mode="r", offset=HEADER_BYTES,
                     shape=(info.num_tokens,))


def tokenize_to_file(docs: Iterable[str], tokenizer, path: str | os.PathLike,
                     key: str | None = None) -> Path:
    """Encode ``docs`` (with an EOS after each) into the token file ``path``; returns ``path``.

    docs: a list (or any re-iterable collection) of strings, or a one-shot iterator.
    key: the cache key to record and to compare against an existing file (a 64-digit hex
        string is stored as is, any other string is hashed). By default it is
        ``corpus_key(docs, tokenizer)``, computed first when ``docs`` can be iterated twice;
        a one-shot iterator cannot be hashed before it is read, so then the file is always
        rewritten (and its key computed while writing).

    The file is written under a temporary name and renamed into place, so an interrupted
    run never leaves a half-written file behind.
    """
    path = Path(path)
    one_shot = iter(docs) is docs
    if key is None and not one_shot:
        key = corpus_key(docs, tokenizer)
    elif key is not None:
        key = _normalize_key(key)
    if key is not None and path.exists():
        try:
            if token_file_info(path).key == key:
                return path
        except ValueError:
            pass        # not a valid token file: overwrite it

    eos = tokenizer.eos_id
    dtype = token_dtype(tokenizer.vocab_size)
    hasher = _key_hasher(tokenizer) if key is None else None
    path.parent.mkdir(parents=True, exist_ok=True)
    num_tokens = num_docs = 0
    with atomic_file(path, "wb") as f:
        f.write(b"\0" * HEADER_BYTES)           # the real header goes in at the end
        buffer: list[int] = []
        for doc in docs:
            if hasher is not None:
                _add_document(hasher, doc)
            buffer += tokenizer.encode(doc, disallowed_special=())
            buffer.append(eos)
            num_docs += 1
            if len(buffer) >= _FLUSH_TOKENS:
                np.asarray(buffer, dtype=dtype).tofile(f)
                num_tokens += len(buffer)
                buffer = []
        np.asarray(buffer, dtype=dtype).tofile(f)
        num_tokens += len(buffer)
        if num_docs == 0:
            raise ValueError(f"tokenize_to_file: no documents to tokenize for {str(path)!r}; "
                             "the corpus is empty")
        if key is None:
            key = hasher.hexdigest()
        f.seek(0)
        f.write(_HEADER.pack(_MAGIC, dtype.itemsize, 0, num_tokens, num_docs, bytes.fromhex(key)))
    return path
