"""The book's table of contents: the one place that lists chapters, modules and figures.

Each chapter is one step of the reading order (lowest layer first) and names its modules by
their package-level import path. A package stands for all of its modules, so a module that
moves inside its package, or a file that becomes a package, needs no edit here; a module
that appears or leaves the library does (``tests/docs`` checks that every module of the
library belongs to exactly one chapter).

The Sphinx extension in ``_ext/minibook.py`` reads this file to write the API page of each
chapter, the "where next" link at each chapter's end, and to run the figure scripts.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Chapter:
    slug: str            # the chapter's file: chapters/<slug>.md
    title: str
    modules: tuple       # import paths; a package includes its submodules


CHAPTERS = (
    Chapter("backend", "Arrays on two devices", ("minitransformer.backend",)),
    Chapter("tensor", "The Tensor and backward()",
            ("minitransformer.autograd.tensor", "minitransformer.autograd.function",
             "minitransformer.autograd")),
    Chapter("ops", "Every op, forward beside backward", ("minitransformer.autograd.ops",)),
    Chapter("gradcheck", "Checking a backward", ("minitransformer.autograd.gradcheck", "minitransformer.testing")),
    Chapter("functional", "Softmax, cross-entropy, norms, attention", ("minitransformer.functional",)),
    Chapter("nn", "Modules, layers and attention", ("minitransformer.nn",)),
    Chapter("models", "GPT-2, BERT and T5", ("minitransformer.models",)),
    Chapter("data", "Tokenizer, corpora and curation", ("minitransformer.data",)),
    Chapter("objectives", "What each family is asked to predict", ("minitransformer.objectives",)),
    Chapter("training", "AdamW, the loop, checkpoints",
            ("minitransformer.optim", "minitransformer.train", "minitransformer.checkpoint",
             "minitransformer.atomic", "minitransformer.jobs")),
    Chapter("generate", "Sampling, the KV cache, beam search", ("minitransformer.generate",)),
    Chapter("finetune", "Fine-tuning and zero-shot", ("minitransformer.finetune",)),
    Chapter("kernels", "The fast twins: Numba kernels", ("minitransformer.kernels",)),
    Chapter("hf", "Checkpoints in the transformers format", ("minitransformer.hf", "minitransformer.limits")),
    Chapter("dist", "Data-parallel training", ("minitransformer.dist",)),
    Chapter("scaling", "Cost, memory and scaling laws", ("minitransformer.scaling",)),
    Chapter("cli", "Recipes, model cards and the command line",
            ("minitransformer.families", "minitransformer.recipes", "minitransformer.model_card",
             "minitransformer.cli")),
)

# Figure scripts in figures/<name>.py, each with make(out_dir) -> dict of facts; the build
# runs every one once and writes figures/<name>.png into the generated folder.
FIGURES = ("graph", "objectives", "masks", "bpe", "flash_tiles", "loss_curve", "curation", "scaling")

# Notebooks (MyST markdown, jupytext's "myst" format) executed by every build.
NOTEBOOKS = ("gradcheck", "attention")
