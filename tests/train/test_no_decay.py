"""Weight decay: which parameters each family decays, exactly.

The usual recipe (GPT-2, BERT, T5 pre-training code) decays only the weight matrices of the
linear maps (attention projections, feed-forward, pooler and MLM transform) and leaves alone
biases, normalisation gains and shifts, embedding tables (token, position, token type) and T5's
relative position bias. The sets below are written out by hand, not derived from the code.
"""
import pytest

from minitransformer import models, optim

GPT = models.GPTConfig(vocab_size=50, n_positions=16, n_embd=8, n_layer=2, n_head=2)
BERT = models.BERTConfig(vocab_size=50, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=16, max_position_embeddings=16)
T5 = models.T5Config(vocab_size=50, d_model=8, d_kv=4, d_ff=16, num_layers=2, num_heads=2,
                     feed_forward_proj="gated-gelu", tie_word_embeddings=False)
LAYERS = range(2)

DECAYED = {
    "gpt": {f"blocks.{i}.{m}.weight" for i in LAYERS for m in ("attn.qkv", "attn.o", "ff.wi", "ff.wo")},
    "bert": {f"bert.blocks.{i}.{m}.weight" for i in LAYERS
             for m in ("attn.q", "attn.k", "attn.v", "attn.o", "ff.wi", "ff.wo")}
            | {"bert.pooler.weight", "mlm.transform.weight"},
    "t5": {f"encoder.blocks.{i}.{m}.weight" for i in LAYERS
           for m in ("attn.q", "attn.k", "attn.v", "attn.o", "ff.wi_0", "ff.wi_1", "ff.wo")}
          | {f"decoder.blocks.{i}.{m}.weight" for i in LAYERS
             for m in ("attn.q", "attn.k", "attn.v", "attn.o", "cross_attn.q", "cross_attn.k", "cross_attn.v",
                       "cross_attn.o", "ff.wi_0", "ff.wi_1", "ff.wo")}
          | {"lm_head.weight"},
}

EXEMPT = {
    "gpt": {"wte.weight", "wpe.weight", "final_norm.weight", "final_norm.bias"}
           | {f"blocks.{i}.{m}" for i in LAYERS
              for m in ("attn_norm.weight", "attn_norm.bias", "ff_norm.weight", "ff_norm.bias",
                        "attn.qkv.bias", "attn.o.bias", "ff.wi.bias", "ff.wo.bias")},
    "bert": {"bert.embeddings.word_embeddings.weight", "bert.embeddings.position_embeddings.weight",
             "bert.embeddings.token_type_embeddings.weight", "bert.embeddings.norm.weight",
             "bert.embeddings.norm.bias", "bert.pooler.bias", "mlm.bias", "mlm.transform.bias",
             "mlm.norm.weight", "mlm.norm.bias"}
            | {f"bert.blocks.{i}.{m}" for i in LAYERS
               for m in ("attn_norm.weight", "attn_norm.bias", "ff_norm.weight", "ff_norm.bias", "attn.q.bias",
                         "attn.k.bias", "attn.v.bias", "attn.o.bias", "ff.wi.bias", "ff.wo.bias")},
    "t5": {"shared.weight", "encoder.relative_attention_bias.weight", "decoder.relative_attention_bias.weight",
           "encoder.final_norm.weight", "decoder.final_norm.weight"}
          | {f"encoder.blocks.{i}.{m}.weight" for i in LAYERS for m in ("attn_norm", "ff_norm")}
          | {f"decoder.blocks.{i}.{m}.weight" for i in LAYERS for m in ("attn_norm", "cross_norm", "ff_norm")},
}


@pytest.mark.parametrize("config", [GPT, BERT, T5], ids=["gpt", "bert", "t5"])
def test_no_decay_names_are_exactly_biases_norms_and_embeddings(config):
    model = models.build(config)
    names = {n for n, _ in model.named_parameters()}
    family = config.family
    assert DECAYED[family] | EXEMPT[family] == names, "the test's lists no longer cover the model"
    skip = optim.no_decay_names(model)
    assert sorted(skip - EXEMPT[family]) == [], "these would not be decayed but should be"
    assert sorted(EXEMPT[family] - skip) == [], "these would be decayed but must not be"
