"""ZeRO stage 1 (Rajbhandari et al., 2020): the optimizer state sharded over the ranks.

Adam keeps two numbers per weight, so its state is twice the model. With ZeRO-1 the
parameters, concatenated in a fixed order, form one flat vector of P numbers and rank r owns
the slice [r S, (r + 1) S), S = ceil(P / K): it keeps the optimizer state of that slice only
(memory / K), steps that slice only, and then every rank all-gathers the updated slices from
their owners. Adam is elementwise, so the result is bit for bit the unsharded one. For a
checkpoint the slices are gathered to rank 0 and saved under the usual names, so a
checkpoint does not depend on the number of ranks and a run can resume on another number of
them (with the same global batch).

The communicator it runs over needs ``rank``, ``size``, ``all_gather`` and ``gather``; the
optimizer it wraps declares its state tables (``SLOTS``) and the arguments that rebuild it
(``hyperparameters()``).
"""
from __future__ import annotations

import numpy

from minitransformer import backend, optim

PARAMETERS = "the ZeRO-1 parameter all-gather"
STATE = "the ZeRO-1 optimizer-state gather"


class _Piece:
    """The elements [a, b) of a parameter's flattened values that this rank updates. The
    optimizer sees it as a parameter; ``data`` and ``grad`` are views, set before each step."""

    def __init__(self, param, a: int, b: int):
        self.param, self.a, self.b = param, a, b
        self.data = self.grad = None
        self.refresh()

    def refresh(self) -> None:
        p = self.param
        if not p.data.flags.c_contiguous:   # a flat view needs contiguous memory
            p.data = backend.xp(p.data).ascontiguousarray(p.data)
        self.data = p.data.reshape(-1)[self.a:self.b]
        self.grad = None if p.grad is None else p.grad.reshape(-1)[self.a:self.b]

    @property
    def shape(self):
        return (self.b - self.a,)

    @property
    def dtype(self):
        return self.param.data.dtype


