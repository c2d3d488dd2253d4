"""Parity with ``transformers``: its random models load here with the same logits, ours load
there with the same logits, greedy generation agrees token for token; and checkpoints that
do not fit are refused with every problem named.

float64 runs compare at 1e-10, float32 at 1e-4, at every non-pad position of random
padded batches. transformers' T5LayerNorm computes its variance in float32 even in a
float64 model (on purpose, for half precision); the float64 T5 tests patch it to compute in
the input's precision, which is the same formula without that rounding.
"""
import json
import logging
import warnings

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import generate, hf, models

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = 40
TOL = {"float64": 1e-10, "float32": 1e-4}
TORCH_DTYPE = {"float64": torch.float64, "float32": torch.float32}


def t5_norm_in_input_precision(monkeypatch, dtype):
    """In float64 runs, let transformers' T5LayerNorm keep float64 (see the module docstring)."""
    if dtype != "float64":
        return
    from transformers.models.t5 import modeling_t5

    def forward(self, h):
        variance = h.pow(2).mean(-1, keepdim=True)
        return self.weight * (h * torch.rsqrt(variance + self.variance_epsilon))
    monkeypatch.setattr(modeling_t5.T5LayerNorm, "forward", forward)


class TransformersLog:
    """Every warning transformers emits (through its logger or the warnings module)."""

    def __init__(self):
        self.records = []

    def __enter__(self):
        self.logger = logging.getLogger("transformers")
        self.handler = logging.Handler(logging.WARNING)
        self.handler.emit = self.records.append
        self.logger.addHandler(self.handler)
        self.catcher = warnings.catch_warnings(record=True)
        self.caught = self.catcher.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self.catcher.__exit__(*exc)
        self.logger.removeHandler(self.handler)

    @property
    def messages(self):
        return ([r.getMessage() for r in self.records if r.levelno >= logging.WARNING]
                + [str(w.message) for w in self.caught])


def padded_batch(rng, b=3, t=7, vocab=VOCAB):
    ids = rng.integers(2, vocab, (b, t))
    mask = np.ones((b, t), dtype=np.int64)
    for row in range(1, b):                       # right padding of different lengths
        mask[row, rng.integers(1, t):] = 0
    ids[mask == 0] = 0
    return ids, mask


def assert_close_where(ours, theirs, mask, dtype):
    keep = mask.astype(bool)
    err = np.abs(np.asarray(ours, np.float64) - np.asarray(theirs, np.float64))[keep].max()
    assert err < TOL[dtype], f"max |difference| {err:.3g} at non-pad positions exceeds {TOL[dtype]}"


# ---------------------------------------------------------------------------------------
# The twins: the same small architecture in transformers and here
# ---------------------------------------------------------------------------------------

def hf_gpt2(**kw):
    return transformers.GPT2Config(vocab_size=VOCAB, n_positions=24, n_embd=16, n_layer=2, n_head=2,
                                   resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1,
                                   eos_token_id=1, initializer_range=0.3, **kw)


def hf_bert(**kw):
    return transformers.BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=24, max_position_embeddings=16, hidden_dropout_prob=0.0,
                                   attention_probs_dropout_prob=0.0, **kw)


def hf_t5(version, **kw):
    proj, tie = ("relu", True) if version == "v1.0" else ("gated-gelu", False)
    return transformers.T5Config(vocab_size=VOCAB, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_decoder_layers=1,
                                 num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=12,
                                 dropout_rate=0.0, feed_forward_proj=proj, tie_word_embeddings=tie,
                                 decoder_start_token_id=0, **kw)


