"""One command-line convention for every command, built with argparse from dataclass fields.

Each option is a dataclass field declared with `opt(default, help, kind, ...)`: its help text,
its kind (the --help group it is listed in, and what the run modes derive from it), its bounds
and choices live there and nowhere else. `parse(options, argv)` turns a command line into
{name: typed value} of the options actually given. The convention, the same everywhere:

- `--key=value` and `--key value` (the authors' spelling) both work; a boolean alone is true;
  booleans accept only true/false/1/0/yes/no; a key given twice is an error;
- `~` is expanded in paths; benchmark names are case-insensitive (awa2 = AWA2);
- `--help` lists every option with its help text and default, and exits 0;
- exit codes: 0 done; 2 bad input (an option, a file, the data: one line naming it), or a
  disk that refuses a file (full, read-only, not writable: one line naming the file);
  3 a loss or parameters became non-finite; 130 interrupted (Ctrl-C); 1 an unexpected error
  (a bug: Python's traceback).

argparse (standard library) rather than a dataclass-CLI package: it already gives --help,
both spellings and positionals; what it lacks (typed bounds, one-line errors, refusing
repeats) is the few lines below, and the project needs no extra dependency for it.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import errno
import math
import os
import signal
import sys
import threading
import typing

from benchmarks import canonical_name

MISSING = dataclasses.MISSING


class CommandError(Exception):
    """Bad input: the message is one line naming the option, file or key at fault."""
    exit_code = 2


class ConfigError(CommandError, ValueError):
    """A bad option on the command line."""


# The kinds of option, in --help order. What each kind means for the run modes:
# `architecture` is what --eval_only rebuilds from the checkpoint; `run` options steer a run but not
# its numbers (only they may change on --resume); `place` and `run` options may differ between the
# machines of one tuning study.
KINDS = {
    "command": "this command's own options",
    "data": "data: which benchmark files a run reads",
    "architecture": "architecture (--eval_only takes these from the checkpoint)",
    "schedule": "flow training: schedule, losses, seed",
    "variant": "GSMFlow-TMM variant (--variant=tmm)",
    "evaluation": "evaluation: synthesis and the softmax classifiers",
    "selection": "honest selection (README 'Honest selection')",
    "run": "run control: output, logging, run modes (may change on --resume)",
    "place": "where things are on this machine",
    "speed": "speed (README 'Speed'); exact=same numbers as the defaults",
}


def opt(default, help: str, kind: str = "command", *, low=None, high=None, low_open: bool = False,
        high_open: bool = False, choices: tuple | None = None, path: bool = False, dataset: bool = False,
        resume: bool | None = None, local: bool | None = None, tune=None, positional: bool = False,
        flag: str | None = None, bare=None):
    """A dataclass field with its command-line facts.

    low/high: bounds (open with low_open/high_open); choices: allowed values; path: `~` expanded;
    dataset: a benchmark name, case-insensitive; resume: may change on --resume (default: kind run);
    local: may differ between a tuning study's workers (default: kinds run and place);
    tune: tune.py's search range (kind, low, high), or False when tune.py refuses the option;
    positional: an argument without --; flag: the option's spelling when it is not --<name> (--from);
    bare: the value of a text option given alone (--synthetic = --synthetic=quick); a following word is
    its value only if it is one of the choices.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown option kind {kind!r}")
    meta = dict(help=help, kind=kind, low=low, high=high, low_open=low_open, high_open=high_open,
                choices=choices, path=path, dataset=dataset, tune=tune, positional=positional, flag=flag, bare=bare,
                resume=kind == "run" if resume is None else resume,
                local=kind in ("run", "place") if local is None else local)
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def options(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def field_types(cls) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def names_where(cls, **meta) -> tuple[str, ...]:
    """The options whose metadata has these values, e.g. names_where(Config, kind='architecture')."""
    return tuple(f.name for f in dataclasses.fields(cls) if all(f.metadata.get(k) == v for k, v in meta.items()))


# ----------------------------------------------------------------------------- values

TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")


def to_bool(text: str) -> bool:
    low = str(text).lower()
    if low in TRUE:
        return True
    if low in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false (or 1/0, yes/no), got {text!r}")


def converter(name: str, kind: type, meta: dict):
    """str -> typed value, or argparse.ArgumentTypeError with a one-line reason."""
    def convert(text: str):
        if text is argparse.SUPPRESS or text == argparse.SUPPRESS:
            return argparse.SUPPRESS  # an absent optional positional: argparse converts its default too
        if kind is bool:
            return to_bool(text)
        if kind is int:
            try:
                value = int(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        elif kind is float:
            try:
                value = float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        else:
            value = text
            if meta.get("path") and value:
                value = os.path.expanduser(value)
            if meta.get("dataset"):
                value = canonical_name(value)
        check_value(name, value, meta, argparse.ArgumentTypeError)
        return value
    return convert


def check_value(name: str, value, meta: dict, error=None) -> None:
    """Bounds, finiteness and choices of one value; raises `error` (ConfigError) naming the option."""
    def fail(reason):
        raise (error or ConfigError)(reason if error is argparse.ArgumentTypeError else f"option --{name}: {reason}")
    if isinstance(value, float) and not math.isfinite(value):
        fail(f"must be a finite number, got {value}")
    choices = meta.get("choices")
    if choices and value not in choices:
        fail(f"{value!r} is not one of {', '.join(map(shown_default, choices))}")
    low, high = meta.get("low"), meta.get("high")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and (low is not None or high is not None):
        too_low = low is not None and (value <= low if meta["low_open"] else value < low)
        too_high = high is not None and (value >= high if meta["high_open"] else value > high)
        if too_low or too_high:
            fail(f"must be {bounds_text(meta)}, got {value}")


def bounds_text(meta: dict) -> str:
    low, high = meta.get("low"), meta.get("high")
    if high is None:
        return f"{'>' if meta['low_open'] else '>='} {low}"
    if low is None:
        return f"{'<' if meta['high_open'] else '<='} {high}"
    return f"in {'(' if meta['low_open'] else '['}{low}, {high}{')' if meta['high_open'] else ']'}"


def check(obj) -> None:
    """Every field of a dataclass instance within its bounds and choices."""
    for f in dataclasses.fields(obj):
        check_value(f.name, getattr(obj, f.name), f.metadata)


# ----------------------------------------------------------------------------- the parser

class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, as every command's errors; exit code 2 from main_guard
        message = message.replace("argument ", "option ", 1)
        message = message.replace(": expected one argument", " needs a value: --KEY=VALUE")
        raise ConfigError(message)


class _StoreOnce(argparse.Action):
    """Store, refusing a second occurrence (a repeated key would otherwise silently win)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if self.dest in getattr(namespace, "_given", ()):
            raise ConfigError(f"option {option_string or self.dest} given twice")
        namespace._given = getattr(namespace, "_given", set()) | {self.dest}
        setattr(namespace, self.dest, values)


def shown_default(value) -> str:
    return "''" if value == "" else repr(value) if isinstance(value, str) and " " in value else str(value)


def add_options(parser: argparse.ArgumentParser, cls, defaults=None, groups: dict | None = None) -> None:
    """One argument per field of `cls`, in --help groups by kind; defaults shown from `defaults`."""
    types = field_types(cls)
    groups = {} if groups is None else groups
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if "help" not in meta or (meta.get("flag") or f"--{f.name}") in parser._option_string_actions:
            continue  # not an option, or one an earlier class of this command already defines (its own wins)
        kind = types[f.name]
        default = getattr(defaults, f.name) if defaults is not None else (
            f.default if f.default is not MISSING else f.default_factory())
        group = groups.get(meta["kind"])
        if group is None:
            group = groups[meta["kind"]] = parser.add_argument_group(KINDS[meta["kind"]])
        text = meta["help"].replace("%", "%%")
        extra = []
        if meta.get("choices"):
            extra.append(" | ".join(map(shown_default, meta["choices"])))
        if meta.get("positional"):
            element = typing.get_args(kind)[0] if typing.get_origin(kind) is list else kind
            # optional for argparse: the command says what is missing, after unknown options are named
            group.add_argument(f.name, nargs="*" if typing.get_origin(kind) is list else "?",
                               type=converter(f.name, element, meta), help=text, default=argparse.SUPPRESS,
                               metavar=f.name.upper())
            continue
        extra.append(f"default: {shown_default(default)}")
        metavar = {bool: "BOOL", int: "INT", float: "NUM"}.get(kind, "PATH" if meta.get("path") else "TEXT")
        action = group.add_argument(meta.get("flag") or f"--{f.name}", dest=f.name, action=_StoreOnce, type=converter(f.name, kind, meta),
                           nargs="?" if kind is bool or meta.get("bare") is not None else None,
                           const=True if kind is bool else meta.get("bare"),
                           default=argparse.SUPPRESS, metavar=metavar, help=f"{text} ({'; '.join(extra)})")
        action.bare_words = tuple(str(c).lower() for c in meta.get("choices") or () if c)  # see parse()


def parser_for(prog: str, description: str, *specs, epilog: str | None = None) -> argparse.ArgumentParser:
    """`specs`: (dataclass, defaults instance or None) pairs, listed in that order."""
    positionals = [f"{f.name.upper()}{' ...' if typing.get_origin(field_types(cls)[f.name]) is list else ''}"
                   for cls, _ in specs for f in dataclasses.fields(cls) if f.metadata.get("positional")]
    usage = " ".join(["%(prog)s", *positionals, "[--key=value ...]"])
    parser = _Parser(prog=prog, description=description, epilog=epilog, allow_abbrev=False, usage=usage,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    groups: dict = {}
    for cls, defaults in specs:
        add_options(parser, cls, defaults, groups)
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> dict:
    """{name: value} of the options given; unknown ones are one-line errors (ConfigError)."""
    # A boolean alone is true, also before a positional (prepare --force AWA2): only a true/false
    # word after it is its value; likewise an option with a bare value (--synthetic AWA2 = --synthetic=quick
    # AWA2). Intermixed: positionals may follow options (reproduce.py --synthetic AWA2).
    alone = {s: ("true", TRUE + FALSE) if a.const is True else (a.const, a.bare_words)
             for a in parser._actions if a.const is not None and a.option_strings for s in a.option_strings}
    argv = list(argv)
    argv = [f"{a}={alone[a][0]}" if a in alone and (i + 1 == len(argv) or argv[i + 1].lower() not in alone[a][1])
            else a for i, a in enumerate(argv)]
    namespace, extra = parser.parse_known_intermixed_args(argv)
    if extra:
        bad = extra[0]
        if not bad.startswith("-"):
            raise ConfigError(f"unexpected argument {bad!r}: options look like --key=value")
        key = bad.lstrip("-").split("=")[0]
        known = [a.dest for a in parser._actions if a.option_strings and a.dest != "help"]
        near = difflib.get_close_matches(key, known, n=1) or [k for k in known if k.lower() == key.lower()]
        hint = f" (did you mean --{near[0]}?)" if near else " (see --help)"
        raise ConfigError(f"unknown option --{key}{hint}")
    given = vars(namespace)
    given.pop("_given", None)
    return {k: v for k, v in given.items() if v is not argparse.SUPPRESS and v != argparse.SUPPRESS}


# Failures of the machine, not of the program: a full or read-only disk, a folder this user may not
# write, a path that runs through a regular file. One line naming the file (exit code 2), no traceback.
MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                            errno.EISDIR})


def main_guard(function, *args, **kwargs):
    """Run a command's body with the exit codes of the convention above."""
    if hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread():
        # A SIGINT blocked by the process that started us (a mask is inherited through exec) would
        # leave Ctrl-C pending forever instead of exit code 130; an ignored one (a shell's
        # background job) stays ignored.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        return function(*args, **kwargs)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    except OSError as exc:
        if exc.errno not in MACHINE_ERRNOS:
            raise
        print(f"error: {exc.filename + ': ' if exc.filename else ''}{exc.strerror}", file=sys.stderr)
        raise SystemExit(CommandError.exit_code) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
