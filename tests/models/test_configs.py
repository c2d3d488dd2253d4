"""Configs, presets, build, and what the models refuse at their boundary."""
import dataclasses

import numpy as np
import pytest

import minitransformer as mt
from minitransformer.models import BERT, GPT, T5, BERTConfig, GPTConfig, T5Config, build, preset
from tests.models.tiny import ids, model64

TINY = {"gpt-tiny": GPT, "bert-tiny": BERT, "t5-tiny": T5}


def test_presets_families_and_build():
    for name, cls in TINY.items():
        cfg = preset(name)
        assert cfg.family == name.split("-")[0]
        assert type(build(cfg)) is cls
        assert cfg.d_model == 128 and cfg.n_heads == 4 and cfg.vocab_size == 8192
    assert preset("gpt2").n_positions == 1024 and preset("bert-base").layer_norm_eps == 1e-12
    assert preset("t5-small").feed_forward_proj == "relu" and preset("t5-small").tie_word_embeddings
    with pytest.raises(ValueError, match="gpt-tiny, bert-tiny, t5-tiny, gpt2, bert-base, t5-small"):
        preset("gpt-5")
    with pytest.raises(TypeError, match="GPTConfig, BERTConfig or T5Config"):
        build({"family": "gpt"})


def test_configs_are_frozen_and_replace_rechecks():
    cfg = preset("gpt-tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.vocab_size = 5
    assert dataclasses.replace(cfg, vocab_size=300).vocab_size == 300
    with pytest.raises(ValueError, match="n_embd .* divisible by n_head"):
        dataclasses.replace(cfg, n_head=3)
    with pytest.raises(ValueError, match="resid_pdrop must be a probability"):
        dataclasses.replace(cfg, resid_pdrop=1.5)
    with pytest.raises(ValueError, match="vocab_size must be a positive integer"):
        GPTConfig(vocab_size=0)
    with pytest.raises(ValueError, match="feed_forward_proj"):
        T5Config(feed_forward_proj="swiglu")
    with pytest.raises(ValueError, match="hidden_act"):
        BERTConfig(hidden_act="tanh")
    with pytest.raises(ValueError, match="pad_token_id"):
        BERTConfig(vocab_size=10, pad_token_id=10)


def test_family_neutral_properties_and_with_dropout():
    t5 = T5Config(num_layers=3, num_decoder_layers=2)
    assert t5.decoder_layers == 2 and t5.n_layers == 5 and t5.max_positions is None
    assert T5Config(num_layers=3).decoder_layers == 3
    assert T5Config(feed_forward_proj="gated-gelu").activation == "gelu_tanh"
    assert GPTConfig().d_ff == 3072 and GPTConfig(n_inner=100).d_ff == 100
    assert BERTConfig().n_layers == 12 and BERTConfig().max_positions == 512
    g = preset("gpt2").with_dropout(0.0)
    assert (g.resid_pdrop, g.embd_pdrop, g.attn_pdrop) == (0.0, 0.0, 0.0)
    assert preset("bert-base").with_dropout(0.2).attention_probs_dropout_prob == 0.2
    assert preset("t5-small").with_dropout(0.0).dropout_rate == 0.0


def test_tiny_preset_forward_shapes():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 8192, (2, 16))
    mt.manual_seed(0)
    with mt.no_grad():
        assert GPT(preset("gpt-tiny"))(x).shape == (2, 16, 8192)
        assert BERT(preset("bert-tiny"))(x).shape == (2, 16, 8192)
        assert T5(preset("t5-tiny"))(x, x[:, :5]).shape == (2, 5, 8192)


SMALL_GPT = GPTConfig(vocab_size=20, n_positions=8, n_embd=8, n_layer=1, n_head=2)


def test_inputs_are_checked_at_the_boundary():
    model = model64(SMALL_GPT)
    x = ids(np.random.default_rng(0), (2, 5))
    with pytest.raises(TypeError, match="integer"):
        model(x.astype(float))
    with pytest.raises(ValueError, match=r"\(batch, length\)"):
        model(x[0])
    with pytest.raises(ValueError, match="attention_mask shape"):
        model(x, np.ones((2, 4)))
    with pytest.raises(ValueError, match="longer than the model's 8"):
        model(np.zeros((1, 9), int))
    with pytest.raises(ValueError, match="position_ids must lie in"):
        model(x, position_ids=np.full((2, 5), 8))
    with pytest.raises(ValueError, match="ids must be in"):
        model(x + 20)
    # Lists and integer Tensors work as ids too.
    np.testing.assert_array_equal(model(x.tolist()).numpy(), model(mt.tensor(x)).numpy())
    with pytest.raises(TypeError, match="needs a GPTConfig"):
        GPT(preset("bert-tiny"))


def test_t5_decode_checks_the_batch():
    model = model64(T5Config(vocab_size=20, d_model=8, d_kv=4, d_ff=8, num_layers=1, num_heads=2,
                             relative_attention_num_buckets=8))
    x = ids(np.random.default_rng(0), (2, 5))
    memory = model.encode(x)
    with pytest.raises(ValueError, match="batch 2 but decoder_input_ids has 1"):
        model.decode(x[:1], memory)
