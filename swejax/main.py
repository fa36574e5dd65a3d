"""The command line: `python -m swejax.main [MODE] [--config=FILE] [--config.a.b=VALUE ...]`.

This module parses the command line and dispatches to a mode (`swejax.modes`). Mistakes in the
command, the config or the input files (`swejax.errors.UserError`) end in one line
`swejax: error: ...` on stderr and exit code 2; anything else is a bug and keeps its traceback.
The summary of a mode goes to stdout, progress and notices to stderr. The modes import JAX and
the model code when they run, so `--help` answers without loading them.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from swejax import distributed
from swejax.config import load_config
from swejax.errors import UserError

_PROG = "python -m swejax.main"
_DEFAULT_MODE = "train"
# mode -> its module in swejax.modes (each module's SUMMARY is its line in the help)
_MODES: dict[str, str] = {
    "train": "train",
    "check": "check",
    "convert": "convert",
    "eval": "evaluate",
    "validate-tasks": "validate",
    "tasks": "tasks",
    "synthesize": "synthesize",
    "show": "show",
}
_CONFIG_FLAGS_HELP = """\
config:
  --config=FILE        a Python file (see configs/) whose get_config() returns the run config;
                       without it, the embedded default: a tiny model on the local devices
  --config.KEY=VALUE   set one field, e.g. --config.mesh.fsdp=8 --config.model.dtype=bfloat16;
                       unknown keys and values of the wrong type are errors"""

logger = logging.getLogger("swejax")


class _Exit(Exception):
    """argparse finished early (for example after --help) with this exit status."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so `main` returns a code and prints one line."""

    def error(self, message: str) -> NoReturn:
        raise UserError(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise _Exit(status)


def main(argv: list[str] | None = None) -> int:
    """Run one mode; returns the process exit code (0 ok, 2 a user error)."""
    args = list(sys.argv[1:] if argv is None else argv)
    _log_to_stderr()
    status = 1  # an exception that escapes
    try:
        status = _run(args)
    except _Exit as finished:
        status = finished.status
    except UserError as error:
        print(f"swejax: error: {' '.join(str(error).split())}", file=sys.stderr)
        status = 2
    finally:
        distributed.finish(ok=status == 0)  # on a pod: the peers stop watching this process
    return status


def _run(args: list[str]) -> int:
    if not args or args[0].startswith("-"):
        if "-h" in args or "--help" in args:
            print(_top_help())
            return 0
        mode, rest = _DEFAULT_MODE, args
    else:
        mode, rest = _checked_mode(args[0]), args[1:]

    module = _module(mode)
    parser = _mode_parser(mode, module)
    options, leftovers = parser.parse_known_args(rest)
    overrides = _config_overrides(leftovers)
    if hasattr(module, "check_arguments"):  # before the config: nothing is built for bad ones
        module.check_arguments(options)
    return module.run(load_config(options.config, overrides), options)


# --- the command line -------------------------------------------------------------------------


def _module(mode: str):
    return importlib.import_module(f"swejax.modes.{_MODES[mode]}")


def _top_help() -> str:
    width = max(len(mode) for mode in _MODES) + 2
    modes = "\n".join(f"  {mode:<{width}} {_module(mode).SUMMARY}" for mode in _MODES)
    return (
        f"usage: {_PROG} [MODE] [--config=FILE] [--config.KEY=VALUE ...] [mode options]\n\n"
        "Multi-turn RL for software-engineering agents (RFT then DAPO) on Qwen2.5, in JAX.\n\n"
        f"modes:\n{modes}\n\n{_CONFIG_FLAGS_HELP}\n\n"
        f"`{_PROG} MODE --help` lists the options of one mode."
    )


def _checked_mode(word: str) -> str:
    if word in _MODES:
        return word
    close = difflib.get_close_matches(word, list(_MODES), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    if word.endswith(".py"):
        hint = f"to use a config file, pass --config={word}; "
    raise UserError(f"unknown mode {word!r}; {hint}modes: {', '.join(_MODES)}")


def _mode_parser(mode: str, module) -> _Parser:
    parser = _Parser(
        prog=f"{_PROG} {mode}",
        usage=f"{_PROG} {mode} [--config=FILE] [--config.KEY=VALUE ...] [options]",
        description=module.SUMMARY,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    # The epilog documents --config; the option itself is not listed twice.
    parser.add_argument("--config", metavar="FILE", default=None, help=argparse.SUPPRESS)
    module.add_arguments(parser)
    parser.epilog = "\n\n".join(filter(None, [_CONFIG_FLAGS_HELP, parser.epilog]))
    return parser


def _config_overrides(leftovers: Sequence[str]) -> list[str]:
    """`--config.a.b=v` arguments as `a.b=v`; anything else argparse did not know is an error."""
    overrides = []
    for argument in leftovers:
        if argument.startswith("--config.") and "=" in argument:
            overrides.append(argument.removeprefix("--config."))
        elif argument.startswith("--config."):
            raise UserError(f"{argument} needs a value: write {argument}=VALUE")
        elif argument in _MODES:
            raise UserError(f"the mode goes first: {_PROG} {argument} [options]")
        else:
            raise UserError(f"unrecognized argument {argument!r} (see {_PROG} --help)")
    return overrides


def _log_to_stderr() -> None:
    # Our progress at INFO; libraries (orbax, absl) only from WARNING, or they drown it.
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logger.setLevel(logging.INFO)


if __name__ == "__main__":
    sys.exit(main())
