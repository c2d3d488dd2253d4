"""From text to a training run: the steps ``minitransformer pretrain`` takes.

1. Read documents (files, folders, .jsonl; or the built-in corpus) and split them into
   train and validation by document hash.
2. Train a byte-level BPE tokenizer on the training documents (cached by content).
3. Tokenize both splits once into memory-mapped token files (cached by content).
4. Wrap the token streams in the objective of the model's family.
5. Build the model with the tokenizer's vocabulary size, and a ``Trainer``.

Each step is a function, so a script (or a test) can run the same pipeline on its own data.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from minitransformer import data, families, models
from minitransformer.train import TrainConfig, Trainer

def check_objective(objective: str, preset: str | None) -> str:
    """The preset to use for ``objective``; a preset of another family is an error."""
    want = families.by_objective(objective)
    preset = preset or want.tiny_preset
    family = models.preset(preset).family
    if family != want.name:
        raise ValueError(f"preset {preset!r} is a {family} model, but objective {objective!r} trains "
                         f"{want.name} models; pick e.g. --preset {want.tiny_preset}")
    return preset


def load_corpus(paths=None, val_fraction: float = 0.02):
    """(train documents, validation documents, a description of the data)."""
    if paths:
        docs = list(data.read_documents(paths))
        source = ", ".join(str(p) for p in paths)
    else:
        docs = data.default_corpus()
        source = "the built-in corpus (docstrings of the Python standard library)"
    if not docs:
        raise ValueError(f"no documents found in {source}; give .txt or .jsonl files with text")
    train_docs, val_docs = data.split_documents(docs, val_fraction=val_fraction)
    if not val_docs:                    # tiny corpora: hold out at least one document
        train_docs, val_docs = docs[:-1] or docs, docs[-1:]
    return train_docs, val_docs, f"{source}: {len(train_docs)} training and {len(val_docs)} validation documents"


def _digest(docs, *extra) -> str:
    h = hashlib.sha256()
    for x in extra:
        h.update(repr(x).encode())
    for d in docs:
        h.update(hashlib.sha256(d.encode("utf-8", "surrogatepass")).digest())
    return h.hexdigest()[:24]


def train_tokenizer(docs, vocab_size: int, cache: bool = True):
    """A BPE tokenizer for ``docs`` (reused from the cache when the same corpus was seen)."""
    path = data.cache_dir() / "tokenizers" / f"bpe-{vocab_size}-{_digest(docs, vocab_size)}.json"
    if cache and path.is_file():
        return data.BPETokenizer.load(path)
    tok = data.BPETokenizer.train(docs, vocab_size)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tok.save(path)
    return tok


def token_stream(docs, tokenizer, split: str):
    """The documents as one memory-mapped token array (EOS after each), cached on disk."""
    key = data.corpus_key(docs, tokenizer)
    path = data.cache_dir() / "tokens" / f"{split}-{key[:24]}.tokens"
    data.tokenize_to_file(docs, tokenizer, path, key=key)
    return data.load_tokens(path)


def make_objective(objective: str, tokens, tokenizer, block_size: int, seed: int, shuffle: bool = True):
    """The batch builder of ``objective`` over a token stream."""
    return families.by_objective(objective).make_objective(tokens, tokenizer, block_size, seed, shuffle)


def model_config(preset: str, tokenizer, block_size: int, **overrides):
    """The preset's config with the tokenizer's vocabulary and special ids."""
    cfg = models.preset(preset)
    fields = {f.name for f in dataclasses.fields(cfg)}
    changes = {"vocab_size": tokenizer.vocab_size}
    if "pad_token_id" in fields:
        changes["pad_token_id"] = tokenizer.pad_id
    if "eos_token_id" in fields:
        changes["eos_token_id"] = tokenizer.eos_id
    if "bos_token_id" in fields:                  # GPT-2 starts documents with its EOS token
        changes["bos_token_id"] = tokenizer.eos_id
    if "decoder_start_token_id" in fields:
        changes["decoder_start_token_id"] = tokenizer.pad_id
    for name in ("n_positions", "max_position_embeddings"):
        if name in fields and getattr(cfg, name) < block_size:
            changes[name] = block_size
    changes.update({k: v for k, v in overrides.items() if v is not None})
    return dataclasses.replace(cfg, **changes)


def build_run(objective: str = "clm", data_paths=None, preset: str | None = None, out_dir="runs/default",
              vocab_size: int = 4096, block_size: int = 128, train_config: TrainConfig | None = None,
              dtype: str = "float32", model_overrides: dict | None = None):
    """Everything ``pretrain`` needs, ready to ``fit``: returns the Trainer. ``model_overrides``
    changes fields of the preset's config (``{"n_layer": 2}``)."""
    preset = check_objective(objective, preset)
    train_docs, val_docs, description = load_corpus(data_paths)
    tokenizer = train_tokenizer(train_docs, vocab_size)
    train_cfg = train_config or TrainConfig(objective=objective)
    if train_cfg.objective != objective:
        train_cfg = dataclasses.replace(train_cfg, objective=objective)
    train_tokens = token_stream(train_docs, tokenizer, "train")
    val_tokens = token_stream(val_docs, tokenizer, "val")
    train_obj = make_objective(objective, train_tokens, tokenizer, block_size, train_cfg.seed)
    val_obj = make_objective(objective, val_tokens, tokenizer, block_size, train_cfg.seed + 1, shuffle=False)

    from minitransformer.backend import manual_seed

    manual_seed(train_cfg.seed)
    model = models.build(model_config(preset, tokenizer, block_size, **(model_overrides or {})))
    if dtype != "float32":
        model.astype(dtype)
    info = {"name": f"{preset} pre-trained with {objective}", "objective": objective, "data": description,
            "tokenizer": f"byte-level BPE, {tokenizer.vocab_size} tokens, trained on the training split",
            "preset": preset}
    return Trainer(model, train_obj, val_obj, train_cfg, Path(out_dir), tokenizer=tokenizer, card_info=info)
