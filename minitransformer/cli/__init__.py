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

A command that calls ``config_file(parser, ...)`` in its ``register`` reads a JSON config
file: ``--config FILE.json`` holds ``{option: value}`` with the options' argparse names
(``batch_size``, not ``--batch-size``), plus the settings only a file can set; precedence is
defaults, then the file, then flags. ``--print-config`` prints the merged settings as a
file ``--config`` reads back, and stops before any work.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import importlib
import json
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Callable

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


# ---------------------------------------------------------------------------------------
# Config files: {option: value} under the flags
# ---------------------------------------------------------------------------------------

class _Default:
    """An option's default, marked: after parsing, a value still wrapped in it was not given on
    the command line, so a config file may set it. Prints as the value, for ``--help``."""

    def __init__(self, value):
        self.value = value

    def __str__(self) -> str:
        return str(self.value)

    __repr__ = __str__


@dataclasses.dataclass(frozen=True)
class Setting:
    """A key that only a config file sets (no flag), e.g. pretrain's weight decay."""

    name: str                   # the key, and the attribute it becomes on the parsed arguments
    default: object             # its value when the file does not give it (JSON-serialisable)
    check: Callable             # (value, args) -> the value to use; ValueError says what was expected
    help: str = ""              # one line, shown by --help


_INT_TYPES = (int, positive_int, non_negative_int)
_FLOAT_TYPES = (float, positive_float)
# What a file key may hold for each kind of option: argparse's store actions and booleans.
_FILE_ACTIONS = (argparse._StoreAction, argparse._StoreConstAction, argparse.BooleanOptionalAction)
_NOT_KEYS = ("help", "config", "print_config")


def config_file(parser: argparse.ArgumentParser, settings=()) -> None:
    """Give ``parser`` ``--config FILE.json`` and ``--print-config``; ``settings`` are the keys
    only a file can set (``Setting``). ``main`` merges the file before the command runs."""
    group = parser.add_argument_group(
        "config file", "keys are the options' names (batch_size, ...); flags override the file" +
        "".join(f"\n  {s.name} (default {json.dumps(s.default)}): {s.help}" for s in settings))
    group.add_argument("--config", metavar="FILE.json", help="a JSON object {option: value}")
    group.add_argument("--print-config", action="store_true",
                       help="print the settings in effect as JSON (a --config file) and exit")
    parser.set_defaults(config_settings=ConfigFile(parser, tuple(settings)))


