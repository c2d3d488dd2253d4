"""Fine-tuning and evaluation: each family at the jobs it suits.

The notes say what each architecture is for: an encoder (BERT) for sentence and token
classification, a decoder (GPT) for generation and zero-shot tasks, an encoder-decoder
(T5) for translation, summarisation and question answering. This package puts each to
its job, starting from a checkpoint pre-trained with this library:

    job          model  how                                   a .jsonl line         metric (baseline)
    classify     BERT   pooled [CLS] -> linear, one label     text, label           accuracy, macro-F1
                                                                                    (majority label)
    tag          BERT   each word's first token -> linear,    tokens, tags          entity F1 (every
                        a BIO tag per word                                          word O; each word's
                                                                                    usual tag)
    seq2seq      T5     the pre-training head, unchanged      input, target         exact match, token
                                                                                    F1 (copy the input)
    zero-shot    GPT    no training: the label whose words    text, label           accuracy, macro-F1
                        are likeliest after a prompt                                (majority label)

Reading order: ``tasks`` (the data: formats, checks, built-in tasks, the pre-training
corpus), ``metrics``, ``loop`` (the fine-tuning loop), ``classify``, ``tag``, ``seq2seq``
(one file per head), ``run`` (checkpoint to report; fine-tuned folders), ``zero_shot``,
``tiny`` (small pre-trained checkpoints of the three families).

    from minitransformer.finetune import FinetuneConfig, builtin, finetune
    report = finetune("classify", "runs/bert", builtin("sentiment", "train", 2000),
                      builtin("sentiment", "test", 300))     # the task's defaults; or a FinetuneConfig
    report["metrics"]["accuracy"], report["baselines"]["majority"]["accuracy"]

    minitransformer finetune --builtin sentiment --model runs/bert --out runs/sentiment
    minitransformer evaluate --model runs/gpt --task sentiment

Measured (CPU, seed 0 unless stated)
------------------------------------
Models of d_model 64, 2 layers, 4 heads, a 1024-token BPE vocabulary; ``tiny.pretrain_tiny``
on the built-in corpus of 10,000 documents (about 420k tokens), 16 x 64 tokens a step:
BERT 2,000 steps of masked LM, T5 2,000 of span corruption, GPT 10,000 of causal LM.
Fine-tuning: batch 16, lr 1e-3 (T5 3e-3), warmup over 10% of the steps, then linear
decay; 500 test examples. "random" is the same architecture, tokenizer, data and steps
from random weights.

    task (metric)          labelled  steps   pre-trained  random   best baseline
    tag (entity F1)          4000     150      0.871      0.642    0.691 (word's usual tag)
                             4000     300      0.985      0.856
                             4000     600      0.996      0.964
                              200     600      0.907      0.814    0.565
    classify (accuracy)      4000     300      0.500      0.752    0.500 (majority)
                             4000    1500      1.000      1.000
                              200    1500      0.570      0.544
    seq2seq (exact match)    4000     300      0.048      0.440    0.000 (copy; token F1 0.671)
                             4000    1500      0.996      0.996
                              200    1500      0.032      0.080
    zero-shot sentiment (GPT, no labelled data): accuracy 0.664, macro-F1 0.656 (majority 0.5)

What the figures say:

- Pre-training pays for tagging at every budget and data size tried, most where
  fine-tuning is short (+23 points at 150 steps) or labels are few (+9 points with 200
  examples): the corpus holds the names, months and contexts that tell "May" the month
  from "May" the name, and masked LM learns them.
- For sentence classification and number translation the pre-trained models start
  slower (the random ones lead at 300 steps) and end level (at 1500 steps both are at
  or near 100%). Our reading, not measured: the corpus teaches little of what these
  tasks need (negation seldom decides which word fills a masked slot, and the corpus's
  digits are random numbers), while the pre-trained weights first have to be moved.
- A tiny GPT learns to answer the prompt "... Overall, it was" with " good" or " bad"
  from the reviews that end that way in its corpus: well above chance, far below a
  fine-tuned BERT (0.987 on 300 test examples after 1000 steps on 2000 labelled ones).
  After the tests' 150 GPT steps it answers one label for everything (0.5), and so does
  the model after 3,000 steps; the command line's ``gpt-tiny`` on the 3,000-document corpus
  stays at chance too (0.497 after 1,000 steps, at its best validation loss, 1.44; 0.483
  after 5,000, by when it has over-fitted that small corpus: validation loss 3.67).
- Warmup matters: with a 20-step warmup a pre-trained BERT's classifier stayed at 50%
  (see ``loop``); all figures here warm up over 10% of the steps.
- So does the rate, with the model: the command line's own ``bert-tiny`` (4 layers,
  width 128; ``minitransformer pretrain --objective mlm --data corpus.jsonl``, 300 steps)
  fine-tuned on sentiment for 1000 steps scores 0.500 at lr 1e-3 (its [CLS] vector
  collapses to one point, see ``loop``) and 0.973 at 3e-4; the width-64 model above
  scores 0.960 at 1e-3 and 0.880 at 3e-4. Tagging the same ``bert-tiny`` for 300 steps:
  0.974 at 1e-3, 0.849 at 3e-4. Number words to digits with ``t5-tiny`` (400 steps of
  span corruption): exact match 0.697 after 1500 steps at 1e-3, 0.343 at 3e-3. Hence the
  defaults of ``FinetuneConfig.for_task``, set for the command line's presets: classify
  1000 steps at 3e-4, tag 300 at 1e-3, seq2seq 1500 at 1e-3.

The tests' smaller run (corpus of 3,000 documents; BERT 300 pre-training steps, GPT and
T5 150; 2,000 labelled examples, 200 test; fine-tuning seeds 0 / 1 / 2): classify 1000
steps 0.965 / 0.960 / 0.845 accuracy (majority 0.5); tag 250 steps 0.773 / 0.788 / 0.783
entity F1 (all O 0, each word's usual tag 0.648); seq2seq 400 steps 0.360 / 0.315 /
0.370 exact match (copy 0), token F1 0.874 / 0.864 / 0.875 (copy 0.678).
"""
from minitransformer.finetune import metrics
from minitransformer.finetune.loop import FinetuneConfig
from minitransformer.finetune.run import (
    evaluate_finetuned, finetune, load_base, load_finetuned, save_finetuned,
)
from minitransformer.finetune.tasks import (
    BUILTIN, TaskDataError, builtin, builtin_task, pretraining_corpus, read_jsonl, write_builtin,
)
from minitransformer.finetune.tiny import TinyConfig, pretrain_tiny
from minitransformer.finetune.zero_shot import PROMPTS, label_scores, zero_shot_classify

__all__ = [
    "FinetuneConfig", "finetune", "evaluate_finetuned", "load_base", "load_finetuned",
    "save_finetuned", "BUILTIN", "TaskDataError", "builtin", "builtin_task", "pretraining_corpus",
    "read_jsonl", "write_builtin", "TinyConfig", "pretrain_tiny", "PROMPTS", "label_scores",
    "zero_shot_classify", "metrics",
]
