"""The ``lokr`` command line: ``lokr info | merge | convert | ...``.

Each subcommand lives in ``lokr_core/commands/<name>.py`` with ``add_parser(subparsers)`` and
``run(args) -> int``; :data:`COMMANDS` lists them. Exit codes: 0 ok, 1 usage error, 2 bad input (a :class:`~lokr_core.base.errors.LoKrError`,
message on stderr), 3 unexpected error (traceback with ``--debug``).

Run as ``lokr ...`` (installed script) or ``python -m lokr_core.commands.cli ...``.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from types import ModuleType
from typing import Sequence

from ..base.errors import LoKrError
from ..base.version import __version__

COMMANDS = ["info", "merge", "convert", "demo", "extract", "resize"]
"""Subcommand modules in this package, in help order."""

EXIT_OK, EXIT_USAGE, EXIT_BAD_INPUT, EXIT_UNEXPECTED = 0, 1, 2, 3


class UsageError(Exception):
    """A command line argparse refuses (exit code 1)."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser that raises UsageError instead of exiting with code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: error: {message}\n{self.format_usage().strip()}")


def load_commands(names: Sequence[str] = COMMANDS) -> dict[str, ModuleType]:
    """{name: module} for the command modules ``names`` (relative to this package, so it also works
    when the package is ``<pack folder>.lokr_core`` inside ComfyUI)."""
    return {name: importlib.import_module(f".{name}", __package__) for name in names}


def build_parser(commands: dict[str, ModuleType] | None = None) -> argparse.ArgumentParser:
    """The top-level parser with one subparser per available command."""
    commands = load_commands() if commands is None else commands
    parser = _Parser(prog="lokr", description="LoKr (low-rank Kronecker) adapter tools for Stable Diffusion.")
    parser.add_argument("--version", action="version", version=f"comfyui-lokr {__version__}")
    parser.add_argument("--debug", action="store_true", help="print a traceback on unexpected errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in commands.values():
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help / --version
            return int(exc.code or 0)
        if not getattr(args, "command", None) or not hasattr(args, "run"):
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return int(args.run(args) or 0)
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    except LoKrError as exc:
        print(f"lokr: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("lokr: interrupted; nothing was written", file=sys.stderr)
        return EXIT_UNEXPECTED
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
        if debug:
            traceback.print_exc()
        print(f"lokr: unexpected error: {type(exc).__name__}: {exc}"
              + ("" if debug else " (run with --debug for a traceback)"), file=sys.stderr)
        return EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
