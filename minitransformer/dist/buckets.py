"""Gradient buckets: every gradient packed into a few large flat arrays, one message each.

A message costs a fixed latency plus its bytes over the bandwidth, so summing a few large
buffers over the ranks is far cheaper than one message per parameter. Parameters are taken
in order, grouped by dtype, and cut into buckets of about ``bucket_bytes`` (PyTorch's DDP
uses 25 MB). After the last bucket's gradients comes one slot per parameter holding 1 when
this rank has a gradient for it, so the same sum tells which parameters have a gradient on
any rank.
"""
from __future__ import annotations

import numpy

from minitransformer import backend


class BucketLayout:
    """Where each gradient lives in the flat buckets, and the buckets themselves.

    ``pack`` copies the gradients in, ``buffers`` are summed over the ranks by the
    communicator, ``unpack`` makes every ``.grad`` a view of its bucket.
    """

    def __init__(self, params, bucket_bytes: int):
        self.params = params
        xp = backend.xp(params[0].data)
        groups: dict = {}
        for i, p in enumerate(params):
            groups.setdefault(p.data.dtype.str, []).append(i)
        self.entries = []                   # per bucket: [(param index, offset, size)]
        sizes = []
        for indices in groups.values():
            current, used, itemsize = [], 0, params[indices[0]].data.dtype.itemsize
            for i in indices:
                n = params[i].data.size
                if current and (used + n) * itemsize > bucket_bytes:
                    self.entries.append(current)
                    sizes.append((used, params[indices[0]].data.dtype))
                    current, used = [], 0
                current.append((i, used, n))
                used += n
            self.entries.append(current)
            sizes.append((used, params[indices[0]].data.dtype))
        self.flag_offset = sizes[-1][0]
        sizes[-1] = (sizes[-1][0] + len(params), sizes[-1][1])
        self.buffers = [xp.empty(n, dtype=dt) for n, dt in sizes]

    @staticmethod
    def key(params) -> tuple:
        """What a layout depends on: the same key, the same layout (so it can be reused)."""
        return tuple((id(p), p.data.shape, p.data.dtype.str, backend.device_of(p.data)) for p in params)

    def pack(self) -> None:
        flags = numpy.zeros(len(self.params))
        for buf, entries in zip(self.buffers, self.entries):
            for i, off, n in entries:
                g = self.params[i].grad
                if g is None:
                    buf[off:off + n] = 0
                else:
                    buf[off:off + n] = g.reshape(-1)
                    flags[i] = 1.0
        last = self.buffers[-1]
        last[self.flag_offset:] = backend.xp(last).asarray(flags, dtype=last.dtype)

    def unpack(self) -> None:
        has_grad = backend.to_numpy(self.buffers[-1][self.flag_offset:]) > 0
        for buf, entries in zip(self.buffers, self.entries):
            for i, off, n in entries:
                p = self.params[i]
                p.grad = buf[off:off + n].reshape(p.data.shape) if has_grad[i] else None
