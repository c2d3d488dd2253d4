"""Checkpoints in the ``transformers`` format: load published models, publish ours.

    model = mt.hf.load_pretrained("path/to/folder")       # config.json + model.safetensors
    model = mt.hf.load_pretrained("openai-community/gpt2")  # a hub id, through huggingface_hub's cache
    tok = mt.hf.load_tokenizer_json("path/to/folder")     # BPE, WordPiece or Unigram
    mt.hf.save_pretrained(model, "out/", tokenizer=tok)   # transformers loads it as it is

Most work starts from a published foundation model rather than from scratch; this package
lets our GPT, BERT and T5 run published GPT-2, BERT and T5 checkpoints exactly, and lets
models trained here be used by ``transformers``. Only safetensors are read: a PyTorch pickle
(``pytorch_model.bin``) can run arbitrary code when loaded, so it is refused with the
command that converts it.

Reading order: ``tensor_file`` (the safetensors format, by hand: a length, a JSON header,
raw little-endian bytes), ``architectures`` (per transformers architecture, the config
translation and the table from our parameter names to transformers keys), ``convert`` (the
folder-level load and save, with the report of every missing, unused or mis-shaped tensor),
``hub`` (a hub id to a folder of huggingface_hub's cache; a folder that exists always wins),
``tokenizer_steps`` (the normalizers, pre-tokenizers, decoders and post-processors a
tokenizer.json names) and ``tokenizer_json`` (the WordPiece and Unigram pipelines built from
them, and the loader for any tokenizer.json).
"""
from minitransformer.hf.architectures import FAMILIES, UnsupportedConfig
from minitransformer.hf.convert import ConversionError, load_pretrained, read_weights, save_pretrained
from minitransformer.hf.hub import locate
from minitransformer.hf.tensor_file import TensorFileError, read_tensors, write_tensors
from minitransformer.hf.tokenizer_json import load_tokenizer_json

__all__ = [
    "load_pretrained", "save_pretrained", "load_tokenizer_json", "read_weights", "read_tensors",
    "write_tensors", "locate", "ConversionError", "TensorFileError", "UnsupportedConfig", "FAMILIES",
]
