"""Checking what a model is given: integer id arrays and 0/1 masks of matching shapes.

Models take NumPy or CuPy integer arrays (or integer Tensors, or nested lists) and move
them to the model's device, so a batch built on the host runs on a GPU model unchanged.
"""
from __future__ import annotations

import numpy

from minitransformer import backend
from minitransformer.autograd.ops import as_array


def as_ids(ids, name: str, device: str, shape=None, ndim: int = 2):
    """``ids`` as an integer array on ``device`` with ``ndim`` axes (2: (batch, length));
    ``shape``, if given, must match."""
    a = as_array(ids)
    if not hasattr(a, "dtype"):
        a = numpy.asarray(a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer ids, got dtype {a.dtype}; "
                        "pass an int array (e.g. numpy int64)")
    if a.ndim != ndim:
        want = "(batch, length)" if ndim == 2 else f"{ndim} axes"
        raise ValueError(f"{name} must have shape {want}, got shape {tuple(a.shape)}"
                         + ("; add a batch axis with ids[None] for a single sequence" if ndim == 2 else ""))
    if shape is not None and tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} shape {tuple(a.shape)} must match the input ids' {tuple(shape)}")
    return backend.to_device(a, device)


def as_mask(mask, name: str, device: str, shape):
    """A (B, T) 0/1 or bool mask as a bool array on ``device``; None for no mask, or for a
    mask on the host that is all ones (nothing to mask: found out here for free, where on
    a device it would wait for the device)."""
    if mask is None:
        return None
    m = as_array(mask)
    if not hasattr(m, "dtype"):
        m = numpy.asarray(m)
    if tuple(m.shape) != tuple(shape):
        raise ValueError(f"{name} shape {tuple(m.shape)} must match the ids' {tuple(shape)} "
                         "(1 at real tokens, 0 at padding)")
    m = m.astype(bool)
    if backend.device_of(m) == "cpu" and m.all():
        return None
    return backend.to_device(m, device)


def positions(position_ids, batch: int, length: int, offset: int, limit: int, device: str):
    """Position ids (B, T): the given ones, or offset .. offset + T - 1 for every row.

    ``limit`` is the size of the learned position table; a position beyond it is an error
    naming the longest sequence the model takes.
    """
    xp = backend.module_for_device(device)
    if position_ids is None:
        if offset + length > limit:
            raise ValueError(f"sequence of {offset + length} positions is longer than the model's "
                             f"{limit} (max positions); truncate the input or use a config "
                             "with more positions")
        return xp.arange(offset, offset + length)[None, :]         # (1, T): broadcasts over B
    p = as_ids(position_ids, "position_ids", backend.device_of(as_array(position_ids)))   # where it is
    if p.shape[1] != length or p.shape[0] not in (1, batch):
        raise ValueError(f"position_ids shape {tuple(p.shape)} must be ({batch}, {length}) or (1, {length})")
    if p.size:
        # Checked where the ids are: at once on the host; on a device, with the next
        # transfer (a read now would wait for the device), out-of-range ids made 0 until then.
        bad = (p < 0) | (p >= limit)

        def explain():
            lo, hi = (int(backend.to_device(v, "cpu")) for v in (p.min(), p.max()))
            return f"position_ids must lie in [0, {limit}), got min {lo}, max {hi}"
        backend.check_later(bad.any(), explain)
        if backend.device_of(p) != "cpu":
            p = backend.xp(p).where(bad, 0, p)
    return backend.to_device(p, device)


def get_field(batch: dict, key: str, family: str):
    """``batch[key]``, or an error naming what the family's loss needs."""
    if key not in batch:
        raise KeyError(f"{family} loss: the batch has no {key!r} (it has {sorted(batch)}); "
                       "build batches with the matching objective")
    return batch[key]
