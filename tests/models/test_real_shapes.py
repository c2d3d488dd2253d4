"""The real-shape presets are instantiable and match the published models tensor for tensor.

The ``transformers`` twins are built on PyTorch's "meta" device: shapes only, no memory,
no download. Ours are built for real, once each (a few seconds for 124M parameters).
"""
import gc

import pytest

import minitransformer as mt

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

GPT2_PARAMETERS = 124_439_808           # GPT-2 small, the tied head counted once


def _hf_sizes(model):
    """Element counts of every distinct parameter tensor (a tied one counted once)."""
    return sorted(p.numel() for p in model.parameters())


def _hf_models():
    with torch.device("meta"):
        gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config())
        bert = transformers.BertForMaskedLM(transformers.BertConfig())
        pooler = transformers.BertModel(transformers.BertConfig()).pooler
        t5 = transformers.T5ForConditionalGeneration(transformers.T5Config())
    # BertForMaskedLM has no pooler; ours keeps BERT's for sentence tasks.
    return {"gpt2": _hf_sizes(gpt2), "bert-base": sorted(_hf_sizes(bert) + _hf_sizes(pooler)),
            "t5-small": _hf_sizes(t5)}


@pytest.mark.slow
def test_real_shape_presets_match_transformers_parameter_for_parameter():
    theirs = _hf_models()
    assert sum(theirs["gpt2"]) == GPT2_PARAMETERS
    for name in ("gpt2", "bert-base", "t5-small"):
        mt.manual_seed(0)
        model = mt.models.build(mt.models.preset(name))
        ours = sorted(p.size for p in model.parameters())
        assert model.num_parameters() == sum(theirs[name]), name
        assert ours == theirs[name], name
        del model
        gc.collect()
