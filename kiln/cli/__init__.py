"""Command-line interface: ``main()`` and the assembly of the argument parser.

Each command group is one module here (``matrix``, ``build``, ``ci``, ``release``,
``install``) with ``register(subparsers)`` and one small function per subcommand taking a
``kiln.cli.context.Context``. The CLI only parses and prints: the work is done by the stage
packages, which each command imports when it runs, so that building the parser (``kiln
--help``, ``kiln plan``) imports only these modules, ``kiln.errors`` and argparse.

argparse (standard library) rather than click: kiln's CLI is a handful of subcommands with plain
flags, ``main(argv)`` stays directly callable from tests, and the tool that builds releases
carries one dependency fewer. Errors are ``KilnError`` subclasses; only ``main`` turns them into
an exit code (tracebacks only with ``--debug``).
"""

from __future__ import annotations

import argparse
import importlib
import io
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from kiln import __version__
from kiln.cli.context import Context, find_repo
from kiln.errors import INTERRUPTED_EXIT_CODE, CommandFailed, KilnError

__all__ = ["SUBCOMMAND_MODULES", "main"]

# The command groups, in the order ``kiln --help`` lists them. Each module defines
# ``register(subparsers)`` that adds its parser(s) with ``set_defaults(func=...)``; the function
# takes a ``Context`` and returns an exit code.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "kiln.cli.matrix", "kiln.cli.build", "kiln.cli.ci", "kiln.cli.release", "kiln.cli.install",
    "kiln.cli.reproduce", "kiln.cli.verify")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kiln", description="Build, verify, package and release a CMake project "
                             "(kiln.toml) for every platform.")
    p.add_argument("--version", action="version", version=f"kiln {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="log every external command kiln runs")
    p.add_argument("-C", "--project", metavar="DIR",
                   help="the project to work on: the directory with its kiln.toml (default: the "
                        "nearest one above the current directory)")
    p.add_argument("--matrix-dir", metavar="DIR", help="matrix directory (default: ./matrix)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return p


def _tolerant_streams() -> None:
    """Never fail on printing: under a C or POSIX locale with UTF-8 mode off, Python's streams
    are ASCII, and a program's output or a file name kiln repeats may hold any character."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None, *, env: Mapping[str, str] | None = None,
         stdout: TextIO | None = None, cwd: Path | None = None) -> int:
    """Entry point of the ``kiln`` script; returns the exit code."""
    env = dict(os.environ) if env is None else env
    if stdout is None:
        _tolerant_streams()
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(message)s", stream=sys.stderr)
    start = cwd or Path.cwd()
    if args.project:
        start = (start / args.project).absolute()
    ctx = Context(args=args, env=env, repo=find_repo(start), stream=stdout)
    func: Callable[[Context], int] = args.func
    try:
        return func(ctx)
    except KilnError as exc:
        if args.debug:
            raise
        print(f"kiln: error: {exc.render()}", file=sys.stderr)
        if isinstance(exc, CommandFailed) and exc.output:
            print(exc.output, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("kiln: interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
