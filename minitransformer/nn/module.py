"""Modules and parameters: how a network holds its weights.

A ``Module`` is a node in a tree. Assigning a ``Parameter`` to an attribute registers it as
one of the module's own weights; assigning another ``Module`` registers it as a child. From
that tree everything else follows:

    named_parameters()   every weight once, with its dotted path ("blocks.0.attn.q.weight"),
                         in registration order (deterministic, so optimisers and checkpoints
                         agree); a weight shared by two modules (a tied embedding) appears
                         once, under the first path that reaches it
    state_dict()         {path: array}, the weights as plain arrays (the arrays themselves,
                         not copies, as in PyTorch: save or copy them if you need a snapshot)
    load_state_dict(sd)  copies arrays back in, checking every key and shape first
    train() / eval()     switch dropout on or off in the whole tree
    to(device), astype(dtype), zero_grad(), num_parameters()

Subclasses write ``__init__`` (build children and parameters) and ``forward``; calling the
module calls ``forward``.
"""
from __future__ import annotations

from collections import namedtuple

import numpy

from minitransformer import backend
from minitransformer.autograd.tensor import Tensor


class Parameter(Tensor):
    """A Tensor that is a weight of a module: a leaf that requires grad (float only)."""

    def __init__(self, data, requires_grad: bool = True):
        if isinstance(data, Tensor):
            data = data.data
        if not (hasattr(data, "dtype") and hasattr(data, "shape")):
            data = numpy.asarray(data, dtype=backend.default_float())
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter(" + super().__repr__()[len("tensor("):]


LoadResult = namedtuple("LoadResult", ["missing_keys", "unexpected_keys"])


class Module:
    """Base class of every layer and model; see the module docstring."""

    def __init__(self):
        # object.__setattr__ because our own __setattr__ expects these dicts to exist.
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    # ------------------------------------------------------------------ registration
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                               f"before assigning attribute {name!r}")
        params, modules = self.__dict__["_parameters"], self.__dict__["_modules"]
        params.pop(name, None)
        modules.pop(name, None)
        if isinstance(value, Parameter):
            params[name] = value
        elif isinstance(value, Module):
            modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    # ------------------------------------------------------------------ traversal
    def named_modules(self, prefix: str = ""):
        """(dotted path, module) for this module and every descendant, parents first."""
        seen, stack = set(), [(prefix, self)]
        while stack:
            path, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield path, module
            children = [(f"{path}.{n}" if path else n, m) for n, m in module._modules.items()]
            stack.extend(reversed(children))

    def modules(self):
        return [m for _, m in self.named_modules()]

    def children(self):
        return list(self._modules.values())

    def named_parameters(self):
        """(dotted path, Parameter) for every distinct weight, in a fixed order."""
        seen = set()
        for path, module in self.named_modules():
            for name, p in module._parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{path}.{name}" if path else name), p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def num_parameters(self) -> int:
        """How many numbers the model learns (a tied weight counted once)."""
        return sum(p.size for p in self.parameters())

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """{dotted path: array} of every distinct weight."""
        return {name: p.data for name, p in self.named_parameters()}

    def load_state_dict(self, state_dict, strict: bool = True) -> LoadResult:
        """Copy ``state_dict``'s arrays into the parameters of the same names.

        Nothing is changed unless every check passes. A key whose shape differs is always an
        error; with ``strict`` a missing or unexpected key is one too. The error names every
        missing, unexpected and mis-shaped key at once. Values may be NumPy or CuPy arrays
        or Tensors; each is cast to its parameter's dtype and device.
        """
        own = dict(self.named_parameters())
        given = {k: (v.data if isinstance(v, Tensor) else v) for k, v in state_dict.items()}
        missing = [k for k in own if k not in given]
        unexpected = [k for k in given if k not in own]
        misshaped = [f"{k}: expected {tuple(own[k].shape)}, got {tuple(given[k].shape)}"
                     for k in own if k in given and tuple(given[k].shape) != tuple(own[k].shape)]
        if misshaped or (strict and (missing or unexpected)):
            lines = [f"load_state_dict: the state dict does not fit {type(self).__name__}"]
            for what, keys, sep in (("missing", missing, ", "), ("unexpected", unexpected, ", "),
                                    ("mis-shaped", misshaped, "; ")):
                if keys:        # at most 30 named: a config off by a million layers must not print them all
                    more = f"{sep}... and {len(keys) - 30} more" if len(keys) > 30 else ""
                    lines.append(f"  {what} keys ({len(keys)}): {sep.join(keys[:30])}{more}")
            lines.append("  load a checkpoint of the same model and config, or pass strict=False "
                         "to skip missing and unexpected keys (shapes must always match)")
            raise ValueError("\n".join(lines))
        for name, p in own.items():
            if name in given:
                value = backend.to_device(given[name], p.device)
                p.data[...] = value.astype(p.dtype, copy=False)
        return LoadResult(missing, unexpected)

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> "Module":
        """Training mode (dropout active) for this module and all below it."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        """Evaluation mode: dropout off, so the output is a deterministic function of the input."""
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def to(self, device: str) -> "Module":
        """Move every parameter (and its gradient) to ``device`` in place; returns self."""
        backend.module_for_device(device)  # a clear error for an unknown or absent device
        for p in self.parameters():
            p.data = backend.to_device(p.data, device)
            if p.grad is not None:
                p.grad = backend.to_device(p.grad, device)
        return self

    def astype(self, dtype) -> "Module":
        """Cast every parameter (and gradient) to the float ``dtype`` in place; returns self.

        float64 is for gradient checks and parity tests; float32 is the working precision.
        """
        dtype = numpy.dtype(dtype)
        if dtype.kind != "f":
            raise TypeError(f"astype: parameters must stay floating point, got {dtype}; "
                            "use float32, float64 or float16")
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            if p.grad is not None:
                p.grad = p.grad.astype(dtype)
        return self

    @property
    def device(self) -> str:
        """The device of the first parameter ("cpu" for a module without any)."""
        for p in self.parameters():
            return p.device
        return "cpu"

    @property
    def dtype(self):
        for p in self.parameters():
            return p.dtype
        return numpy.dtype(backend.default_float())

    # ------------------------------------------------------------------ printing
    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        if not self._modules:
            return f"{type(self).__name__}({extra})"
        lines = [f"{type(self).__name__}("] + ([f"  {extra}"] if extra else [])
        for name, child in self._modules.items():
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        return "\n".join(lines) + "\n)"


class ModuleList(Module):
    """A list of modules registered under the names "0", "1", ... (e.g. ``blocks.3.attn``)."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> None:
        setattr(self, str(len(self._modules)), module)

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())
