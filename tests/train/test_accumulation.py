"""Gradient accumulation equals one big batch: losses are normalised by the whole batch's targets."""
import dataclasses

import numpy as np

import minitransformer as mt
from minitransformer import models, objectives
from minitransformer.train import TrainConfig, Trainer
from tests.train import markov

STREAM = markov.sample(markov.transition_matrix(0), 4_000, seed=4)


def run(micro, tmp_path):
    cfg = dataclasses.replace(models.preset("bert-tiny"), vocab_size=markov.VOCAB, hidden_size=16,
                              num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                              max_position_embeddings=16, pad_token_id=markov.PAD)
    mt.manual_seed(0)
    model = models.build(cfg).astype("float64")
    data = objectives.MLMObjective(STREAM, 16, vocab_size=markov.VOCAB, mask_id=markov.MASK, cls_id=markov.CLS,
                                   sep_id=markov.SEP, pad_id=markov.PAD, special_ids=markov.SPECIAL, seed=0)
    tc = TrainConfig(objective="mlm", steps=4, batch_size=8, micro_batch_size=micro, lr=1e-2, warmup=1,
                     eval_every=0, eval_batches=1, save_every=0)
    trainer = Trainer(model, data, data, tc, tmp_path / f"m{micro}")
    trainer.fit()
    return {k: np.array(v) for k, v in model.state_dict().items()}


def test_micro_batches_give_the_same_weights_as_one_batch(tmp_path):
    whole, pieces, uneven = run(0, tmp_path), run(2, tmp_path), run(3, tmp_path)
    for k in whole:
        np.testing.assert_allclose(pieces[k], whole[k], rtol=1e-10, atol=1e-12, err_msg=k)
        np.testing.assert_allclose(uneven[k], whole[k], rtol=1e-10, atol=1e-12, err_msg=k)