def run_hf(model, family, ids, mask, dec=None, dec_mask=None, types=None):
    with torch.no_grad():
        if family == "t5":
            out = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                        decoder_input_ids=torch.tensor(dec), decoder_attention_mask=torch.tensor(dec_mask))
            return out.logits.numpy()
        if family == "bert-base":
            return model(torch.tensor(ids), attention_mask=torch.tensor(mask),
                         token_type_ids=torch.tensor(types)).last_hidden_state.numpy()
        if family == "bert":
            out = model(torch.tensor(ids), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(types))
            # BertForPreTraining names its MLM logits prediction_logits
            return (out.prediction_logits if hasattr(out, "prediction_logits") else out.logits).numpy()
        return model(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()


def run_ours(model, family, ids, mask, dec=None, dec_mask=None, types=None):
    with mt.no_grad():
        if family == "t5":
            return model(ids, dec, attention_mask=mask, decoder_attention_mask=dec_mask).numpy()
        if family in ("bert", "bert-base"):
            return model(ids, attention_mask=mask, token_type_ids=types).numpy()
        return model(ids, attention_mask=mask).numpy()


def compare(ours, theirs, family, dtype, seed=0):
    rng = np.random.default_rng(seed)
    ids, mask = padded_batch(rng)
    dec, dec_mask = padded_batch(rng, t=5)
    types = rng.integers(0, 2, ids.shape)
    a = run_ours(ours, family, ids, mask, dec, dec_mask, types)
    b = run_hf(theirs, family, ids, mask, dec, dec_mask, types)
    assert a.shape == b.shape
    assert_close_where(a, b, dec_mask if family == "t5" else mask, dtype)


HF_MODELS = {
    "gpt2": lambda: transformers.GPT2LMHeadModel(hf_gpt2()),
    "bert": lambda: transformers.BertForMaskedLM(hf_bert()),
    "bert-pretraining": lambda: transformers.BertForPreTraining(hf_bert()),
    "bert-base": lambda: transformers.BertModel(hf_bert()),
    "t5-v1.0": lambda: transformers.T5ForConditionalGeneration(hf_t5("v1.0")),
    "t5-v1.1": lambda: transformers.T5ForConditionalGeneration(hf_t5("v1.1")),
}
FAMILY = {"gpt2": "gpt", "bert": "bert", "bert-pretraining": "bert", "bert-base": "bert-base",
          "t5-v1.0": "t5", "t5-v1.1": "t5"}
OURS = {"gpt2": models.GPT, "bert": models.BERT, "bert-pretraining": models.BERT, "bert-base": models.BertModel,
        "t5-v1.0": models.T5, "t5-v1.1": models.T5}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(HF_MODELS))
def test_transformers_models_load_here_with_the_same_logits(tmp_path, monkeypatch, name, dtype):
    t5_norm_in_input_precision(monkeypatch, dtype)
    torch.manual_seed(0)
    theirs = HF_MODELS[name]().to(TORCH_DTYPE[dtype]).eval()
    theirs.save_pretrained(tmp_path)
    ours = hf.load_pretrained(tmp_path, dtype=dtype)
    assert isinstance(ours, OURS[name]) and ours.dtype == np.dtype(dtype) and not ours.training
    compare(ours, theirs, FAMILY[name], dtype)


def our_model(name, dtype, seed=0):
    mt.manual_seed(seed)
    if name == "gpt2":
        cfg = models.GPTConfig(vocab_size=VOCAB, n_positions=24, n_embd=16, n_layer=2, n_head=2, bos_token_id=1,
                               eos_token_id=1, initializer_range=0.3)
        return models.GPT(cfg).astype(dtype).eval()
    if name.startswith("bert"):
        cfg = models.BERTConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=24, max_position_embeddings=16)
        return (models.BertModel(cfg) if name == "bert-base" else models.BERT(cfg)).astype(dtype).eval()
    v11 = name == "t5-v1.1"
    cfg = models.T5Config(vocab_size=VOCAB, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_decoder_layers=1,
                          num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=12,
                          dropout_rate=0.0, feed_forward_proj="gated-gelu" if v11 else "relu",
                          tie_word_embeddings=not v11)
    return models.T5(cfg).astype(dtype).eval()


HF_CLASS = {"gpt2": "GPT2LMHeadModel", "bert": "BertForMaskedLM", "bert-base": "BertModel",
            "t5-v1.0": "T5ForConditionalGeneration", "t5-v1.1": "T5ForConditionalGeneration"}
