"""The safetensors reader and writer: exact round trips, exact upcasts, and damaged files
refused with a clear error (never another exception, never a crash)."""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minitransformer.checkpoint import CheckpointError
from minitransformer.hf import TensorFileError, read_tensors, write_tensors

safetensors_numpy = pytest.importorskip("safetensors.numpy")
torch = pytest.importorskip("torch")


def sample_arrays(rng):
    return {
        "w": rng.standard_normal((3, 5)).astype(np.float32),
        "b": rng.standard_normal(4),                                  # float64
        "h": rng.standard_normal((2, 2)).astype(np.float16),
        "ids": rng.integers(-5, 5, (6,)),
        "flags": rng.random(3) > 0.5,
        "empty": np.zeros((0, 3), np.float32),
        "scalar": np.array(2.5, np.float32),
    }


def test_written_files_read_back_exactly_here_and_in_safetensors(tmp_path):
    arrays = sample_arrays(np.random.default_rng(0))
    path = tmp_path / "a.safetensors"
    write_tensors(path, arrays)
    theirs = safetensors_numpy.load_file(str(path))
    ours = read_tensors(path, float_dtype=None)
    for name, a in arrays.items():
        for got in (theirs[name], ours[name]):
            assert got.dtype == a.dtype and got.shape == a.shape
            np.testing.assert_array_equal(got, a)
    # Written by the reference implementation, read here.
    ref = tmp_path / "ref.safetensors"
    safetensors_numpy.save_file(arrays, str(ref))
    back = read_tensors(ref, float_dtype=None)
    for name, a in arrays.items():
        np.testing.assert_array_equal(back[name], a)


def test_half_precision_tensors_are_upcast_exactly(tmp_path):
    from safetensors.torch import save_file

    x = torch.randn(4, 7, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "half.safetensors"
    save_file({"bf": x.to(torch.bfloat16), "f16": x.to(torch.float16)}, str(path))
    for dtype in ("float32", "float64"):
        got = read_tensors(path, float_dtype=dtype)
        assert got["bf"].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got["bf"], x.to(torch.bfloat16).to(torch.float64).numpy().astype(dtype))
        np.testing.assert_array_equal(got["f16"], x.to(torch.float16).to(torch.float64).numpy().astype(dtype))


def _file(header: dict, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + data


@pytest.mark.parametrize("content, fragment", [
    (b"", "too short"),
    (b"\xff" * 8 + b"{}", "header"),
    ((10).to_bytes(8, "little") + b"{not json}", "not valid UTF-8 JSON"),
    ((2).to_bytes(8, "little") + b"[]", "expected an object"),
    (_file({"x": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8), "C64"),
    (_file({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8), "truncated"),
    (_file({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}, b"\0" * 16), "needs 12 bytes"),
    (_file({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8), "trailing"),
    (_file({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
            "y": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]}}, b"\0" * 8), "overlaps"),
    (_file({"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4), "shape"),
    (_file({"x": {"dtype": "F32", "shape": [1]}}, b"\0" * 4), "data_offsets"),
])
def test_damaged_files_are_refused_with_a_clear_error(tmp_path, content, fragment):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(TensorFileError, match=fragment) as e:
        read_tensors(path)
    assert str(path) in str(e.value) and isinstance(e.value, (CheckpointError, ValueError))


def _valid_file(tmp_path) -> bytes:
    path = tmp_path / "valid.safetensors"
    rng = np.random.default_rng(1)
    write_tensors(path, {"a": rng.standard_normal((2, 3)).astype(np.float32),
                         "b": rng.integers(0, 9, (4,)).astype(np.int64),
                         "c": rng.standard_normal(3).astype(np.float16)})
    return path.read_bytes()


@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_fuzzed_files_load_correctly_or_raise_tensor_file_error(tmp_path_factory, data):
    """Flip bytes, truncate, extend or rewrite the header of a valid file: the reader returns
    what the reference implementation returns, and raises TensorFileError exactly when the
    reference refuses the file too (a reader that refused everything would fail here)."""
    tmp = tmp_path_factory.mktemp("fuzz")
    raw = bytearray(_valid_file(tmp))
    n = int.from_bytes(raw[:8], "little")
    kind = data.draw(st.sampled_from(["flip", "truncate", "extend", "header", "length"]))
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] = data.draw(st.integers(0, 255))
    elif kind == "truncate":
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    elif kind == "extend":
        raw += bytes(data.draw(st.binary(min_size=1, max_size=16)))
    elif kind == "header":
        header = json.loads(raw[8:8 + n])
        name = data.draw(st.sampled_from(sorted(header)))
        field = data.draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        junk = data.draw(st.one_of(st.integers(-3, 40), st.text(max_size=4), st.none(),
                                   st.lists(st.integers(-2, 40), max_size=3), st.sampled_from(["BF16", "F64", "U8"])))
        if isinstance(header[name], dict):
            header[name][field] = junk
        text = json.dumps(header).encode()
        raw = bytearray(len(text).to_bytes(8, "little") + text + raw[8 + n:])
    else:
        raw[:8] = data.draw(st.integers(0, 2 ** 64 - 1)).to_bytes(8, "little")
    path = tmp / "fuzzed.safetensors"
    path.write_bytes(bytes(raw))
    try:
        ours = read_tensors(path, float_dtype=None)
    except TensorFileError as e:
        try:
            safetensors_numpy.load_file(str(path))
        except Exception:                                 # the reference refuses it as well
            return
        pytest.fail(f"a {kind} fuzz gave a file the reference reads, but it was refused here: {e}")
    theirs = safetensors_numpy.load_file(str(path))      # what we accepted, the reference reads too
    assert ours.keys() == theirs.keys()
    for k in ours:
        np.testing.assert_array_equal(ours[k], theirs[k])


def test_checkpoint_arrays_use_the_same_reader_writer_and_errors(tmp_path):
    from minitransformer import checkpoint

    arrays = sample_arrays(np.random.default_rng(2))
    path = tmp_path / "c.safetensors"
    checkpoint.save_arrays(path, arrays)
    back = checkpoint.load_arrays(path)
    for name, a in arrays.items():
        assert back[name].dtype == a.dtype and back[name].shape == a.shape
        np.testing.assert_array_equal(back[name], a)
    before = path.read_bytes()
    with pytest.raises(TypeError, match="z has dtype complex64"):
        write_tensors(path, {"w": arrays["w"], "z": np.zeros(2, np.complex64)})
    assert path.read_bytes() == before                    # a refused write leaves the old file
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((10).to_bytes(8, "little") + b"{not json}")
    errors = []
    for read in (read_tensors, checkpoint.load_arrays):
        with pytest.raises(TensorFileError, match="not a readable safetensors file") as e:
            read(bad)
        errors.append(str(e.value))
    assert errors[0] == errors[1]


def test_bfloat16_checkpoint_arrays_load_as_float32(tmp_path):
    from safetensors.torch import save_file

    from minitransformer import checkpoint

    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    path = tmp_path / "bf.safetensors"
    save_file({"x": x}, str(path))
    got = checkpoint.load_arrays(path)["x"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, x.to(torch.float32).numpy())
