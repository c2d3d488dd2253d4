"""Whole-model gradient checks in float64: each family's loss against finite differences.

``fast_mode`` compares u^T J v along a random direction per parameter, so a wrong gradient
anywhere in a model (embedding, attention, norm, head, tying) shows up. The checks run the
reference ops (the textbook backward, and quick at these sizes); the last test checks that
the fast kernels give every model the same loss and gradients.
"""
import numpy as np
import pytest

import minitransformer as mt
from minitransformer.models import (
    BERTConfig, BertForSequenceClassification, BertForTokenClassification, GPTConfig, T5Config,
)
from tests.models.tiny import ids, model64

RNG = np.random.default_rng(0)


def check(model, batch):
    params = model.parameters()
    with mt.kernels.using("reference"):
        assert mt.gradcheck(lambda *ps: model.loss(batch), params, fast_mode=True)


def test_gpt_loss_gradients():
    model = model64(GPTConfig(vocab_size=20, n_positions=8, n_embd=8, n_layer=2, n_head=2))
    x = ids(RNG, (2, 6))
    mask = np.array([[1] * 6, [1, 1, 1, 1, 0, 0]])
    labels = np.where(mask == 1, x, -100)
    check(model, {"input_ids": x, "attention_mask": mask, "labels": labels})


@pytest.mark.parametrize("head", ["mlm", "sequence", "token"])
def test_bert_loss_gradients(head):
    cfg = BERTConfig(vocab_size=20, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=12, max_position_embeddings=8)
    # Ids from 1 up: the pad id's embedding row deliberately gets no gradient from the
    # lookup (as in BERT), which finite differences would see as a mismatch.
    x = ids(RNG, (2, 6), low=1)
    mask = np.array([[1] * 6, [1, 1, 1, 1, 1, 0]])
    batch = {"input_ids": x, "attention_mask": mask, "token_type_ids": RNG.integers(0, 2, (2, 6))}
    if head == "mlm":
        model = model64(cfg)
        batch["labels"] = np.where(RNG.random((2, 6)) < 0.5, x, -100)
        batch["labels"][0, 0] = x[0, 0]
    elif head == "sequence":
        mt.manual_seed(0)
        model = BertForSequenceClassification(cfg, num_labels=3).astype("float64").eval()
        batch["labels"] = np.array([2, 0])
    else:
        mt.manual_seed(0)
        model = BertForTokenClassification(cfg, num_labels=3).astype("float64").eval()
        batch["labels"] = np.where(mask == 1, RNG.integers(0, 3, (2, 6)), -100)
    check(model, batch)


@pytest.mark.parametrize("proj,tied", [("relu", True), ("gated-gelu", False)])
def test_t5_loss_gradients(proj, tied):
    model = model64(T5Config(vocab_size=20, d_model=8, d_kv=4, d_ff=12, num_layers=2,
                             num_decoder_layers=2, num_heads=2, relative_attention_num_buckets=8,
                             relative_attention_max_distance=12, feed_forward_proj=proj,
                             tie_word_embeddings=tied))
    src, labels = ids(RNG, (2, 7)), ids(RNG, (2, 4))
    dec = np.concatenate([np.zeros((2, 1), int), labels[:, :-1]], axis=1)
    mask = np.array([[1] * 7, [1] * 5 + [0, 0]])
    dmask = np.array([[1] * 4, [1, 1, 1, 0]])
    labels = np.where(dmask == 1, labels, -100)
    check(model, {"input_ids": src, "attention_mask": mask, "decoder_input_ids": dec,
                  "decoder_attention_mask": dmask, "labels": labels})


def _loss_and_grads(model, batch):
    model.zero_grad()
    loss = model.loss(batch)
    loss.backward()
    # The BERT pooler takes no part in the MLM loss: its gradient stays None.
    return loss.item(), {n: None if p.grad is None else p.grad.copy() for n, p in model.named_parameters()}


@pytest.mark.parametrize("family", ["gpt", "bert", "t5"])
def test_kernels_and_reference_agree_on_a_whole_model(family):
    cfg = {"gpt": GPTConfig(vocab_size=20, n_positions=8, n_embd=8, n_layer=1, n_head=2),
           "bert": BERTConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=12, max_position_embeddings=8),
           "t5": T5Config(vocab_size=20, d_model=8, d_kv=4, d_ff=12, num_layers=1, num_heads=2,
                          relative_attention_num_buckets=8)}[family]
    model = model64(cfg)
    x = ids(RNG, (2, 6), low=1)
    mask = np.array([[1] * 6, [1, 1, 1, 1, 0, 0]])
    batch = {"input_ids": x, "attention_mask": mask, "labels": np.where(mask == 1, x, -100)}
    if family == "t5":
        batch.update(decoder_input_ids=x[:, :4], decoder_attention_mask=mask[:, 2:],
                     labels=np.where(mask[:, 2:] == 1, x[:, 1:5], -100))
    with mt.kernels.using("reference"):
        want_loss, want = _loss_and_grads(model, batch)
    got_loss, got = _loss_and_grads(model, batch)           # "auto": kernels where there are any
    assert got_loss == pytest.approx(want_loss, rel=1e-12)
    for name in want:
        if want[name] is None:
            assert got[name] is None and name.startswith("bert.pooler"), name
        else:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-12, err_msg=name)
