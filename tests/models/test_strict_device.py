"""Every family, moved with ``model.to(device)``, on a device that refuses silent NumPy use.

The strict test device (minitransformer.testing.strict) behaves like CuPy where GPU bugs hide: a
model that builds a mask, a position table or a bucket index with NumPy and mixes it into
device arithmetic fails here, in CI, instead of on a user's GPU. Inputs stay NumPy arrays
on the host: the models move them to their device.
"""
import numpy as np
import pytest

import minitransformer as mt
from minitransformer.models import BERTConfig, GPTConfig, T5Config
from minitransformer.testing import assert_close
from tests.models.tiny import ids, model64
from minitransformer.testing.strict import StrictArray

CONFIGS = {
    "gpt": GPTConfig(vocab_size=20, n_positions=8, n_embd=8, n_layer=1, n_head=2),
    "bert": BERTConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=12, max_position_embeddings=8),
    "t5": T5Config(vocab_size=20, d_model=8, d_kv=4, d_ff=12, num_layers=1, num_heads=2,
                   relative_attention_num_buckets=8),
}


def _batch(family):
    rng = np.random.default_rng(0)
    x = ids(rng, (2, 6), low=1)
    mask = np.array([[1] * 6, [1, 1, 1, 1, 0, 0]])
    batch = {"input_ids": x, "attention_mask": mask, "labels": np.where(mask == 1, x, -100)}
    if family == "bert":
        batch["token_type_ids"] = rng.integers(0, 2, (2, 6))
    if family == "t5":
        batch.update(decoder_input_ids=x[:, :4], decoder_attention_mask=mask[:, 2:],
                     labels=np.where(mask[:, 2:] == 1, x[:, 1:5], -100))
    return batch


@pytest.mark.parametrize("family", ["gpt", "bert", "t5"])
def test_loss_and_gradients_on_the_strict_device_match_numpy(family):
    host, dev = model64(CONFIGS[family]), model64(CONFIGS[family]).to("strict")
    assert dev.device == "strict"
    batch = _batch(family)
    loss_host, loss_dev = host.loss(batch), dev.loss(batch)
    loss_host.backward()
    loss_dev.backward()
    assert loss_dev.device == "strict"
    assert_close(mt.backend.to_numpy(loss_dev.data), loss_host.data, rtol=1e-12)
    for (name, p_host), p_dev in zip(host.named_parameters(), dev.parameters()):
        if p_host.grad is None:
            assert p_dev.grad is None, name
            continue
        assert isinstance(p_dev.grad, StrictArray), name
        assert_close(mt.backend.to_numpy(p_dev.grad), p_host.grad, rtol=1e-9, atol=1e-13, msg=name)


def test_incremental_decoding_on_the_strict_device():
    gpt = model64(CONFIGS["gpt"]).to("strict")
    x = ids(np.random.default_rng(1), (2, 5))
    mask = np.array([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    pos = np.clip(mask.cumsum(1) - 1, 0, None)
    full = mt.backend.to_numpy(gpt(x, mask, pos).data)
    logits, cache = gpt(x[:, :3], mask[:, :3], pos[:, :3], use_cache=True)
    step, cache = gpt(x[:, 3:], mask[:, 3:], pos[:, 3:], past_key_values=cache, use_cache=True)
    assert_close(mt.backend.to_numpy(step.data), full[:, 3:], rtol=1e-10, atol=1e-13)
    t5 = model64(CONFIGS["t5"]).to("strict")
    memory = t5.encode(x, mask)
    full = mt.backend.to_numpy(t5.decode(x[:, :3], memory, mask).data)
    _, cache = t5.decode(x[:, :2], memory, mask, use_cache=True)
    step, cache = t5.decode(x[:, 2:3], memory, mask, past_key_values=cache, use_cache=True)
    assert_close(mt.backend.to_numpy(step.data), full[:, 2:], rtol=1e-10, atol=1e-13)
