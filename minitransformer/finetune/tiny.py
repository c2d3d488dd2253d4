"""Small pre-trained checkpoints of the three families, for the built-in tasks.

``pretrain_tiny(out_dir)`` writes ``out_dir/{bert,gpt,t5}``: each family pre-trained with
its own objective (masked LM, causal LM, span corruption) on ``tasks.pretraining_corpus``,
all three sharing one byte-level BPE tokenizer trained on that corpus. These are the
checkpoints the fine-tuning tests start from (a few hundred steps) and the ones the
longer comparison of pre-trained against random initialisation uses (more steps).
The same run with the command line:

    minitransformer finetune --write-builtin data/
    minitransformer pretrain --objective mlm --data data/corpus.jsonl --vocab-size 1024 --block-size 64

(with the tiny presets there, which are wider than the defaults here).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy

from minitransformer import backend, data, models, recipes
from minitransformer.families import get as get_family
from minitransformer.finetune.tasks import pretraining_corpus
from minitransformer.train import TrainConfig, Trainer


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    d_model: int = 64           # width of every model
    layers: int = 2             # blocks (T5: in each stack)
    heads: int = 4
    block_size: int = 64        # tokens per pre-training sequence (T5: encoder inputs)
    vocab_size: int = 1024      # BPE vocabulary, trained on the corpus
    n_docs: int = 3000          # documents of the generated corpus (about 125k tokens)
    batch_size: int = 16
    seed: int = 0


def tokens_of(docs, tokenizer) -> numpy.ndarray:
    """The documents as one token stream with EOS after each (what pre-training reads)."""
    ids = []
    for doc in docs:
        ids += tokenizer.encode(doc, disallowed_special=())
        ids.append(tokenizer.eos_id)
    return numpy.array(ids, dtype=numpy.int64)


def pretrain_tiny(out_dir, families=("bert", "gpt", "t5"), steps: int | dict = 300,
                  config: TinyConfig = TinyConfig(), progress=None) -> dict:
    """Pre-train small models of ``families`` on the built-in corpus; returns family -> folder.

    ``steps``: optimizer steps, one number or a dict per family. ``progress(family, metrics)``
    is called after every step.
    """
    out_dir = Path(out_dir)
    docs = pretraining_corpus(config.n_docs, seed=config.seed + 1)
    train_docs, val_docs = docs[:-max(1, len(docs) // 50)], docs[-max(1, len(docs) // 50):]
    tokenizer = data.BPETokenizer.train(train_docs, config.vocab_size)
    train_ids, val_ids = tokens_of(train_docs, tokenizer), tokens_of(val_docs, tokenizer)
    folders = {}
    for family in families:
        fam = get_family(family)
        objective = fam.objective
        n = steps[family] if isinstance(steps, dict) else steps
        shape = fam.shape(config.d_model, config.layers, config.heads, config.block_size)
        cfg = recipes.model_config(fam.tiny_preset, tokenizer, config.block_size, **shape)
        backend.manual_seed(config.seed)
        model = models.build(cfg)
        train_cfg = TrainConfig(objective=objective, steps=n, batch_size=config.batch_size,
                                lr=fam.small_lr, warmup=min(30, max(1, n // 10)), eval_every=0,
                                eval_batches=4, save_every=0, keep_checkpoints=1, seed=config.seed)
        trainer = Trainer(
            model,
            recipes.make_objective(objective, train_ids, tokenizer, config.block_size, config.seed),
            recipes.make_objective(objective, val_ids, tokenizer, config.block_size, config.seed + 1,
                                   shuffle=False),
            train_cfg, out_dir / family, tokenizer=tokenizer,
            card_info={"name": f"tiny {family} for the built-in fine-tuning tasks", "objective": objective,
                       "data": f"the generated fine-tuning corpus, {len(train_docs)} documents",
                       "tokenizer": f"byte-level BPE, {tokenizer.vocab_size} tokens"})
        trainer.fit(None if progress is None else (lambda m, f=family: progress(f, m)))
        folders[family] = out_dir / family
    return folders
