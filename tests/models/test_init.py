"""Initialisation: every parameter of every family is drawn as transformers' ``_init_weights`` draws it.

The rules (``std`` of a zero-mean normal, or a constant) per family, from transformers:

- GPT-2: embeddings and linear weights N(0, r), r = initializer_range; the two residual
  projections (attention output, MLP output) N(0, r / sqrt(2 L)); biases 0; LayerNorm gain 1, shift 0.
- BERT: embeddings and linear weights N(0, r), the padding row of the word embeddings 0;
  biases 0; LayerNorm gain 1, shift 0.
- T5 (factor f): shared embedding and an untied LM head N(0, f); q N(0, f (d_model d_kv)^-1/2);
  k, v N(0, f d_model^-1/2); o N(0, f (H d_kv)^-1/2); relative bias N(0, f d_model^-1/2);
  wi N(0, f d_model^-1/2); wo N(0, f d_ff^-1/2); RMSNorm gain f.

A sample standard deviation of n normal draws has relative error about 1 / sqrt(2n) and a
sample mean error std / sqrt(n); both are allowed 5 of those standard errors, so a wrong
factor (1/sqrt(2L) forgotten is a factor 2.4 here) is far outside and a correct draw fails
about once in two million.
"""
import math
import re

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import models

R = 0.02
GPT = models.GPTConfig(vocab_size=300, n_positions=64, n_embd=64, n_layer=3, n_head=2, initializer_range=R)
BERT = models.BERTConfig(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=96, max_position_embeddings=64, initializer_range=R, pad_token_id=0)
F, D, DKV, H, DFF = 1.5, 64, 16, 2, 96
T5 = models.T5Config(vocab_size=300, d_model=D, d_kv=DKV, d_ff=DFF, num_layers=2, num_heads=H,
                     initializer_factor=F, feed_forward_proj="gated-gelu", tie_word_embeddings=False)

# (pattern on our parameter name, ("normal", std) or ("constant", value)); first match wins
RULES = {
    "gpt": [
        (r"(wte|wpe)\.weight", ("normal", R)),
        (r"blocks\.\d+\.(attn\.o|ff\.wo)\.weight", ("normal", R / math.sqrt(2 * GPT.n_layer))),
        (r"blocks\.\d+\.(attn\.qkv|ff\.wi)\.weight", ("normal", R)),
        (r".*norm\.weight", ("constant", 1.0)),
        (r".*\.bias", ("constant", 0.0)),
    ],
    "bert": [
        (r".*norm\.weight", ("constant", 1.0)),
        (r".*embeddings\.\w+\.weight", ("normal", R)),
        (r".*(attn\.[qkvo]|ff\.wi|ff\.wo|pooler|transform)\.weight", ("normal", R)),
        (r".*bias", ("constant", 0.0)),
    ],
    "t5": [
        (r"(shared|lm_head)\.weight", ("normal", F)),
        (r".*attn\.q\.weight", ("normal", F * (D * DKV) ** -0.5)),
        (r".*attn\.[kv]\.weight", ("normal", F * D ** -0.5)),
        (r".*attn\.o\.weight", ("normal", F * (H * DKV) ** -0.5)),
        (r".*relative_attention_bias\.weight", ("normal", F * D ** -0.5)),
        (r".*ff\.wi(_\d)?\.weight", ("normal", F * D ** -0.5)),
        (r".*ff\.wo\.weight", ("normal", F * DFF ** -0.5)),
        (r".*norm\.weight", ("constant", F)),
    ],
}


def rule_for(family, name):
    for pattern, rule in RULES[family]:
        if re.fullmatch(pattern, name):
            return rule
    raise AssertionError(f"{family} parameter {name} has no initialisation rule in this test; add the one "
                         "transformers' _init_weights applies to it")


@pytest.mark.parametrize("config", [GPT, BERT, T5], ids=["gpt", "bert", "t5"])
def test_every_parameter_is_drawn_as_transformers_draws_it(config):
    mt.manual_seed(0)
    model = models.build(config)
    for name, p in model.named_parameters():
        a = np.asarray(p.data, dtype=np.float64)
        if config.family == "bert" and name.endswith("word_embeddings.weight"):
            assert np.all(a[config.pad_token_id] == 0), f"{name}: the padding row must start at zero"
            a = np.delete(a, config.pad_token_id, axis=0)
        kind, value = rule_for(config.family, name)
        if kind == "constant":
            assert np.all(a == value), f"{name}: expected every entry {value}, got {a.min()} .. {a.max()}"
            continue
        n = a.size
        assert abs(a.mean()) < 5 * value / math.sqrt(n), f"{name}: mean {a.mean():.3g} of N(0, {value:.3g})"
        assert abs(a.std() / value - 1) < 5 / math.sqrt(2 * n), \
            f"{name}: std {a.std():.4g}, expected {value:.4g} (transformers' _init_weights)"