# transformers 5 forces tie_word_embeddings=True on every T5 and, loading a published v1.1
# checkpoint (its own lm_head), warns that it will not tie after all; no config silences it.
T5_V11_TIE_WARNING = "both are present in the checkpoints with different values, so we will NOT tie them"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(HF_CLASS))
def test_our_models_load_in_transformers_without_warnings_and_the_same_logits(tmp_path, monkeypatch, name, dtype):
    t5_norm_in_input_precision(monkeypatch, dtype)
    ours = our_model(name, dtype)
    hf.save_pretrained(ours, tmp_path)
    with TransformersLog() as log:
        theirs = getattr(transformers, HF_CLASS[name]).from_pretrained(tmp_path, dtype=TORCH_DTYPE[dtype]).eval()
    expected = []
    if name == "t5-v1.1" and int(transformers.__version__.split(".")[0]) >= 5:
        expected = [m for m in log.messages if T5_V11_TIE_WARNING in m]
        assert len(expected) == 1
    assert [m for m in log.messages if m not in expected] == []
    compare(ours, theirs, FAMILY[name], dtype, seed=1)


def test_greedy_generation_gives_identical_tokens(tmp_path, monkeypatch):
    t5_norm_in_input_precision(monkeypatch, "float64")
    ours = our_model("gpt2", "float64")
    hf.save_pretrained(ours, tmp_path / "gpt")
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "gpt", dtype=torch.float64).eval()
    prompts = [[5, 6, 7, 8], [9, 10], [11, 12, 13]]
    mine = generate.generate(ours, prompts, max_new_tokens=12, temperature=0.0, eos_id=None, pad_id=0)
    ids, mask = generate.left_pad(prompts, 0)
    with torch.no_grad():
        out = theirs.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=12,
                              do_sample=False, eos_token_id=None, pad_token_id=0)
    assert mine == out[:, ids.shape[1]:].tolist()
    assert len({t for row in mine for t in row}) > 3           # not a degenerate repetition

    torch.manual_seed(3)
    t5 = transformers.T5ForConditionalGeneration(hf_t5("v1.0", initializer_factor=3.0)).double().eval()
    t5.save_pretrained(tmp_path / "t5")
    ours = hf.load_pretrained(tmp_path / "t5", dtype="float64")
    inputs = [[5, 6, 7, 8, 1], [9, 10, 1]]
    mine = generate.seq2seq_greedy(ours, inputs, max_new_tokens=10, eos_id=1, pad_id=0)
    ids, mask = generate._encoder_inputs(inputs, 0)
    with torch.no_grad():
        out = t5.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=10, do_sample=False,
                          num_beams=1)[:, 1:].tolist()           # drop the decoder start token
    theirs = [row[:row.index(1) + 1] if 1 in row else row for row in out]
    assert mine == theirs


def test_save_then_load_gives_identical_weights(tmp_path):
    for name in HF_CLASS:
        ours = our_model(name, "float32", seed=5)
        hf.save_pretrained(ours, tmp_path / name)
        back = hf.load_pretrained(tmp_path / name)
        assert type(back) is type(ours) and back.config == ours.config
        mine, theirs = ours.state_dict(), back.state_dict()
        if name == "bert":        # BertForMaskedLM has no pooler, so none is written by default
            assert set(mine) - set(theirs) == {"bert.pooler.weight", "bert.pooler.bias"}
        else:
            assert set(mine) == set(theirs)
        for k, v in theirs.items():
            np.testing.assert_array_equal(v, mine[k], err_msg=f"{name}: {k}")
    hf.save_pretrained(ours := our_model("bert", "float32"), tmp_path / "pooled", pooler=True)
    np.testing.assert_array_equal(hf.load_pretrained(tmp_path / "pooled").bert.pooler.weight.data,
                                  ours.bert.pooler.weight.data)


