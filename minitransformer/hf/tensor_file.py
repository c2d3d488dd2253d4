"""The safetensors format: the one reader and writer of tensor files (checkpoints included).

A safetensors file is three things, back to back:

    8 bytes        N, the length of the header, an unsigned little-endian integer
    N bytes        a JSON object: for each tensor its dtype, shape and [begin, end) byte range
                   in the data that follows; optionally "__metadata__" (string -> string)
    the data       every tensor's raw little-endian bytes, row-major, packed without gaps

Nothing in it is executable: reading one only parses JSON and copies bytes, which is why
checkpoints should be shared this way and not as pickles. Published checkpoints are often
bfloat16 or float16; ``read_tensors`` upcasts floating-point tensors to the dtype the model
computes in (bfloat16 is the top half of a float32, so the upcast is a shift, exact).

Writing goes through the ``safetensors`` library (arrays of any device are first copied to
the host) and ``minitransformer.atomic``, so a crash never leaves half a file. Reading is
done here, by hand, for two things the library's NumPy loader cannot do: bfloat16 (NumPy has
no such type) and a damaged file refused with a clear error, never a crash or a read out of
bounds: the header length must fit in the file, the header must be a JSON object of
well-formed entries, every dtype known, every byte range exactly as long as its shape needs,
and the ranges must tile the data with neither gaps nor overlaps nor trailing bytes (as the
reference implementation requires). Every problem is a ``TensorFileError`` naming the file.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy

from minitransformer import atomic, backend
from minitransformer.checkpoint import CheckpointError

# safetensors dtype -> NumPy dtype of the stored bytes (little-endian). NumPy has no BF16,
# so it is read as uint16 and widened to float32 by hand.
DTYPES = {
    "F64": numpy.dtype("<f8"), "F32": numpy.dtype("<f4"), "F16": numpy.dtype("<f2"),
    "BF16": numpy.dtype("<u2"), "I64": numpy.dtype("<i8"), "I32": numpy.dtype("<i4"),
    "I16": numpy.dtype("<i2"), "I8": numpy.dtype("i1"), "U8": numpy.dtype("u1"),
    "BOOL": numpy.dtype("?"),
}
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")
NAME_OF_DTYPE = {numpy.dtype("float64"): "F64", numpy.dtype("float32"): "F32",
                 numpy.dtype("float16"): "F16", numpy.dtype("int64"): "I64",
                 numpy.dtype("int32"): "I32", numpy.dtype("int16"): "I16",
                 numpy.dtype("int8"): "I8", numpy.dtype("uint8"): "U8", numpy.dtype("bool"): "BOOL"}
MAX_HEADER_BYTES = 100_000_000      # the reference implementation's limit


class TensorFileError(CheckpointError):
    """A safetensors file is truncated, corrupted or uses something we cannot read."""


def _fail(path, problem: str, advice: str = "re-download or re-export the checkpoint"):
    raise TensorFileError(f"{path}: not a readable safetensors file: {problem}; {advice}")


def read_header(path) -> tuple[dict, dict, int]:
    """(tensor entries by name, metadata, byte offset of the data) of a safetensors file.

    Every entry is checked; see the module docstring for what a valid file is.
    """
    path = Path(path)
    size = path.stat().st_size
    if size < 8:
        _fail(path, f"is {size} bytes long, too short to be a safetensors file (8-byte header length first)")
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n > size - 8 or n > MAX_HEADER_BYTES:
            _fail(path, f"declares a {n:,}-byte header but the file holds only {size - 8:,} bytes after the "
                        "length field (truncated, or not a safetensors file)")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        _fail(path, f"its header is not valid UTF-8 JSON ({type(e).__name__}: {str(e)[:80]})")
    if not isinstance(header, dict):
        _fail(path, f"its header is a JSON {type(header).__name__}, expected an object of tensors")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        _fail(path, "its __metadata__ must be an object of strings")

    data_start, data_len = 8 + n, size - 8 - n
    entries = {}
    for name, e in header.items():
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            _fail(path, f"tensor {name!r} needs exactly dtype, shape and data_offsets, got {str(e)[:80]}")
        dtype, shape, offsets = e["dtype"], e["shape"], e["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPES:
            _fail(path, f"tensor {name!r} has dtype {str(dtype)[:20]!r}, which is not supported (supported: "
                        f"{', '.join(DTYPES)})", "convert it to float32, float16 or bfloat16")
        if (not isinstance(shape, list)
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
            _fail(path, f"tensor {name!r} has shape {str(shape)[:40]}, expected a list of non-negative integers")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1]):
            _fail(path, f"tensor {name!r} has data_offsets {str(offsets)[:40]}, expected [begin, end] with "
                        "0 <= begin <= end")
        need = math.prod(shape) * DTYPES[dtype].itemsize
        if offsets[1] - offsets[0] != need:
            _fail(path, f"tensor {name!r} ({dtype}, shape {shape}) needs {need:,} bytes but its data_offsets "
                        f"span {offsets[1] - offsets[0]:,}")
        if offsets[1] > data_len:
            _fail(path, f"tensor {name!r} ends at byte {offsets[1]:,} of the data, but the file holds only "
                        f"{data_len:,} data bytes (truncated)")
        entries[name] = (dtype, tuple(shape), offsets[0], offsets[1])

    position = 0
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda kv: (kv[1][2], kv[1][3])):
        if begin != position:
            what = "overlaps the tensor before it" if begin < position else f"leaves a gap at byte {position:,}"
            _fail(path, f"tensor {name!r} starts at byte {begin:,} and {what}")
        position = end
    if position != data_len:
        _fail(path, f"the tensors cover {position:,} bytes but {data_len:,} follow the header "
                    "(trailing bytes: a corrupted or mis-assembled file)")
    return entries, metadata, data_start


def _decode(raw: numpy.ndarray, dtype: str, shape: tuple, float_dtype) -> numpy.ndarray:
    """The array stored in ``raw`` (bytes), floats converted to ``float_dtype`` (a copy)."""
    stored = raw.view(DTYPES[dtype]).reshape(shape)
    if dtype == "BF16":
        # bfloat16 = the upper 16 bits of a float32: shift them back into place.
        stored = (stored.astype(numpy.uint32) << 16).view(numpy.float32)
    if dtype in FLOAT_DTYPES and float_dtype is not None:
        return stored.astype(float_dtype)
    return stored.astype(stored.dtype.newbyteorder("="))


def read_tensors(path, float_dtype="float32", names=None) -> dict:
    """Read a safetensors file into NumPy arrays.

    float_dtype: every floating-point tensor is converted to it (float16/bfloat16 upcast
        exactly); None keeps the stored precision (bfloat16 becomes float32).
    names: read only these tensors (all by default); a name the file lacks is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such safetensors file: {path}")
    entries, _, data_start = read_header(path)
    if names is not None:
        absent = [n for n in names if n not in entries]
        if absent:
            _fail(path, f"does not hold tensor(s) {', '.join(absent[:5])}", "check the shard index")
        entries = {n: entries[n] for n in names}
    float_dtype = None if float_dtype is None else numpy.dtype(float_dtype)
    out = {}
    if not entries:
        return out
    if os.path.getsize(path) == data_start:     # only empty tensors: nothing to map
        empty = numpy.zeros(0, numpy.uint8)
        return {n: _decode(empty, d, s, float_dtype) for n, (d, s, _, _) in entries.items()}
    data = numpy.memmap(path, dtype=numpy.uint8, mode="r", offset=data_start)
    try:
        for name, (dtype, shape, begin, end) in entries.items():
            out[name] = _decode(data[begin:end], dtype, shape, float_dtype)
    finally:
        del data
    return out


def write_tensors(path, arrays: dict, metadata: dict | None = None) -> None:
    """Write named arrays (NumPy or CuPy) as a safetensors file, atomically and fsynced.

    The ``safetensors`` library lays the file out (header padded so that every tensor starts
    8-byte aligned); "format": "pt" in the metadata, the default, tells ``transformers`` the
    layout is PyTorch's.
    """
    from safetensors.numpy import save

    host = {}
    for name, value in arrays.items():
        a = numpy.array(backend.to_numpy(value), order="C", copy=None)   # 0-d stays 0-d, unlike ascontiguousarray
        if a.dtype not in NAME_OF_DTYPE:
            raise TypeError(f"write_tensors: {name} has dtype {a.dtype}, which safetensors cannot hold here "
                            f"(it holds {', '.join(sorted(map(str, NAME_OF_DTYPE)))}); cast it to float32")
        host[name] = a
    meta = {str(k): str(v) for k, v in (metadata or {"format": "pt"}).items()}
    atomic.write_bytes(path, save(host, metadata=meta))