class ConfigFile:
    """The config-file settings of one command: its parser's options and its ``Setting``s."""

    def __init__(self, parser: argparse.ArgumentParser, settings: tuple):
        self.parser, self.settings = parser, settings

    def mark_defaults(self) -> None:
        """Wrap every option's default in ``_Default`` (done once all options are added)."""
        clash = sorted({s.name for s in self.settings} & {a.dest for a in self.parser._actions})
        if clash:
            raise ValueError(f"{self.parser.prog}: config-file setting {clash[0]!r} is also an option; rename one")
        for action in self._actions():
            if not isinstance(action.default, _Default):
                action.default = _Default(action.default)

    def _actions(self) -> list:
        return [a for a in self.parser._actions
                if isinstance(a, _FILE_ACTIONS) and a.dest not in _NOT_KEYS and a.default is not argparse.SUPPRESS]

    def resolve(self, args: argparse.Namespace) -> argparse.Namespace:
        """``args`` with defaults, then the file, then the flags given; the settings checked."""
        values = self._load(args.config) if args.config else {}
        given = {dest for dest, v in vars(args).items() if not isinstance(v, _Default)}
        for group in self.parser._mutually_exclusive_groups:
            dests = [a.dest for a in group._group_actions]
            if any(d in given for d in dests):       # a flag of the group replaces the file's choice
                for d in dests:
                    values.pop(d, None)
            elif len([d for d in dests if values.get(d) is not None]) > 1:
                both = " and ".join(d for d in dests if values.get(d) is not None)
                raise CLIError(f"--config {args.config}: {both} exclude each other; keep one")
        for dest, value in vars(args).items():
            if isinstance(value, _Default):
                setattr(args, dest, values.get(dest, value.value))
        for s in self.settings:
            value = copy.deepcopy(s.default)         # a default {} is not shared between runs
            if s.name in values:
                try:
                    value = s.check(values[s.name], args)
                except ValueError as e:
                    raise CLIError(f"--config {args.config}: {s.name}: {e}") from None
            setattr(args, s.name, value)
        return args

    def as_json(self, args: argparse.Namespace) -> str:
        """The merged settings as a config file (every key, in --help's order)."""
        merged = {a.dest: getattr(args, a.dest) for a in self._actions()}
        merged.update({s.name: getattr(args, s.name) for s in self.settings})
        return json.dumps(merged, indent=2)

    def _load(self, path: str) -> dict:
        """The file's {key: value}, each value checked against its option and converted."""
        try:
            values = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise CLIError(f"--config {path}: no such file; give a JSON file of {{option: value}} "
                           f"(--print-config writes one)") from None
        except (OSError, UnicodeDecodeError) as e:
            raise CLIError(f"--config {path}: cannot read it: {e}") from None
        except json.JSONDecodeError as e:
            raise CLIError(f"--config {path}: not valid JSON: {e}") from None
        if not isinstance(values, dict):
            raise CLIError(f"--config {path}: expected a JSON object of {{option: value}}, got a "
                           f"{type(values).__name__}")
        actions = {a.dest: a for a in self._actions()}
        known = [*actions, *(s.name for s in self.settings)]
        for key, value in values.items():
            if key not in known:
                close = difflib.get_close_matches(key.replace("-", "_"), known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise CLIError(f"--config {path}: unknown key {key!r}{hint}; --print-config lists every key")
            if key in actions:
                try:
                    values[key] = _file_value(actions[key], value)
                except ValueError as e:
                    raise CLIError(f"--config {path}: {key}: {e}") from None
        return values


def _kind(value) -> str:
    return "null" if value is None else f"{value!r} ({type(value).__name__})"


def _file_value(action, value):
    """A config file's value for ``action``, checked as the flag's text would be; ValueError if wrong."""
    default = action.default.value if isinstance(action.default, _Default) else action.default
    if value is None and default is None:
        return None
    if isinstance(action, (argparse._StoreConstAction, argparse.BooleanOptionalAction)):
        if isinstance(action, argparse.BooleanOptionalAction) or isinstance(action.const, bool):
            if not isinstance(value, bool):
                raise ValueError(f"expected true or false, got {_kind(value)}")
            return value
        if value not in (action.const, default):
            raise ValueError(f"expected {action.const!r} or {default!r}, got {_kind(value)}")
        return value
    if action.nargs not in (None, "?"):
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {_kind(value)}")
        return [_scalar(action, v) for v in value]
    return _scalar(action, value)


def _scalar(action, value):
    kind = action.type
    if kind in _INT_TYPES:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"expected an integer, got {_kind(value)}")
    elif kind in _FLOAT_TYPES:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"expected a number, got {_kind(value)}")
    elif not isinstance(value, str):
        raise ValueError(f"expected a string, got {_kind(value)}")
    if kind is not None:
        try:                                 # the flag's own bounds, as if typed on the command line
            value = kind(value if isinstance(value, str) else repr(value))
        except (argparse.ArgumentTypeError, ValueError, TypeError) as e:
            raise ValueError(str(e)) from None
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"expected one of {', '.join(map(str, action.choices))}; got {_kind(value)}")
    return value


def number(low: float | None = None, high: float | None = None, high_open: bool = False) -> Callable:
    """A ``Setting`` check: a number (not a boolean) within [low, high] (or [low, high))."""
    def check(value, args):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"expected a number, got {_kind(value)}")
        above = high is not None and (value >= high if high_open else value > high)
        if (low is not None and value < low) or above:
            bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}{')' if high_open else ']'}"
            raise ValueError(f"must be in {bounds}, got {value!r}")
        return float(value)
    return check


def config_changes(changes, base, refused: dict | None = None) -> dict:
    """A ``Setting`` check's core for ``{field: value}`` changes to the frozen config ``base``:
    the names must be its fields (those in ``refused`` are set elsewhere, and say where), and
    the changed config must pass the config's own checks. Returns the changes."""
    if not isinstance(changes, dict):
        raise ValueError(f"expected a JSON object of {type(base).__name__} fields, got {_kind(changes)}")
    fields = [f.name for f in dataclasses.fields(base)]
    for name in changes:
        if name in (refused or {}):
            raise ValueError(f"{name} cannot be changed here: {refused[name]}")
        if name not in fields:
            close = difflib.get_close_matches(name, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{type(base).__name__} has no field {name!r}{hint}; its fields: {', '.join(fields)}")
    dataclasses.replace(base, **changes)      # the config's own type and value checks
    return dict(changes)


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
    for command in sub.choices.values():         # every option is added: mark the defaults
        if command.get_default("config_settings") is not None:
            command.get_default("config_settings").mark_defaults()
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    debug = args.debug or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
    try:
        config = getattr(args, "config_settings", None)
        if config is not None:
            args = config.resolve(args)
            if args.print_config:
                print(config.as_json(args))
                return 0
        return int(args.func(args) or 0)
    except (CLIError, *USER_ERRORS) as e:
        if debug:
            traceback.print_exc()
        print(f"minitransformer {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"minitransformer {args.command}: interrupted", file=sys.stderr)
        return 130
