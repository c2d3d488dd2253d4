"""The families registry: each record agrees with the classes, presets and batches it names."""
import dataclasses
import types

import numpy as np
import pytest

from minitransformer import families, models
from minitransformer.models import count_targets

TOKENIZER = types.SimpleNamespace(vocab_size=200, pad_id=0, eos_id=1, mask_id=2, cls_id=3, sep_id=4,
                                  special_ids=[0, 1, 2, 3, 4])


@pytest.mark.parametrize("fam", families.FAMILIES, ids=families.NAMES)
def test_each_record_names_its_classes_preset_objective_and_batches(fam):
    preset = models.preset(fam.tiny_preset)
    assert isinstance(preset, fam.config_class) and preset.family == fam.name
    assert families.get(fam.name) is fam is families.by_objective(fam.objective) is families.of(preset)
    cfg = dataclasses.replace(preset, vocab_size=TOKENIZER.vocab_size, **fam.shape(32, 1, 2, 16, init_std=0.05))
    model = models.build(cfg)
    assert isinstance(model, fam.model_class) and families.of(model) is fam
    tokens = np.random.default_rng(0).integers(5, 150, 2000)
    batch = fam.make_objective(tokens, TOKENIZER, 16, seed=0).batch(0, 2)
    assert families.of_batch(batch) is fam                       # the batch says which family made it
    assert count_targets(batch) == count_targets(batch, fam.name) == model.count_targets(batch) > 0
    assert float(model.loss(batch).item()) > 0


def test_lookups_refuse_what_is_not_a_family():
    with pytest.raises(ValueError, match="gpt, bert, t5"):
        families.get("llama")
    with pytest.raises(ValueError, match="clm"):
        families.by_objective("mlm2")
    with pytest.raises(TypeError, match="GPTConfig, BERTConfig or T5Config"):
        families.of("gpt")
