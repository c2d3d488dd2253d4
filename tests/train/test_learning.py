"""Learning is shown, not assumed: each family learns a Markov chain whose best loss is known.

H is the chain's entropy rate (the loss of a perfect next-symbol model) and U the entropy
of its unigram distribution (the loss of a model that ignores context). A GPT that learned
the chain ends near H; masked and span targets, which see context on both sides, must at
least beat (U + H) / 2.

Learning too well is a bug as well: no next-symbol model beats H by more than noise, so a GPT
below ``markov.loss_floor`` sees the symbol it predicts (unshifted labels, a causal mask that
lets a query see the next key). Masked and span targets have no such check here: on this
chain a symbol between its two neighbours is almost determined (H(X_t | X_t-1, X_t+1) = 0.02
nats), a floor within noise of zero.
"""
import dataclasses

import pytest

import minitransformer as mt
from minitransformer import models, objectives
from minitransformer.train import TrainConfig, Trainer
from tests.train import markov

P = markov.transition_matrix(0)
H, U = markov.entropies(P)
TRAIN = markov.sample(P, 60_000, seed=1)
VAL = markov.sample(P, 8_000, seed=2)
BLOCK = 64


def gpt_setup():
    cfg = models.GPTConfig(vocab_size=markov.VOCAB, n_positions=BLOCK, n_embd=64, n_layer=2, n_head=4,
                           resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    def make(s, seed, shuffle):
        return objectives.CLMObjective(s, BLOCK, eos_id=markov.EOS, seed=seed, shuffle=shuffle)
    return cfg, make, "clm"


def bert_setup():
    # A masked symbol is predictable only from its neighbours, so BERT must first learn to
    # attend by (learned, absolute) position: a plateau, then a sharp drop (near step 600
    # at this size). Shorter blocks leave fewer positions to learn.
    block = 32
    cfg = dataclasses.replace(models.preset("bert-tiny"), vocab_size=markov.VOCAB, hidden_size=64,
                              num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                              max_position_embeddings=block, hidden_dropout_prob=0.0,
                              attention_probs_dropout_prob=0.0, pad_token_id=markov.PAD)
    def make(s, seed, shuffle):
        return objectives.MLMObjective(
            s, block, vocab_size=markov.VOCAB, mask_id=markov.MASK, cls_id=markov.CLS, sep_id=markov.SEP,
            pad_id=markov.PAD, special_ids=markov.SPECIAL, seed=seed, shuffle=shuffle)
    return cfg, make, "mlm"


def t5_setup():
    cfg = dataclasses.replace(models.preset("t5-tiny"), vocab_size=markov.VOCAB, d_model=64, d_kv=16, d_ff=256,
                              num_layers=2, num_decoder_layers=2, num_heads=4, dropout_rate=0.0)
    def make(s, seed, shuffle):
        return objectives.SpanCorruptionObjective(
            s, BLOCK, vocab_size=markov.VOCAB, eos_id=markov.EOS, pad_id=markov.PAD, decoder_start_id=markov.PAD,
            seed=seed, special_ids=markov.SPECIAL, shuffle=shuffle)
    return cfg, make, "span"


def train(setup, steps, lr, tmp_path, batch_size=16):
    cfg, make, objective = setup()
    mt.manual_seed(0)
    model = models.build(cfg)
    tc = TrainConfig(objective=objective, steps=steps, batch_size=batch_size, lr=lr, warmup=20,
                     eval_every=0, eval_batches=8, save_every=0)
    trainer = Trainer(model, make(TRAIN, 0, True), make(VAL, 1, False), tc, tmp_path / objective)
    return trainer.fit()


@pytest.mark.slow
def test_gpt_reaches_the_entropy_rate(tmp_path):
    result = train(gpt_setup, steps=120, lr=3e-3, tmp_path=tmp_path)
    assert result["val_loss"] <= H + 0.1 * (U - H), (result, H, U)
    # every GPT target is a chain symbol seen after its predecessor
    floor = markov.loss_floor(markov.next_symbol_floor(P), result["val_tokens"], result["val_tokens"])
    assert result["val_loss"] >= floor, \
        f"val loss {result['val_loss']:.3f} is below the entropy floor {floor:.3f} (H = {H:.3f}): a leak"


@pytest.mark.slow
def test_bert_masked_loss_beats_halfway(tmp_path):
    result = train(bert_setup, steps=900, lr=3e-3, tmp_path=tmp_path)
    assert result["val_loss"] < (U + H) / 2, (result, H, U)


@pytest.mark.slow
def test_t5_target_loss_beats_halfway(tmp_path):
    result = train(t5_setup, steps=100, lr=3e-3, tmp_path=tmp_path)
    assert result["val_loss"] < (U + H) / 2, (result, H, U)
