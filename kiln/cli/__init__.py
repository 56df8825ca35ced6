"""Command-line interface: argument parsing and one small function per subcommand.

argparse (standard library) rather than click: kiln's CLI is a handful of subcommands with plain
flags, ``main(argv)`` stays directly callable from tests, and the tool that builds releases
carries one dependency fewer. Errors are ``KilnError`` subclasses; only ``main`` turns them into
an exit code (tracebacks only with ``--debug``).
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from kiln import __version__
from kiln.console import Console, Style
from kiln.errors import INTERRUPTED_EXIT_CODE, CommandFailed, KilnError
from kiln.matrix import Matrix, json_schema, load_matrix
from kiln.plan import github_matrix, plan, select

__all__ = ["main"]


@dataclass(frozen=True)
class Context:
    """What every subcommand gets: parsed args, the environment, where to write."""

    args: argparse.Namespace
    env: Mapping[str, str]
    console: Console
    repo: Path

    @property
    def out(self) -> TextIO:
        return self.console.stream

    def matrix(self) -> Matrix:
        root = getattr(self.args, "matrix_dir", None) or self.repo / "matrix"
        return load_matrix(Path(root))


def _find_repo(start: Path) -> Path:
    """The directory holding ``matrix/`` (the project root), searching upwards."""
    for d in (start, *start.parents):
        if (d / "matrix" / "defaults.yaml").is_file():
            return d
    return start


# --------------------------------------------------------------------------------------------
# matrix


def cmd_matrix_validate(ctx: Context) -> int:
    root = Path(ctx.args.dir) if ctx.args.dir else ctx.repo / "matrix"
    m = load_matrix(root)
    enabled = len(m.enabled)
    local = sum(1 for e in m.enabled if e.local)
    ctx.console.line(f"matrix {root}: {len(m)} entries valid ({enabled} enabled: {local} local, "
                     f"{enabled - local} ci-only; {len(m.disabled)} disabled)")
    return 0


STATUS_STYLE = Style({"enabled": "green", "disabled": "red"})
WHERE_STYLE = Style({"local": "cyan", "ci-only": "yellow"})
VERIFY_STYLE = Style({"native": "green", "qemu": "green", "wine": "green", "lavapipe": "green",
                      "pocl": "green", "openvino-cpu": "green", "inspect": "blue"})


def cmd_matrix_list(ctx: Context) -> int:
    m = ctx.matrix()
    rows = []
    sections = []
    for i, e in enumerate(m):
        status = "enabled" if e.enabled else "disabled"
        rows.append([e.id, f"{e.os} {e.arch}", e.backend_label, e.floor, e.build, e.verify,
                     status])
        if i + 1 < len(m) and m.entries[i + 1].source != e.source:
            sections.append(i)
    disabled = [f"{e.id}: {e.disabled.tracking}" for e in m.disabled if e.disabled]
    enabled = len(m.enabled)
    local = sum(1 for e in m.enabled if e.local)
    caption = (f"{len(m)} entries: {enabled} enabled ({local} build here, {enabled - local} "
               f"ci-only), {len(m.disabled)} disabled"
               + "".join(f"\n  disabled {d}" for d in disabled))
    ctx.console.table("ember build matrix",
                      ["id", "platform", "backend", "needs", "builds", "verified", "status"],
                      rows, styles={"status": STATUS_STYLE, "builds": WHERE_STYLE,
                                    "verified": VERIFY_STYLE}, caption=caption,
                      sections=sections,
                      dim_rows=[i for i, e in enumerate(m) if not e.enabled])
    return 0


def cmd_matrix_schema(ctx: Context) -> int:
    text = json.dumps(json_schema(), indent=2) + "\n"
    if ctx.args.write:
        target = Path(ctx.args.write)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)
        ctx.console.line(f"wrote {target}")
    else:
        ctx.out.write(text)
    return 0


# --------------------------------------------------------------------------------------------
# plan


def _build_number(ctx: Context) -> int:
    if ctx.args.build_number is not None:
        return int(ctx.args.build_number)
    from kiln.vcs import build_number

    return build_number(ctx.repo, ctx.env)


def cmd_plan(ctx: Context) -> int:
    m = ctx.matrix()
    a = ctx.args
    if a.github_matrix:
        entries = select(m, a.selectors, include_disabled=False, local=a.local,
                         ci_only=a.ci_only)
        ctx.out.write(json.dumps(github_matrix(entries), separators=(",", ":")) + "\n")
        return 0
    jobs = plan(m, a.selectors, build_number=_build_number(ctx), include_disabled=a.all,
                local=a.local, ci_only=a.ci_only)
    if a.json:
        ctx.out.write(json.dumps([j.to_json() for j in jobs], indent=2) + "\n")
        return 0
    rows = [[j.entry.id, j.artifact, j.toolchain, j.verify,
             "enabled" if j.entry.enabled else "disabled"] for j in jobs]
    ctx.console.table(f"plan: {len(jobs)} jobs", ["id", "artifact", "toolchain", "verified",
                                                  "status"], rows,
                      styles={"status": STATUS_STYLE, "verified": VERIFY_STYLE})
    return 0


def cmd_docs(ctx: Context) -> int:
    from kiln.ci.docs import update_readme

    readme = ctx.repo / "README.md"
    changed = update_readme(readme, ctx.matrix(), check=ctx.args.check)
    if ctx.args.check:
        ctx.console.line(f"{readme.name}: matrix table up to date")
    else:
        ctx.console.line(f"{readme.name}: " + ("matrix table updated" if changed else
                                               "already up to date"))
    return 0


# --------------------------------------------------------------------------------------------
# parser

# Subcommands that live in their own modules (one per stage). Each module defines
# ``register(subparsers)`` that adds its parser(s) with ``set_defaults(func=...)``; the function
# takes a ``Context`` and returns an exit code.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "kiln.cli.build", "kiln.cli.ci", "kiln.cli.release", "kiln.cli.install")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kiln", description="Build, verify, package and release ember for every platform.")
    p.add_argument("--version", action="version", version=f"kiln {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="log every external command kiln runs")
    p.add_argument("--matrix-dir", metavar="DIR", help="matrix directory (default: ./matrix)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pm = sub.add_parser("matrix", help="inspect and validate the build matrix")
    msub = pm.add_subparsers(dest="matrix_command", required=True, metavar="SUBCOMMAND")
    v = msub.add_parser("validate", help="check every file of a matrix directory")
    v.add_argument("dir", nargs="?", help="matrix directory (default: ./matrix)")
    v.set_defaults(func=cmd_matrix_validate)
    ls = msub.add_parser("list", help="a table of every entry")
    ls.set_defaults(func=cmd_matrix_list)
    sc = msub.add_parser("schema", help="print (or --write) the JSON Schema for editors")
    sc.add_argument("--write", metavar="FILE", help="write it to FILE atomically")
    sc.set_defaults(func=cmd_matrix_schema)

    pd = sub.add_parser("docs", help="regenerate the README's matrix table")
    g = pd.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", action="store_true", help="rewrite README.md")
    g.add_argument("--check", action="store_true", help="fail if README.md is out of date")
    pd.set_defaults(func=cmd_docs)

    pp = sub.add_parser("plan", help="show what would be built for the selected entries")
    pp.add_argument("selectors", nargs="*", metavar="SELECTOR",
                    help="id, glob ('ubuntu-*') or KEY=VALUE[,KEY=VALUE] (backend=cuda)")
    pp.add_argument("--all", action="store_true", help="include disabled entries")
    pp.add_argument("--local", action="store_true", help="only entries built on this host")
    pp.add_argument("--ci-only", action="store_true", help="only entries built in CI")
    pp.add_argument("--json", action="store_true", help="print the jobs as JSON")
    pp.add_argument("--github-matrix", action="store_true",
                    help="print {\"include\": [...]} for a GitHub Actions strategy.matrix")
    pp.add_argument("--build-number", type=int, metavar="N",
                    help="build number N of tag bN (default: git rev-list --count HEAD)")
    pp.set_defaults(func=cmd_plan)

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
    console = Console.from_env(env, stream=stdout)
    ctx = Context(args=args, env=env, console=console, repo=_find_repo(cwd or Path.cwd()))
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


