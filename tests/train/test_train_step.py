"""One training step: fresh dropout masks every step, gradients clipped before the update.

Both are invisible in a loss curve on a small run; each test makes its property decide the
outcome of a step.
"""
import numpy as np

import minitransformer as mt
from minitransformer import functional, models, objectives
from minitransformer.train import TrainConfig, Trainer
from tests.train import markov

STREAM = markov.sample(markov.transition_matrix(0), 4_000, seed=3)


def trainer(out, dropout=0.0, grad_clip=1.0, lr=1e-2):
    cfg = models.GPTConfig(vocab_size=markov.VOCAB, n_positions=16, n_embd=16, n_layer=1, n_head=2,
                           resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)
    mt.manual_seed(0)
    data = objectives.CLMObjective(STREAM, 16, eos_id=markov.EOS, seed=0)
    tc = TrainConfig(objective="clm", steps=4, batch_size=4, lr=lr, warmup=1, schedule="inverse-sqrt",
                     eval_every=0, save_every=0, grad_clip=grad_clip, weight_decay=0.0, seed=0)
    return Trainer(models.build(cfg), data, None, tc, out)


def test_each_step_draws_new_dropout_masks(tmp_path, monkeypatch):
    """The first dropout of every step, on ones: a mask per step; repeated masks mean the
    seed ignores the step (every step would then drop the same units)."""
    masks, step = {}, [0]
    real = functional.dropout

    def recording(x, p, training=True, *args, **kwargs):
        if training and p > 0 and step[0] not in masks:
            masks[step[0]] = np.asarray(real(mt.tensor(np.ones(x.shape, np.float32)), p, training).data) == 0
        return real(x, p, training, *args, **kwargs)
    monkeypatch.setattr(functional, "dropout", recording)
    t = trainer(tmp_path, dropout=0.3)
    for s in range(3):
        step[0] = s
        t.train_step()
    assert len(masks) == 3
    assert not np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[1], masks[2])


def test_the_update_uses_the_clipped_gradients(tmp_path):
    """Adam ignores a gradient's scale unless it is far below eps (1e-8): clipped to a norm of
    1e-12, the update shrinks to about 1e-4 of its size. Clipping after the update would leave
    the weights moving by the full step."""
    moved = {}
    for clip in (0.0, 1e-12):
        t = trainer(tmp_path / str(clip), grad_clip=clip)
        before = {k: np.array(v) for k, v in t.model.state_dict().items()}
        t.train_step()
        moved[clip] = max(float(np.abs(np.array(v) - before[k]).max()) for k, v in t.model.state_dict().items())
    assert moved[0.0] > 1e-3, moved
    assert moved[1e-12] < 1e-3 * moved[0.0], moved
