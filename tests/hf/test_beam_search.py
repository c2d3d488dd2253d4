"""Beam search against transformers: the same exported weights give the same hypotheses.

``T5ForConditionalGeneration.generate(num_beams=4)`` is the reference: at each step the best
``2k`` continuations of the ``k`` beams are ranked, an EOS among the best ``k`` finishes a
hypothesis scored ``log p / length ** length_penalty``, and at the length limit the open beams
compete with the finished ones. A beam search that forgets to reorder its KV cache after the
beams are re-ranked continues each beam from another beam's history and picks other tokens.
"""
import pytest

from minitransformer import generate, hf
from tests.hf.test_models import hf_t5

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

INPUTS = [[5, 6, 7, 8, 1], [9, 10, 1], [3, 3, 4, 1]]


def their_beams(t5, inputs, num_beams, length_penalty, max_new_tokens):
    """transformers' beam search, one input at a time, cut after the first EOS."""
    out = []
    for x in inputs:
        with torch.no_grad():
            row = t5.generate(torch.tensor([x]), max_new_tokens=max_new_tokens, do_sample=False,
                              num_beams=num_beams, length_penalty=length_penalty,
                              early_stopping=False)[0, 1:].tolist()       # drop the decoder start token
        out.append(row[:row.index(1) + 1] if 1 in row else row)
    return out


# (seed, eos_boost): seeds where a beam without its reordered cache, or an open beam that may not
# compete at the limit, changes the answer; a boosted EOS embedding (tied to its logit) makes
# hypotheses of several lengths finish, so that the length penalty decides between them.
CASES = [(1, 0.0), (5, 0.0), (5, 4.0)]


@pytest.mark.parametrize("seed,eos_boost", CASES)
def test_t5_beam_search_equals_transformers_with_four_beams(tmp_path, seed, eos_boost):
    torch.manual_seed(seed)
    # initializer_factor 3 spreads the logits so that beams disagree with greedy decoding
    t5 = transformers.T5ForConditionalGeneration(hf_t5("v1.0", initializer_factor=3.0)).double().eval()
    with torch.no_grad():
        t5.shared.weight[1] += eos_boost * t5.shared.weight[1].sign()
    t5.save_pretrained(tmp_path)
    ours = hf.load_pretrained(tmp_path, dtype="float64")
    for length_penalty in (1.0, 0.0):
        mine = generate.seq2seq_beam(ours, INPUTS, num_beams=4, max_new_tokens=8, eos_id=1, pad_id=0,
                                     length_penalty=length_penalty)
        assert mine == their_beams(t5, INPUTS, 4, length_penalty, 8), f"length_penalty={length_penalty}"
