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


def greedy_by_hand(t5, x, steps):
    """Full decoder pass each step, argmax of the last position: no cache, no beams."""
    dec = [0]
    for _ in range(steps):
        logits = t5(np.array([x]), np.array([dec]))
        dec.append(int(logits.data[0, -1].argmax()))
        if dec[-1] == 1:
            break
    return dec[1:]


def test_t5_greedy_and_a_beam_of_one_equal_greedy_by_hand(t5):
    inputs = [[3, 4, 5, 1], [6, 7, 1]]
    greedy = generate.seq2seq_greedy(t5, inputs, max_new_tokens=6, eos_id=1, pad_id=0)
    assert greedy == [greedy_by_hand(t5, x, 6) for x in inputs]
    for length_penalty in (0.0, 1.0):
        beam = generate.seq2seq_beam(t5, inputs, num_beams=1, max_new_tokens=6, eos_id=1, pad_id=0,
                                     length_penalty=length_penalty)
        assert beam == greedy, f"length_penalty={length_penalty}"


def test_t5_beams_as_many_as_all_prefixes_find_the_exhaustive_best(t5):
    """With k >= V^(L-1) beams, beam search keeps every prefix of length L-1, so over L steps it
    must return argmax log p(y) of all outputs y of at most L tokens (EOS ends one early)."""
    x, steps = [3, 4, 5, 1], 3
    prefixes = np.array([[0, a, b] for a in range(V) for b in range(V)])       # (V^2, 3)
    logits = t5(np.array([x] * len(prefixes)), prefixes).data                  # (V^2, 3, V)
    z = logits - logits.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    best, best_score = [1], logp[0, 0, 1]                                      # EOS first
    for r, (_, a, b) in enumerate(prefixes):
        if a == 1 or b == 1:
            continue
        if b == 0:                                                             # [a, EOS], once per a
            score = logp[r, 0, a] + logp[r, 1, 1]
            if score > best_score:
                best, best_score = [int(a), 1], score
        third = logp[r, 0, a] + logp[r, 1, b] + logp[r, 2]                     # [a, b, c] for every c
        c = int(third.argmax())
        if third[c] > best_score:
            best, best_score = [int(a), int(b), c], third[c]
    beam = generate.seq2seq_beam(t5, [x], num_beams=V ** (steps - 1), max_new_tokens=steps, eos_id=1, pad_id=0,
                                 length_penalty=0.0)
    assert beam == [best]