def test_sharded_bfloat16_checkpoints_are_read_and_upcast(tmp_path):
    torch.manual_seed(1)
    theirs = transformers.GPT2LMHeadModel(hf_gpt2()).to(torch.bfloat16).eval()
    theirs.save_pretrained(tmp_path, max_shard_size="4KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    ours = hf.load_pretrained(tmp_path, dtype="float32")
    want = theirs.transformer.h[1].mlp.c_fc.weight.detach().float().numpy()
    np.testing.assert_array_equal(ours.blocks[1].ff.wi.weight.data, want.T)
    compare(ours, theirs.float(), "gpt", "float32")

    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[-1]
    (tmp_path / shard).unlink()
    with pytest.raises(FileNotFoundError, match=shard):
        hf.load_pretrained(tmp_path)


def test_pytorch_pickles_are_refused_with_the_reason_and_the_fix(tmp_path):
    (tmp_path / "config.json").write_text(hf_gpt2().to_json_string())
    torch.save(transformers.GPT2LMHeadModel(hf_gpt2()).state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError) as e:
        hf.load_pretrained(tmp_path)
    message = str(e.value)
    assert "pickle" in message and "run" in message and "save_pretrained" in message


def test_checkpoints_that_do_not_fit_are_refused_naming_every_problem(tmp_path):
    from safetensors.torch import load_file, save_file

    theirs = transformers.GPT2LMHeadModel(hf_gpt2())
    theirs.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights.pop("transformer.h.1.mlp.c_fc.bias")
    weights["transformer.extra.weight"] = torch.zeros(2)
    weights["transformer.h.0.ln_1.weight"] = torch.zeros(3)
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(hf.ConversionError) as e:
        hf.load_pretrained(tmp_path)
    message = str(e.value)
    for fragment in ("1 missing", "transformer.h.1.mlp.c_fc.bias", "nothing uses", "transformer.extra.weight",
                     "wrong shape", "transformer.h.0.ln_1.weight (3,) (expected (16,))"):
        assert fragment in message, message


@pytest.mark.parametrize("change, fragment", [
    ({"activation_function": "relu"}, "activation_function"),
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
    ({"model_type": "llama"}, "model_type 'llama'"),
])
def test_configs_we_cannot_compute_are_refused(tmp_path, change, fragment):
    transformers.GPT2LMHeadModel(hf_gpt2()).save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**raw, **change}))
    with pytest.raises(ValueError, match=fragment):
        hf.load_pretrained(tmp_path)


def test_a_tied_copy_that_differs_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    transformers.BertForMaskedLM(hf_bert()).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights["cls.predictions.decoder.weight"] = torch.ones(VOCAB, 16)
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(hf.ConversionError, match="cls.predictions.decoder.weight != bert.embeddings"):
        hf.load_pretrained(tmp_path)


@pytest.mark.parametrize("name", ["gpt2", "bert", "t5-v1.1"])
def test_losses_equal_transformers_losses(tmp_path, monkeypatch, name):
    """The training loss, not only the logits: the same labels (with -100 holes) give the loss
    transformers computes, so a label shift that is off by one cannot hide behind equal logits."""
    t5_norm_in_input_precision(monkeypatch, "float64")
    torch.manual_seed(0)
    theirs = HF_MODELS[name]().double().eval()
    theirs.save_pretrained(tmp_path)
    ours = hf.load_pretrained(tmp_path, dtype="float64")
    rng = np.random.default_rng(2)
    ids, mask = padded_batch(rng)
    labels = np.where((mask == 1) & (rng.random(ids.shape) < 0.7), ids, -100)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    hf_args = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), labels=torch.tensor(labels))
    if name == "bert":
        batch["token_type_ids"] = np.zeros_like(ids)
        hf_args["token_type_ids"] = torch.tensor(batch["token_type_ids"])
    if name.startswith("t5"):
        dec, dec_mask = padded_batch(rng, t=5)
        dec_labels = np.where(dec_mask == 1, rng.integers(2, VOCAB, dec.shape), -100)
        batch.update(decoder_input_ids=dec, decoder_attention_mask=dec_mask, labels=dec_labels)
        hf_args.update(decoder_input_ids=torch.tensor(dec), decoder_attention_mask=torch.tensor(dec_mask),
                       labels=torch.tensor(dec_labels))
    with torch.no_grad():
        expected = float(theirs(**hf_args).loss)
    with mt.no_grad():
        got = float(ours.loss(batch).item())
    # transformers' loss functions upcast logits to float32 (not float64): 1e-6 is that rounding
    assert got == pytest.approx(expected, rel=1e-6), f"{name}: loss {got} here, {expected} in transformers"
