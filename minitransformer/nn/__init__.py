"""Neural-network building blocks on the autograd engine.

Reading order: ``module`` (Module, Parameter: how weights are held, named, saved and
loaded), ``layers`` (Linear, Embedding, LayerNorm, RMSNorm, Dropout, FeedForward),
``attention`` (multi-head attention, the KV cache, T5's relative position bias),
``blocks`` (encoder and decoder blocks, pre-LN or post-LN).
"""
from minitransformer.nn.module import LoadResult, Module, ModuleList, Parameter
from minitransformer.nn.layers import (
    ACTIVATIONS, Dropout, Embedding, FeedForward, LayerNorm, Linear, RMSNorm, activate,
)
from minitransformer.nn.attention import (
    KVCache, KVSlot, MultiHeadAttention, RelativePositionBias, key_padding_mask,
    relative_position_bucket,
)
from minitransformer.nn.blocks import DecoderBlock, EncoderBlock, TransformerBlock

__all__ = [
    "Module", "ModuleList", "Parameter", "LoadResult", "Linear", "Embedding", "LayerNorm",
    "RMSNorm", "Dropout", "FeedForward", "ACTIVATIONS", "activate", "MultiHeadAttention",
    "KVCache", "KVSlot", "RelativePositionBias", "key_padding_mask", "relative_position_bucket",
    "TransformerBlock", "EncoderBlock", "DecoderBlock",
]