class ZeroOptimizer:
    """An AdamW or SGD whose state is split over the ranks (ZeRO stage 1).

    Flatten all parameters, in order, into one vector of P numbers; rank r owns the slice
    [r S, min((r + 1) S, P)), S = ceil(P / K). ``step`` updates the owned slice with the
    wrapped optimizer's rule (its state exists for that slice only), then all-gathers the
    slices so every rank has every updated weight. ``state_dict`` and ``load_state_dict``
    use the unsharded optimizer's names and shapes.
    """

    SHARDABLE = (optim.AdamW, optim.SGD)

    def __init__(self, optimizer, comm):
        kind = type(optimizer)
        if kind not in self.SHARDABLE:
            raise TypeError(f"ZeRO-1 shards AdamW or SGD state, got {kind.__name__}; "
                            "use one of those or train without --zero1")
        dtypes = sorted({str(p.dtype) for _, p in optimizer.params})
        if len(dtypes) > 1:
            raise ValueError(f"ZeRO-1 needs every parameter in one dtype, got {', '.join(dtypes)}; "
                             "cast the model with model.astype(...) first")
        self.comm = comm
        self.kind, self.slots = kind, kind.SLOTS
        self.params = optimizer.params
        self.lr = optimizer.lr
        self.step_count = optimizer.step_count
        self._hyper = optimizer.hyperparameters()
        self.sizes = [p.size for _, p in self.params]
        self.offsets = numpy.concatenate([[0], numpy.cumsum(self.sizes)]).astype(int).tolist()
        self.total = self.offsets[-1]
        self.shard = -(-self.total // comm.size)
        self.lo = min(self.total, comm.rank * self.shard)
        self.hi = min(self.total, self.lo + self.shard)
        self.pieces = []                    # (name, _Piece) this rank owns, in order
        for (name, p), start, n in zip(self.params, self.offsets, self.sizes):
            a, b = max(self.lo, start) - start, min(self.hi, start + n) - start
            if a < b:
                self.pieces.append((name, _Piece(p, a, b)))
        self.inner = self._new_inner()
        self._gathered = None               # (step_count, full state) on rank 0 after gather_state

    def _new_inner(self):
        if not self.pieces:
            return None
        inner = self.kind(self.pieces, lr=self.lr, **self._hyper)
        inner.step_count = self.step_count
        return inner

    def _follow_device(self) -> None:
        """Keep the state on the parameters' device (the model may move after construction)."""
        name, piece = self.pieces[0]
        device = backend.device_of(piece.data)
        for slot in self.slots:
            table = getattr(self.inner, slot)
            if backend.device_of(table[name]) != device:
                for key in table:
                    table[key] = backend.to_device(table[key], device)

    def zero_grad(self) -> None:
        for _, p in self.params:
            p.grad = None

    def step(self) -> None:
        self.step_count += 1
        if self.inner is not None:
            for _, piece in self.pieces:
                piece.refresh()
            self._follow_device()
            self.inner.lr = self.lr
            self.inner.step_count = self.step_count - 1
            self.inner.step()
        self._all_gather_parameters()

    def _flat_of_own(self, arrays, xp, dtype):
        """This rank's slice as one padded vector of length S, from per-piece ``arrays``."""
        out = xp.zeros(self.shard, dtype=dtype)
        at = 0
        for a in arrays:
            out[at:at + a.size] = a.reshape(-1)
            at += a.size
        return out

    def _all_gather_parameters(self) -> None:
        first = self.params[0][1].data
        xp = backend.xp(first)
        send = self._flat_of_own([piece.data for _, piece in self.pieces], xp, first.dtype)
        full = xp.empty(self.shard * self.comm.size, dtype=first.dtype)
        self.comm.all_gather(send, full, PARAMETERS, "zero1_allgather")
        for (_, p), start, n in zip(self.params, self.offsets, self.sizes):
            p.data[...] = full[start:start + n].reshape(p.data.shape)

    def state_bytes(self) -> int:
        """Bytes of optimizer state this rank holds."""
        if self.inner is None:
            return 0
        return sum(int(getattr(self.inner, s)[n].nbytes) for s in self.slots for n, _ in self.pieces)

    def gather_state(self, root: int = 0) -> None:
        """Collective: bring every rank's slice of the state to ``root`` for ``state_dict``."""
        dtype = numpy.dtype(self.params[0][1].data.dtype)
        k = len(self.slots)
        send = numpy.zeros(k * self.shard, dtype=dtype)
        for i, slot in enumerate(self.slots):
            own = [backend.to_numpy(getattr(self.inner, slot)[n]) for n, _ in self.pieces] if self.inner else []
            send[i * self.shard:(i + 1) * self.shard] = self._flat_of_own(own, numpy, dtype)
        recv = numpy.empty(self.comm.size * k * self.shard, dtype=dtype) if self.comm.rank == root else None
        self.comm.gather(send, recv, root, STATE)
        if self.comm.rank != root:
            self._gathered = None
            return
        by_rank = recv.reshape(self.comm.size, k, self.shard)
        state = {"step_count": numpy.asarray(self.step_count, dtype=numpy.int64)}
        for i, slot in enumerate(self.slots):
            flat = by_rank[:, i, :].reshape(-1)[:self.total]
            for (name, p), start, n in zip(self.params, self.offsets, self.sizes):
                state[f"{slot}.{name}"] = flat[start:start + n].reshape(p.shape).copy()
        self._gathered = (self.step_count, state)

    def state_dict(self) -> dict:
        """The whole (unsharded) state, on the rank that ran ``gather_state`` at this step."""
        if self._gathered is None or self._gathered[0] != self.step_count:
            raise RuntimeError("ZeroOptimizer.state_dict: the optimizer state is sharded over the ranks; "
                               "call gather_state() on every rank first (Trainer does this before saving) "
                               "and read it on rank 0")
        return self._gathered[1]

    def load_state_dict(self, state: dict) -> None:
        """Load an unsharded state (any rank count saved it) and keep this rank's slice."""
        expected = {f"{slot}.{name}": p for slot in self.slots for name, p in self.params}
        missing = sorted(set(expected) - set(state))
        if missing or "step_count" not in state:
            raise ValueError(f"optimizer state is missing {len(missing)} entries, e.g. {missing[:3]}; "
                             "was it saved for another model or another optimizer?")
        for key, p in expected.items():
            if tuple(state[key].shape) != tuple(p.shape):
                raise ValueError(f"optimizer state {key} has shape {tuple(state[key].shape)}, "
                                 f"the parameter has {tuple(p.shape)}")
        self.step_count = int(numpy.asarray(state["step_count"]).reshape(-1)[0])
        if self.inner is not None:
            own = {"step_count": state["step_count"]}
            for slot in self.slots:
                for name, piece in self.pieces:
                    own[f"{slot}.{name}"] = numpy.asarray(state[f"{slot}.{name}"]).reshape(-1)[piece.a:piece.b]
            self.inner.load_state_dict(own)
        self._gathered = None
