"""What a model folder from elsewhere may ask of this machine, checked before anything is allocated.

A config.json is data, and data can be wrong or hostile: ``vocab_size: 10**12`` or a million
layers. Building that model would allocate until the operating system kills the process, with
no message at all. So before a model is built from a folder, ``check_fits`` counts its
parameters by formula (``minitransformer.scaling.count_parameters``: arithmetic, nothing
allocated), multiplies by the bytes per parameter, and compares with the memory this machine
has available, or with a cap the user sets (``MINITRANSFORMER_MAX_MEMORY``, e.g. ``8G``, or
the ``limit_bytes`` argument). A model that does not fit is refused in one line naming the
field that makes it large, the size, and the memory.

The check counts the weights alone, the least any use of the model needs (inference); training
needs about four times as much again (gradients and Adam's two moments), which ``info``
reports.
"""
from __future__ import annotations

import copy
import dataclasses
import os

import numpy

ENV_CAP = "MINITRANSFORMER_MAX_MEMORY"
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


class TooLarge(ValueError):
    """A config whose model would not fit in the memory available."""


def parse_bytes(text: str) -> int:
    """'8G', '512M', '1.5T' or a number of bytes."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1] if t and t[-1] in _UNITS else ""
    try:
        value = float(t[:-1] if unit else t)
    except ValueError:
        raise ValueError(f"{ENV_CAP}: {text!r} is not a size such as 8G, 512M or 1073741824") from None
    if value <= 0:
        raise ValueError(f"{ENV_CAP}: {text!r} must be a positive size")
    return int(value * _UNITS[unit])


def available_memory() -> int | None:
    """Bytes this process can still allocate: the user's cap, else the system's available
    memory (MemAvailable on Linux, else the physical total); None when unknown."""
    if os.environ.get(ENV_CAP):
        return parse_bytes(os.environ[ENV_CAP])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def _size_fields(config) -> list[str]:
    return [f.name for f in dataclasses.fields(config)
            if f.type in ("int", int) and isinstance(getattr(config, f.name), int)
            and not f.name.endswith(("_id", "_token_id"))]


def _largest_field(config, count) -> tuple[str, int]:
    """The size field whose value, set to 1, shrinks the parameter count most."""
    best, best_drop = None, -1
    for name in _size_fields(config):
        smaller = copy.copy(config)
        # set without the config's own checks (a width of 1 need not divide into heads):
        # the count is arithmetic on the fields, and this config is never built
        object.__setattr__(smaller, name, 1)
        try:
            drop = count - _count(smaller)
        except (ValueError, ZeroDivisionError):
            continue
        if drop > best_drop:
            best, best_drop = name, drop
    return best, getattr(config, best) if best else None


def _count(config) -> int:
    from minitransformer import scaling

    return int(scaling.count_parameters(config)["total"])


def check_fits(config, dtype="float32", source: str = "config", limit_bytes: int | None = None) -> int:
    """The bytes of ``config``'s weights in ``dtype``; raises ``TooLarge`` when they do not fit.

    ``limit_bytes`` defaults to ``available_memory()``; with neither known, nothing is refused.
    """
    count = _count(config)
    need = count * numpy.dtype(dtype).itemsize
    limit = available_memory() if limit_bytes is None else limit_bytes
    if limit is not None and need > limit:
        field, value = _largest_field(config, count)
        where = f"{field} = {value:,}" if field else "its sizes"
        raise TooLarge(f"{source}: a model with {where} has {count:,} parameters, {_gib(need)} of "
                       f"{numpy.dtype(dtype).name} weights alone, more than the {_gib(limit)} of memory "
                       f"available; refused before allocating (if this is intended, raise the limit: "
                       f"{ENV_CAP}=64G)")
    return need
