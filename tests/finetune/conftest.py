"""Tiny pre-trained checkpoints shared by the fine-tuning tests."""
import pytest

from minitransformer.finetune.tiny import TinyConfig, pretrain_tiny

# Pre-training steps per family. Time budget of the fixture: about 20 s on a quiet 2-core
# machine (600 steps of 16 x 64 tokens on d_model 64, 2-layer models, 25-35 ms a step, plus
# about a second to generate the corpus and train the tokenizer); the fine-tuning tests
# that use it add about 30 s. Enough for each to be a real checkpoint of its family that
# has learned something of the corpus, not enough to make it a good one: the tests ask
# fine-tuning to beat the baselines; what longer pre-training buys over random weights
# is measured in the notes of the finetune package, not here.
STEPS = {"bert": 300, "gpt": 150, "t5": 150}


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """{"bert": dir, "gpt": dir, "t5": dir}: tiny models pre-trained on the built-in corpus
    with masked LM, causal LM and span corruption (see STEPS for the budget)."""
    root = tmp_path_factory.mktemp("tiny-pretrained")
    return {k: str(v) for k, v in pretrain_tiny(root, steps=STEPS, config=TinyConfig()).items()}
