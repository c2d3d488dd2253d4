"""Each model's loss on the batches the objectives produce, and count_targets."""
import numpy as np
import pytest

import minitransformer as mt
import minitransformer.functional as F
from minitransformer.models import (
    BERTConfig, BertForSequenceClassification, BertForTokenClassification, GPTConfig, T5Config,
    count_targets,
)
from tests.models.tiny import ids, model64

RNG = np.random.default_rng(5)
GPT_CFG = GPTConfig(vocab_size=20, n_positions=8, n_embd=8, n_layer=1, n_head=2)
BERT_CFG = BERTConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=12, max_position_embeddings=8)
T5_CFG = T5Config(vocab_size=20, d_model=8, d_kv=4, d_ff=12, num_layers=1, num_heads=2,
                  relative_attention_num_buckets=8)


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _nll(logits, labels):
    """Summed -log p(label) over labels != -100, and their count, in NumPy."""
    lp = _log_softmax(logits)
    keep = labels != -100
    return -lp[keep, labels[keep]].sum(), int(keep.sum())


def test_gpt_loss_shifts_by_one_and_ignores_minus_100():
    model = model64(GPT_CFG)
    x = ids(RNG, (2, 6))
    mask = np.array([[1] * 6, [1, 1, 1, 1, 0, 0]])
    labels = np.where(mask == 1, x, -100)
    batch = {"input_ids": x, "attention_mask": mask, "labels": labels}
    total, n = _nll(model(x, mask).numpy()[:, :-1], labels[:, 1:])
    assert n == count_targets(batch) == count_targets(batch, "gpt") == model.count_targets(batch) == 8
    assert model.loss(batch, reduction="sum").item() == pytest.approx(total, rel=1e-12)
    assert model.loss(batch).item() == pytest.approx(total / n, rel=1e-12)
    assert model.loss(batch, reduction="none").shape == (2, 5)


def test_bert_loss_uses_only_labelled_positions_and_equals_the_full_logits_loss():
    model = model64(BERT_CFG)
    x = ids(RNG, (3, 7))
    labels = np.full((3, 7), -100)
    labels[0, 2], labels[1, 0], labels[1, 5], labels[2, 6] = 4, 7, 1, 19
    batch = {"input_ids": x, "attention_mask": np.ones_like(x), "token_type_ids": np.zeros_like(x),
             "labels": labels}
    total, n = _nll(model(x).numpy(), labels)
    assert n == count_targets(batch) == model.count_targets(batch) == 4
    assert model.loss(batch, reduction="sum").item() == pytest.approx(total, rel=1e-12)
    assert model.loss(batch).item() == pytest.approx(total / 4, rel=1e-12)
    # Gradients equal those of the loss on the full logits, too.
    model.loss(batch).backward()
    selected = {k: p.grad.copy() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    F.cross_entropy(model(x), labels).backward()
    for k, g in selected.items():
        np.testing.assert_allclose(g, dict(model.named_parameters())[k].grad, rtol=1e-10, atol=1e-14)


def test_bert_loss_without_targets_is_zero():
    model = model64(BERT_CFG)
    x = ids(RNG, (1, 4))
    loss = model.loss({"input_ids": x, "labels": np.full((1, 4), -100)})
    assert loss.item() == 0.0


def test_t5_loss_and_count():
    model = model64(T5_CFG)
    src, tgt = ids(RNG, (2, 5)), ids(RNG, (2, 4))
    dec = np.concatenate([np.zeros((2, 1), int), tgt[:, :-1]], axis=1)
    labels = tgt.copy()
    labels[1, 3] = -100
    batch = {"input_ids": src, "attention_mask": np.ones_like(src), "decoder_input_ids": dec,
             "decoder_attention_mask": np.ones_like(dec), "labels": labels}
    total, n = _nll(model(src, dec).numpy(), labels)
    assert n == count_targets(batch) == model.count_targets(batch) == 7
    assert model.loss(batch, reduction="sum").item() == pytest.approx(total, rel=1e-12)


def test_classification_heads():
    mt.manual_seed(0)
    seq = BertForSequenceClassification(BERT_CFG, num_labels=3).astype("float64").eval()
    tok = BertForTokenClassification(BERT_CFG, num_labels=4).astype("float64").eval()
    x = ids(RNG, (2, 5))
    assert seq(x).shape == (2, 3) and tok(x).shape == (2, 5, 4)
    assert tok.bert.pooler is None and "bert.pooler.weight" in dict(seq.named_parameters())
    total, _ = _nll(seq(x).numpy(), np.array([1, 2]))
    assert seq.loss({"input_ids": x, "labels": np.array([1, 2])}, reduction="sum").item() == pytest.approx(total)
    tok_batch = {"input_ids": x, "labels": np.array([[1, 2, 3, -100, -100], [0] * 5])}
    assert tok.count_targets(tok_batch) == 8 and seq.count_targets({"labels": np.array([1, 2])}) == 2
    total, _ = _nll(tok(x).numpy(), tok_batch["labels"])
    assert tok.loss(tok_batch, reduction="sum").item() == pytest.approx(total)
    with pytest.raises(ValueError, match="must match"):
        tok.loss({"input_ids": x, "labels": np.zeros((2, 4), int)})
    with pytest.raises(ValueError, match="num_labels"):
        BertForSequenceClassification(BERT_CFG, num_labels=1)


def test_heads_load_a_pretrained_body():
    pre = model64(BERT_CFG, seed=1)
    for head in (BertForSequenceClassification(BERT_CFG, 2), BertForTokenClassification(BERT_CFG, 2)):
        head.astype("float64").load_pretrained(pre)
        for k, v in head.bert.state_dict().items():
            np.testing.assert_array_equal(v, pre.bert.state_dict()[k])


def test_count_targets_family_inference_and_errors():
    labels = np.array([[5, 6, -100], [-100, 1, 2]])
    assert count_targets({"labels": labels}) == 3                       # causal: first column dropped
    assert count_targets({"labels": labels}, "bert") == 4
    assert count_targets({"labels": labels}, GPT_CFG) == 3
    assert count_targets({"labels": labels, "decoder_input_ids": labels}) == 4
    # one label per row (a sentence classifier's batch) is never read as a causal-LM batch
    assert count_targets({"labels": np.array([1, -100, 0])}) == 2
    with pytest.raises(ValueError, match="family"):
        count_targets({"labels": labels}, "llama")
    with pytest.raises(KeyError, match="labels"):
        count_targets({"input_ids": labels})


def test_a_batch_without_labels_is_refused_with_the_keys_it_has():
    with pytest.raises(KeyError, match="no 'labels'.*input_ids"):
        model64(GPT_CFG).loss({"input_ids": ids(RNG, (1, 3))})
