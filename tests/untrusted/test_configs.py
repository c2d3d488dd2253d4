"""Folders from elsewhere: a config.json with absurd sizes, wrong types or missing fields gets
a correct load or one clear error from the library (a ValueError: the memory refusal, a bad
field, an unsupported config), never a crash, a hang or the kernel's out-of-memory kill."""
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer import checkpoint, hf, limits

MICRO = {"gpt": mt.models.GPTConfig(vocab_size=40, n_positions=16, n_embd=8, n_layer=1, n_head=2),
         "bert": mt.models.BERTConfig(vocab_size=40, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=16, max_position_embeddings=16),
         "t5": mt.models.T5Config(vocab_size=40, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2,
                                  relative_attention_num_buckets=8, relative_attention_max_distance=16)}

# Values a hostile or broken config.json can hold.
VALUES = st.one_of(
    st.integers(-3, 3), st.integers(10**5, 10**15), st.sampled_from([2**31, 2**63, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
    st.text(max_size=5), st.lists(st.integers(0, 5), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """One folder per family and format: our checkpoint layout and the transformers layout."""
    root = tmp_path_factory.mktemp("untrusted")
    out = {}
    for family, cfg in MICRO.items():
        mt.manual_seed(0)
        model = mt.models.build(cfg)
        ours = root / f"ours-{family}"
        ours.mkdir()
        (ours / "config.json").write_text(json.dumps(checkpoint.config_to_dict(cfg)))
        checkpoint.save_arrays(ours / "model.safetensors", model.state_dict())
        out[("ours", family)] = ours
        out[("hf", family)] = hf.save_pretrained(model, root / f"hf-{family}")
    return out


def load(fmt, folder):
    return checkpoint.load_model(folder) if fmt == "ours" else hf.load_pretrained(folder)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=st.sampled_from(["ours", "hf"]), family=st.sampled_from(sorted(MICRO)), data=st.data())
def test_a_mutated_config_loads_or_is_refused_in_one_clear_error(folders, fmt, family, data, monkeypatch,
                                                                tmp_path_factory):
    monkeypatch.setenv(limits.ENV_CAP, "64M")       # anything bigger is refused, never allocated
    source = folders[(fmt, family)]
    folder = tmp_path_factory.mktemp("mutant")
    for f in source.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    raw = json.loads((folder / "config.json").read_text())
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        key = data.draw(st.sampled_from(sorted(raw)), label="field")
        if data.draw(st.booleans(), label="delete"):
            raw.pop(key)
            if not raw:
                break
        else:
            raw[key] = data.draw(VALUES, label=f"value of {key}")
    try:
        text = json.dumps(raw)
    except ValueError:
        return
    (folder / "config.json").write_text(text)
    try:
        model = load(fmt, folder)
    except ValueError as e:              # every refusal of the library is a ValueError, with its reason
        assert str(e).strip(), e
        return
    # a load that succeeds gives a model that runs
    ids = np.array([[1, 2, 3]]) % model.config.vocab_size
    out = model(ids, ids) if family == "t5" else model(ids)
    assert np.isfinite(out.numpy()).all() or not all(math.isfinite(v) for v in raw.values()
                                                       if isinstance(v, float))


@pytest.mark.parametrize("fmt", ["ours", "hf"])
@pytest.mark.parametrize("field,value", [("vocab_size", 10**12), ("n_layer", 10**9), ("n_embd", 2**20)])
def test_absurd_sizes_are_refused_before_allocating_naming_field_size_and_memory(folders, tmp_path, fmt,
                                                                                  field, value):
    folder = tmp_path / "big"
    folder.mkdir()
    for f in folders[(fmt, "gpt")].iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    raw = json.loads((folder / "config.json").read_text())
    raw[field] = value
    (folder / "config.json").write_text(json.dumps(raw))
    with pytest.raises(limits.TooLarge) as e:
        load(fmt, folder)
    message = str(e.value)
    assert f"{field} = {value:,}" in message and "GiB of float32 weights" in message
    assert "GiB of memory available" in message and str(folder / "config.json") in message


def test_the_memory_cap_is_honoured_and_checked(monkeypatch):
    cfg = mt.models.preset("gpt2")                               # 124M parameters, ~0.46 GiB
    monkeypatch.setenv(limits.ENV_CAP, "256M")
    with pytest.raises(limits.TooLarge, match="more than the 0.2 GiB"):
        limits.check_fits(cfg)
    monkeypatch.setenv(limits.ENV_CAP, "2G")
    assert limits.check_fits(cfg) == 4 * 124_439_808                # float32 weights of GPT-2 small
    monkeypatch.setenv(limits.ENV_CAP, "lots")
    with pytest.raises(ValueError, match="not a size such as 8G"):
        limits.available_memory()
