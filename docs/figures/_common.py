"""What several figures share: a small slice of the built-in corpus, its tokenizer, one sweep.

Everything is seeded and small, so the whole book builds in about a minute on two cores;
results are cached for the life of the build process, so each is computed once.
"""
from __future__ import annotations

import functools
import re
import tempfile
from pathlib import Path

from minitransformer import data

N_DOCS = 600            # documents of the built-in corpus the figures train on
VOCAB = 512             # BPE vocabulary of those figures (bytes + specials + sentinels + merges)
SEED = 0


@functools.cache
def documents() -> tuple:
    """The first N_DOCS documents of the built-in corpus (docstrings of the standard library)."""
    return tuple(data.default_corpus()[:N_DOCS])


@functools.cache
def tokenizer(vocab_size: int = VOCAB):
    return data.BPETokenizer.train(documents(), vocab_size)


@functools.cache
def sentence(min_words: int = 8, max_words: int = 14) -> str:
    """The first plain sentence of the corpus of a readable length: a real example, not a made-up one."""
    for doc in documents():
        for s in re.split(r"(?<=\.)\s+", " ".join(doc.split())):
            words = s.split()
            if min_words <= len(words) <= max_words and re.fullmatch(r"[A-Z][A-Za-z ,']+\.", s):
                return s
    raise RuntimeError("no plain sentence in the corpus slice; widen N_DOCS")


def token_labels(tok, ids) -> list[str]:
    """A short printable label for each token id."""
    out = []
    for i in ids:
        i = int(i)
        if tok.is_special(i):
            name = tok.id_to_token(i)
            out.append(re.sub(r"<extra_id_(\d+)>", r"<X\1>", name))
        else:
            out.append(tok.decode([i]).replace(" ", "\u2423").replace("\n", "\\n"))
    return out


SWEEP_WIDTHS = (16, 24, 32, 48, 64)     # GPT widths of the scaling sweep, 1 layer each
SWEEP_BLOCK = 32
SWEEP_BATCH = 16
SWEEP_TOKENS = SWEEP_BLOCK * SWEEP_BATCH * 60      # 60 steps per size


@functools.cache
def sweep() -> tuple:
    """A small seeded GPT scaling sweep: (results, analysis, folder). The loss-curve and the
    scaling figures both read it, so it runs once per build."""
    from minitransformer import objectives, scaling
    from minitransformer.finetune.tiny import tokens_of

    tok = tokenizer()
    docs = documents()
    cut = len(docs) * 9 // 10
    train = objectives.CLMObjective(tokens_of(docs[:cut], tok), SWEEP_BLOCK, eos_id=tok.eos_id, seed=SEED)
    val = objectives.CLMObjective(tokens_of(docs[cut:], tok), SWEEP_BLOCK, eos_id=tok.eos_id,
                                  seed=SEED + 1, shuffle=False)
    runs = [(s.name, scaling.sweep_config("gpt", s, tok, SWEEP_BLOCK))
            for s in (scaling.parse_size(f"{w}x1x2") for w in SWEEP_WIDTHS)]
    folder = Path(tempfile.mkdtemp(prefix="book-sweep-"))
    results = scaling.run_sweep(runs, train, val, folder, tokens=SWEEP_TOKENS, batch_size=SWEEP_BATCH,
                                seed=SEED, max_eval_batches=4)
    return results, scaling.analyse(results), folder
