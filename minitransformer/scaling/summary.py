"""The accounting of one model at a glance: what ``minitransformer info`` prints.

Parameters (``parameters``), training FLOPs (``flops``), memory by part (``memory``) and the
Chinchilla-optimal token budget, for a batch of a given shape.
"""
from __future__ import annotations

import dataclasses

import numpy

from minitransformer.scaling.flops import chinchilla_tokens, matmul_parameters, training_flops_per_token
from minitransformer.scaling.memory import activation_memory, resolve_kernels, training_memory
from minitransformer.scaling.parameters import count_parameters, family_of


def si(x: float, unit: str = "") -> str:
    """``x`` with an SI prefix, three significant digits: 1.23e9 -> "1.23 G"."""
    for scale, prefix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {prefix}{unit}".rstrip()
    return f"{x:.3g} {unit}".rstrip()


def mib(x: float) -> str:
    """Bytes as MiB, or GiB from 1 GiB up."""
    return f"{x / 2 ** 20:,.1f} MiB" if x < 2 ** 30 else f"{x / 2 ** 30:,.2f} GiB"


def account(config, batch_size: int = 16, seq_len: int | None = None, dtype="float32",
            decoder_len: int | None = None, kernels=None) -> dict:
    """Every number of the accounting at once: parameters, FLOPs, memory, Chinchilla tokens.

    ``seq_len`` defaults to the config's position limit (512 for T5, which has none).
    """
    family = family_of(config)
    seq_len = seq_len or config.max_positions or 512
    k = resolve_kernels(kernels)
    params = count_parameters(config)
    per_token = training_flops_per_token(config, seq_len, decoder_len)
    return {
        "family": family.name,
        "batch_size": batch_size, "seq_len": seq_len, "dtype": str(numpy.dtype(dtype)),
        "parameters": params,
        # an encoder-decoder has two kinds of tokens: no single N per token
        "matmul_parameters": None if family.architecture == "encoder-decoder" else matmul_parameters(config),
        "flops_per_token": per_token,
        "flops_per_step": per_token * batch_size * seq_len,
        "memory": training_memory(config, batch_size, seq_len, dtype, decoder_len, k),
        "activations": activation_memory(config, batch_size, seq_len, dtype, decoder_len, k),
        "kernels": dataclasses.asdict(k),
        "chinchilla_tokens": chinchilla_tokens(params["total"]),
    }


def summary(config, batch_size: int = 16, seq_len: int | None = None, dtype="float32") -> list[str]:
    """Printable lines: parameter counts, training FLOPs, memory by part, Chinchilla tokens."""
    a = account(config, batch_size, seq_len, dtype)
    p, m = a["parameters"], a["memory"]
    tokens = a["chinchilla_tokens"]
    t = a["seq_len"]
    two_stacks = family_of(config).architecture == "encoder-decoder"
    where = "per encoder token, decoder as long" if two_stacks else "per token"
    attention = "tiled" if a["kernels"]["attention"] else "reference"
    return [
        f"parameters: {p['total']:,} ({p['non_embedding']:,} non-embedding, "
        f"{p['embedding']:,} embedding)",
        f"training FLOPs ({where}, T = {t}): {si(a['flops_per_token'], 'FLOP')} "
        f"(6 N + 12 L d T); one step of {batch_size} x {t} tokens: {si(a['flops_per_step'], 'FLOP')}",
        f"training memory ({a['dtype']}, AdamW, batch {batch_size} x {t}, {attention} attention): "
        f"{mib(m['total'])} = weights {mib(m['weights'])} + gradients {mib(m['gradients'])} "
        f"+ Adam moments {mib(m['adam_states'])} + activations {mib(m['activations'])} "
        f"+ backward workspace {mib(m['workspace'])}",
        f"Chinchilla-optimal training: {si(tokens)} tokens (20 per parameter), "
        f"{si(6 * p['total'] * tokens, 'FLOP')} at 6 N D",
    ]
