"""Tiny random configs of the three families, for property tests (hypothesis strategies)."""
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer.models import BERTConfig, GPTConfig, T5Config

VOCAB = 20


@st.composite
def gpt_configs(draw, dropout=0.0):
    heads, head_size = draw(st.integers(1, 2)), draw(st.sampled_from([2, 4]))
    return GPTConfig(vocab_size=VOCAB, n_positions=16, n_embd=heads * head_size,
                     n_layer=draw(st.integers(1, 2)), n_head=heads, resid_pdrop=dropout,
                     embd_pdrop=dropout, attn_pdrop=dropout)


@st.composite
def bert_configs(draw, dropout=0.0):
    heads, head_size = draw(st.integers(1, 2)), draw(st.sampled_from([2, 4]))
    return BERTConfig(vocab_size=VOCAB, hidden_size=heads * head_size,
                      num_hidden_layers=draw(st.integers(1, 2)), num_attention_heads=heads,
                      intermediate_size=12, max_position_embeddings=16, hidden_dropout_prob=dropout,
                      attention_probs_dropout_prob=dropout)


@st.composite
def t5_configs(draw, dropout=0.0):
    return T5Config(vocab_size=VOCAB, d_model=8, d_kv=draw(st.sampled_from([2, 4])), d_ff=12,
                    num_layers=draw(st.integers(1, 2)), num_decoder_layers=draw(st.integers(1, 2)),
                    num_heads=draw(st.integers(1, 2)), relative_attention_num_buckets=8,
                    relative_attention_max_distance=12, dropout_rate=dropout,
                    feed_forward_proj=draw(st.sampled_from(["relu", "gated-gelu"])),
                    tie_word_embeddings=draw(st.booleans()))


def model64(config, seed=0):
    """The model of ``config`` in float64 and eval mode, its weights drawn from ``seed``."""
    mt.manual_seed(seed)
    return mt.models.build(config).astype("float64").eval()


def ids(rng, shape, low=0):
    return rng.integers(low, VOCAB, shape)
