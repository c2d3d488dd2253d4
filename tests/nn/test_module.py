"""Module and Parameter: naming, tying, state dicts, modes, dtype and device moves."""
import numpy as np
import pytest

import minitransformer as mt
from minitransformer.nn import Embedding, LayerNorm, Linear, Module, ModuleList, Parameter


class Tied(Module):
    """A toy language model whose output layer reuses the embedding table."""

    def __init__(self):
        super().__init__()
        self.emb = Embedding(5, 3)
        self.layers = ModuleList([Linear(3, 3), Linear(3, 3, bias=False)])
        self.norm = LayerNorm(3)
        self.head = Linear(3, 5, bias=False)
        self.head.weight = self.emb.weight          # the same Parameter, registered twice

    def forward(self, ids):
        h = self.emb(ids)
        for layer in self.layers:
            h = layer(h)
        return self.head(self.norm(h))


def test_named_parameters_are_dotted_ordered_and_list_a_tied_weight_once():
    m = Tied()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["emb.weight", "layers.0.weight", "layers.0.bias", "layers.1.weight",
                     "norm.weight", "norm.bias"]
    assert len(m.parameters()) == 6
    assert m.num_parameters() == 15 + 9 + 3 + 9 + 3 + 3
    assert list(m.state_dict()) == names


def test_parameter_is_a_leaf_that_requires_grad_and_refuses_integers():
    p = Parameter(np.zeros((2, 3)))
    assert p.requires_grad and p.is_leaf and p.shape == (2, 3)
    assert Parameter([1.0, 2.0]).dtype == np.float32
    with pytest.raises(TypeError, match="floating-point"):
        Parameter(np.zeros(3, dtype=np.int64))


def test_manual_seed_reproduces_a_model():
    mt.manual_seed(7)
    a = Tied().state_dict()
    mt.manual_seed(7)
    b = Tied().state_dict()
    c = Tied().state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["emb.weight"], c["emb.weight"])


def test_state_dict_round_trip_copies_values_and_keeps_dtype():
    src, dst = Tied(), Tied().astype("float64")
    result = dst.load_state_dict({k: v.copy() for k, v in src.state_dict().items()})
    assert result.missing_keys == [] and result.unexpected_keys == []
    for k, v in src.state_dict().items():
        assert dst.state_dict()[k].dtype == np.float64
        np.testing.assert_array_equal(dst.state_dict()[k], v.astype(np.float64))
    # The tied output weight follows the loaded embedding.
    assert dst.head.weight is dst.emb.weight


def test_load_state_dict_names_every_missing_unexpected_and_misshaped_key():
    m = Tied()
    sd = {k: v.copy() for k, v in m.state_dict().items()}
    before = {k: v.copy() for k, v in sd.items()}
    del sd["layers.0.bias"], sd["norm.bias"]
    sd["layers.2.weight"] = np.zeros((3, 3), np.float32)
    sd["extra"] = np.zeros(1, np.float32)
    sd["emb.weight"] = np.zeros((6, 3), np.float32)
    sd["norm.weight"] = np.zeros((4,), np.float32)
    with pytest.raises(ValueError) as err:
        m.load_state_dict(sd)
    msg = str(err.value)
    for key in ("layers.0.bias", "norm.bias", "layers.2.weight", "extra"):
        assert key in msg
    assert "emb.weight: expected (5, 3), got (6, 3)" in msg
    assert "norm.weight: expected (3,), got (4,)" in msg
    assert "missing keys (2)" in msg and "unexpected keys (2)" in msg and "mis-shaped keys (2)" in msg
    # Nothing was changed by the failed load.
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_non_strict_load_skips_missing_and_unexpected_but_not_shapes():
    m = Tied()
    sd = {"norm.weight": np.full(3, 2.0, np.float32), "other": np.zeros(2)}
    res = m.load_state_dict(sd, strict=False)
    assert res.unexpected_keys == ["other"] and "emb.weight" in res.missing_keys
    np.testing.assert_array_equal(m.norm.weight.data, np.full(3, 2.0))
    with pytest.raises(ValueError, match="mis-shaped"):
        m.load_state_dict({"norm.weight": np.zeros(4)}, strict=False)


def test_train_eval_reach_every_module_and_zero_grad_clears():
    m = Tied()
    assert all(x.training for x in m.modules())
    m.eval()
    assert not any(x.training for x in m.modules())
    m.train()
    assert all(x.training for x in m.modules())
    out = m(np.array([[0, 1, 2]])).sum()
    out.backward()
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_tied_weight_collects_gradient_from_both_uses():
    m = Tied().astype("float64")
    ids = np.array([[1, 3]])
    assert mt.gradcheck(lambda w: m(ids), [m.emb.weight], fast_mode=True)


def test_astype_and_to_move_parameters_and_grads():
    m = Tied()
    m(np.array([[0, 1]])).sum().backward()
    m.astype(np.float64)
    assert all(p.dtype == np.float64 and p.grad.dtype == np.float64 for p in m.parameters())
    assert m.to("cpu") is m and m.device == "cpu" and m.dtype == np.float64
    with pytest.raises(TypeError, match="floating point"):
        m.astype(np.int32)
    with pytest.raises(ValueError, match="unknown device"):
        m.to("tpu")


def test_reassigning_an_attribute_replaces_the_registration():
    m = Tied()
    m.norm = None
    assert not any(n.startswith("norm.") for n, _ in m.named_parameters())
    with pytest.raises(RuntimeError, match="super"):
        class Broken(Module):
            def __init__(self):
                self.w = Parameter(np.zeros(1))
        Broken()


def test_repr_shows_the_tree():
    text = repr(Tied())
    assert "(layers): ModuleList(" in text and "(0): Linear(3, 3, bias=True)" in text
