"""Pre-training objectives: a token stream in, batches of model inputs and labels out.

- ``CLMObjective``: causal LM (GPT), packed blocks, predict the next token.
- ``MLMObjective``: masked LM (BERT/RoBERTa), 15% selected, 80/10/10, dynamic masks.
- ``SpanCorruptionObjective``: T5's span corruption, sentinels replace noise spans.

All three share one shape of API (``objectives.blocks``): built from a 1-D token stream
(documents joined with EOS), explicit special ids, a block length and a seed;
``batch(index, batch_size, rows=None)`` is a pure function of those, returning a dict of
int64 NumPy arrays whose keys are the model's argument names. Nothing here imports the
autograd, layers or models, and nothing depends on a tokenizer object: a synthetic stream
of symbols 0..K-1 with a few special ids above works the same.
"""
from minitransformer.objectives.blocks import IGNORE_INDEX, BlockObjective
from minitransformer.objectives.clm import CLMObjective
from minitransformer.objectives.mlm import MLMObjective
from minitransformer.objectives.span_corruption import (
    SpanCorruptionObjective,
    compute_input_and_target_lengths,
    noise_counts,
    noise_span_to_unique_sentinel,
    nonnoise_span_to_unique_sentinel,
    random_spans_noise_mask,
)

__all__ = [
    "IGNORE_INDEX", "BlockObjective", "CLMObjective", "MLMObjective", "SpanCorruptionObjective",
    "random_spans_noise_mask", "compute_input_and_target_lengths", "noise_counts",
    "noise_span_to_unique_sentinel", "nonnoise_span_to_unique_sentinel",
]
