"""What every objective shares: cutting a token stream into blocks and scheduling them.

A token stream is a 1-D integer array (often a memory-mapped token file): all documents
joined, an EOS after each. An objective cuts it into ``num_blocks`` consecutive windows of
``window`` tokens (the last one may be shorter) and turns a batch of windows into model
inputs and labels.

Which windows batch ``index`` holds is a pure function of (seed, index, batch_size): row r
of batch i is sample number ``p = i * batch_size + r``; sample p belongs to epoch
``p // num_blocks`` and is block ``perm_epoch[p % num_blocks]``, where ``perm_epoch`` is a
permutation seeded by (seed, epoch). Any randomness inside a row (MLM masks, span noise)
comes from a generator seeded by (seed, epoch, block). So:

- no hidden state: resuming at step i, or asking twice, gives the same batch;
- data-parallel ranks can each build only their rows (``rows=slice(a, b)``) and together
  hold exactly the full batch;
- every epoch visits the blocks in a new order, and re-draws the masks.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

IGNORE_INDEX = -100     # label value the cross-entropy loss skips

# Distinct random streams for each objective and purpose (part of every seed sequence).
_PERMUTATION, _ROW = 0, 1


def as_token_stream(tokens, name: str = "tokens") -> np.ndarray:
    """``tokens`` as a 1-D integer array, without copying a memory-mapped file."""
    if not isinstance(tokens, np.ndarray):
        tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of token ids (documents joined with EOS), "
                         f"got shape {tokens.shape}")
    if tokens.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integers, got dtype {tokens.dtype}")
    if tokens.size == 0:
        raise ValueError(f"{name} is empty; tokenize a non-empty corpus first")
    return tokens


def check_id(value, name: str, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a token id (an integer >= 0), got {value!r}")
    return int(value)


class BlockObjective(ABC):
    """Base class: blocks of a token stream, a seeded schedule, and ``batch``.

    Subclasses set ``_tag`` (keeps their random streams apart) and implement
    ``_build(windows, rngs)``, which turns the raw windows of the requested rows (and one
    generator per row) into the batch dict.
    """

    _tag = 0

    def __init__(self, tokens, window: int, seed: int, shuffle: bool = True):
        self.tokens = as_token_stream(tokens)
        if not isinstance(window, (int, np.integer)) or window < 1:
            raise ValueError(f"block length must be a positive integer, got {window!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        self.window = int(window)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.num_blocks = -(-len(self.tokens) // self.window)      # the last may be partial
        self._permutations: dict[int, np.ndarray] = {}             # a memo, not state

    def permutation(self, epoch: int) -> np.ndarray:
        """The order in which epoch ``epoch`` visits the blocks."""
        if not self.shuffle:
            return np.arange(self.num_blocks)
        if epoch not in self._permutations:
            if len(self._permutations) >= 2:
                self._permutations.clear()
            rng = np.random.default_rng([self.seed, self._tag, _PERMUTATION, epoch, 0])
            self._permutations[epoch] = rng.permutation(self.num_blocks)
        return self._permutations[epoch]

    def epoch(self, index: int, batch_size: int) -> int:
        """The epoch that the first row of batch ``index`` belongs to."""
        return index * batch_size // self.num_blocks

    def samples(self, index: int, batch_size: int, rows=None) -> tuple[np.ndarray, np.ndarray]:
        """(epoch, block) of each requested row of batch ``index``."""
        if not isinstance(index, (int, np.integer)) or index < 0:
            raise ValueError(f"batch index must be an integer >= 0, got {index!r}")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if rows is None:
            rows = range(batch_size)
        elif isinstance(rows, slice):
            rows = range(*rows.indices(batch_size))
        elif not isinstance(rows, range):
            raise ValueError(f"rows must be a slice or range of rows 0..{batch_size - 1}, got {rows!r}")
        if len(rows) and (min(rows) < 0 or max(rows) >= batch_size):
            raise ValueError(f"rows {rows} fall outside batch rows 0..{batch_size - 1}")
        positions = [index * batch_size + r for r in rows]
        epochs = np.array([p // self.num_blocks for p in positions], dtype=np.int64)
        blocks = np.array([self.permutation(p // self.num_blocks)[p % self.num_blocks]
                           for p in positions], dtype=np.int64)
        return epochs, blocks

    def window_tokens(self, block: int) -> np.ndarray:
        """The raw tokens of block ``block`` as int64 (the last block may be short)."""
        start = int(block) * self.window
        return np.asarray(self.tokens[start:start + self.window], dtype=np.int64)

    def row_rng(self, epoch: int, block: int) -> np.random.Generator:
        """The generator for randomness inside one row: fixed by (seed, epoch, block)."""
        return np.random.default_rng([self.seed, self._tag, _ROW, int(epoch), int(block)])

    def batch(self, index: int, batch_size: int, rows=None) -> dict[str, np.ndarray]:
        """Batch ``index`` of ``batch_size`` rows (or only ``rows``, a slice of them).

        A pure function of (seed, index, batch_size, rows): arrays of shape
        (len(rows), length); ids and labels int64, attention masks int64 0/1.
        """
        epochs, blocks = self.samples(index, batch_size, rows)
        windows = [self.window_tokens(b) for b in blocks]
        rngs = [self.row_rng(e, b) for e, b in zip(epochs, blocks)]
        return self._build(windows, rngs)

    @abstractmethod
    def _build(self, windows: list[np.ndarray], rngs: list[np.random.Generator]) -> dict:
        """The batch dict for these raw windows, one generator per row."""
