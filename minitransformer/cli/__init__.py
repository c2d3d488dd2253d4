"""The ``minitransformer`` command.

This package is the only place that parses arguments or prints for a person. Each
subcommand lives in its own module here and exposes ``register(subparsers)``, which adds its
parser and sets ``func`` to a function of the parsed arguments returning an exit status.

A user mistake (a missing file, a bad value, an unknown preset) raises one of
``USER_ERRORS`` somewhere below; ``main`` turns it into one line on stderr and exit status 2,
never a traceback. Anything else (a TypeError, a KeyError, an IndexError...) is a bug, in
the library or in a program calling it: ``main`` lets its traceback through, since a bug
hidden behind one polite line cannot be found. ``--debug`` (or ``MINITRANSFORMER_DEBUG=1``
in the environment) shows the traceback of user errors too.
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import traceback

from minitransformer.checkpoint import SaveError
from minitransformer.jobs import FolderInUse

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
    "export",
)

# What a person can cause with a bad argument, file or folder, or meet on their machine (a
# folder another job holds, a disk too full for a checkpoint). Not TypeError or KeyError:
# from the command line those come from code, not from the person typing it.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
               PermissionError, FolderInUse, SaveError)
DEBUG_VARIABLE = "MINITRANSFORMER_DEBUG"


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


# ESC-started terminal sequences (CSI, OSC, and two-character ones), then the other controls.
_ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]")


def safe_text(text: str) -> str:
    """Text from a file someone else wrote, fit for a terminal: escape sequences (which can
    recolour, retitle or rewrite the screen) and control characters removed; newlines and
    tabs kept."""
    return _CONTROLS.sub("", _ESCAPES.sub("", text))


def progress_bar(total: int, initial: int = 0, **kwargs):
    """A tqdm progress bar on stderr when it is a terminal; off when stderr is a file or a pipe,
    where a bar's carriage-return redraws would fill a log with one long line."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr,
                disable=not sys.stderr.isatty(), **kwargs)


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1, refused before any work starts."""
    return _bounded(text, int, 1)


def non_negative_int(text: str) -> int:
    """An argparse type: an integer of at least 0 (0 often means "never")."""
    return _bounded(text, int, 0)


def positive_float(text: str) -> float:
    """An argparse type: a number above 0."""
    value = _bounded(text, float, None)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def _bounded(text: str, kind, low):
    try:
        value = kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if low is not None and value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minitransformer",
        description="Pre-train GPT-2, BERT and T5 style transformers from scratch on NumPy/CuPy.",
        epilog="Run 'minitransformer COMMAND --help' for each command's options and examples.",
    )
    from minitransformer import __version__

    parser.add_argument("--version", action="version", version=f"minitransformer {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the full traceback of every error, user errors included "
                             f"(also: {DEBUG_VARIABLE}=1)")
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
    debug = args.debug or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except (CLIError, *USER_ERRORS) as e:
        if debug:
            traceback.print_exc()
        print(f"minitransformer {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"minitransformer {args.command}: interrupted", file=sys.stderr)
        return 130
