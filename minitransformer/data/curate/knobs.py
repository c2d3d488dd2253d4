"""One helper for the stage configs: a dataclass field that carries its own help text.

Every threshold of every stage is a field of a frozen dataclass. The help text lives beside
the default, in the field's metadata, so that the same sentence documents the field here,
appears in ``minitransformer curate --help`` (whose flags are generated from the fields) and
cannot drift from either.
"""
from __future__ import annotations

import dataclasses


def knob(default, help: str):
    """A dataclass field with a default and a one-line description for people."""
    return dataclasses.field(default=default, metadata={"help": help})
