"""The ``minitransformer`` command.

This package is the only place that parses arguments or prints for a person. Each
subcommand lives in its own module here and exposes ``register(subparsers)``, which adds its
parser and sets ``func`` to a function of the parsed arguments returning an exit status.

A user mistake (a missing file, a bad value, an unknown preset) raises one of
``USER_ERRORS`` somewhere below; ``main`` turns it into one line on stderr and exit status 2,
never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules, in the order ``--help`` lists them; each exposes ``register``.
SUBCOMMANDS = (
    "pretrain",
    "generate",      # also fill-mask and fill-spans
    "tokenizer",
    "info",
    "curate",
    "scale",
    "finetune",
    "evaluate",
    "plot",
)

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
               PermissionError, KeyError, TypeError)


class CLIError(Exception):
    """A user-facing error with a one-line message."""


def check_device(device: str) -> None:
    """Refuse, in one line, a device this machine cannot use (e.g. cuda without CuPy)."""
    if device == "cpu":
        return
    from minitransformer import backend

    try:
        backend.module_for_device(device)
    except (RuntimeError, ValueError) as e:
        raise CLIError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minitransformer",
        description="Pre-train GPT-2, BERT and T5 style transformers from scratch on NumPy/CuPy.",
        epilog="Run 'minitransformer COMMAND --help' for each command's options and examples.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except CLIError as e:
        print(f"minitransformer {args.command}: error: {e}", file=sys.stderr)
        return 2
    except USER_ERRORS as e:
        msg = e.args[0] if (isinstance(e, KeyError) and e.args) else e
        print(f"minitransformer {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"minitransformer {args.command}: interrupted", file=sys.stderr)
        return 130
