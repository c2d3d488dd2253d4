"""Generation: the KV cache changes nothing, padding changes nothing, samplers keep their promises."""
import numpy as np
import pytest

import minitransformer as mt
from minitransformer import generate, models

V = 23


@pytest.fixture(scope="module")
def gpt():
    mt.manual_seed(0)
    return models.build(models.GPTConfig(vocab_size=V, n_positions=40, n_embd=16, n_layer=2, n_head=2,
                                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))


@pytest.fixture(scope="module")
def t5():
    mt.manual_seed(0)
    cfg = models.T5Config(vocab_size=V, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_decoder_layers=2,
                          num_heads=2, dropout_rate=0.0)
    return models.build(cfg)


def test_cached_generation_equals_recomputing_everything(gpt):
    prompts = [[3, 4, 5, 6], [7], [8, 9]]
    with_cache = generate.generate(gpt, prompts, max_new_tokens=8, pad_id=0)
    without = generate.generate(gpt, prompts, max_new_tokens=8, pad_id=0, use_cache=False)
    assert with_cache == without


def test_left_padded_batch_equals_one_prompt_at_a_time(gpt):
    prompts = [[3, 4, 5, 6, 7], [9], [10, 11]]
    batched = generate.generate(gpt, prompts, max_new_tokens=6, pad_id=0)
    alone = [generate.generate(gpt, [p], max_new_tokens=6, pad_id=0)[0] for p in prompts]
    assert batched == alone


def test_sampling_is_seeded_and_stops_at_eos(gpt):
    a = generate.generate(gpt, [[3, 4]], max_new_tokens=10, temperature=1.0, seed=5)
    b = generate.generate(gpt, [[3, 4]], max_new_tokens=10, temperature=1.0, seed=5)
    assert a == b
    first = a[0][0]
    stopped = generate.generate(gpt, [[3, 4]], max_new_tokens=10, temperature=1.0, seed=5, eos_id=first)
    assert stopped == [[first]]


def test_prompt_too_long_is_a_clear_error(gpt):
    with pytest.raises(ValueError, match="exceeds the model's 40 positions"):
        generate.generate(gpt, [[1] * 35], max_new_tokens=10)


def test_top_k_and_top_p_keep_only_their_sets():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    rng = np.random.default_rng(0)
    draws = [int(generate.sample_next(logits, 1.0, top_k=2, rng=rng)[0]) for _ in range(300)]
    assert set(draws) == {0, 1}
    draws = [int(generate.sample_next(logits, 1.0, top_p=0.7, rng=rng)[0]) for _ in range(300)]
    assert set(draws) == {0, 1}                  # 0.5 < 0.7 <= 0.5 + 0.3
    draws = [int(generate.sample_next(logits, 1.0, top_p=0.9, rng=rng)[0]) for _ in range(600)]
    assert set(draws) == {0, 1, 2}
    assert int(generate.sample_next(logits, 0.0)[0]) == 0


def test_t5_beam_of_one_is_greedy_and_wider_beams_score_no_worse(t5):
    inputs = [[3, 4, 5, 1], [6, 7, 1]]
    greedy = generate.seq2seq_greedy(t5, inputs, max_new_tokens=6, eos_id=1, pad_id=0)
    # greedy by hand: full decoder pass each step, argmax of the last position
    for x, out in zip(inputs, greedy):
        dec = [0]
        for _ in range(len(out)):
            logits = t5(np.array([x]), np.array([dec]))
            dec.append(int(logits.data[0, -1].argmax()))
        assert dec[1:] == out

    def logprob(x, y):
        logits = t5(np.array([x]), np.array([[0] + y[:-1]])).data[0]
        z = logits - logits.max(axis=-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
        return float(sum(logp[i, t] for i, t in enumerate(y)))

    beam = generate.seq2seq_beam(t5, inputs, num_beams=4, max_new_tokens=6, eos_id=1, pad_id=0,
                                 length_penalty=0.0)
    for x, g, b in zip(inputs, greedy, beam):
        if len(g) == len(b):
            assert logprob(x, b) >= logprob(x, g) - 1e-9
