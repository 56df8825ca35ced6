"""``kiln build SELECTOR... [--out DIR] [--jobs N] [--build-number N] [--json]
[--check-reproducible] [--cache-dir DIR]``: the CLI face of kiln/build.py.

Parses arguments and the environment (``KILN_CACHE``; ``SOURCE_DATE_EPOCH`` is read by
``build_jobs`` from the mapping it is given), selects the jobs with kiln/plan.py, refuses what
cannot be built here, runs ``build_jobs`` and prints the summary: a table on a terminal or in
a log (and a GitHub step summary), or JSON with ``--json``. Exit 0 when every entry was built
and verified, 7 (``BuildError``) when one or more failed, 12 (``IntegrityError``) when
``--check-reproducible`` found archives that differ.
"""

from __future__ import annotations

import argparse
import json
import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from kiln.errors import BuildError, IntegrityError

if TYPE_CHECKING:
    from kiln.build.jobs import BuildSummary, ReproResult
    from kiln.cli.context import Context
    from kiln.plan import Job

__all__ = ["DEFAULT_JOBS", "build_jobs", "cmd_build", "register"]

DEFAULT_JOBS = 2


def build_jobs(jobs: Sequence[Job], **kwargs: Any) -> BuildSummary:
    """``kiln.build.jobs.build_jobs``, imported when a build runs rather than when the parser
    is built (it pulls in every toolchain and the packagers); a name of this module so that
    tests can stand in for the build."""
    from kiln.build.jobs import build_jobs as run

    return run(jobs, **kwargs)


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "build", help="build, verify and package the selected entries on this host",
        description="Build the selected matrix entries from this host with pinned toolchains, "
                    "verify each (run under qemu/wine or natively, or inspect), and package "
                    "<name>-b<N>-bin-<id> archives (kiln.toml) with a record beside each.")
    p.add_argument("selectors", nargs="+", metavar="SELECTOR",
                   help="id, glob ('win-cpu-*') or KEY=VALUE[,KEY=VALUE] (backend=cpu)")
    p.add_argument("--out", default="dist", metavar="DIR",
                   help="where archives and records go (default: dist); logs in DIR/logs")
    p.add_argument("-j", "--jobs", type=int, default=DEFAULT_JOBS, metavar="N",
                   help=f"entries built at once (default {DEFAULT_JOBS})")
    p.add_argument("--build-number", type=int, metavar="N",
                   help="build number N of tag bN (default: git rev-list --count HEAD)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--on-ci-runner", action="store_true",
                   help="this is the entry's own CI runner (the generated release workflow "
                        "passes it): allow ci-only entries")
    p.add_argument("--check-reproducible", action="store_true",
                   help="build everything again with empty build caches and compare sha256s")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="kiln's cache (default: $KILN_CACHE or ~/.cache/kiln)")
    p.set_defaults(func=cmd_build)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """A plain ``kill`` stops kiln like Ctrl-C: temporary files are removed on the way out."""
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (a test calling main() from a thread)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fmt_seconds(s: float) -> str:
    return f"{s:.1f}s" if s < 90 else f"{int(s) // 60}m{int(s) % 60:02d}s"


def _print_summary(ctx: Context, summary: BuildSummary) -> None:
    from kiln.console import Style

    rows = []
    for r in summary.results:
        state = ("ok (cached)" if r.cached else "ok") if r.ok else "FAILED"
        verified = r.verification.method if r.verification else "-"
        rows.append([r.entry_id, state, verified, _fmt_seconds(r.seconds),
                     r.asset.name if r.asset else "-", str(r.log)])
    n_ok = sum(1 for r in summary.results if r.ok)
    caption = (f"{n_ok} of {len(summary.results)} built and verified in "
               f"{_fmt_seconds(summary.seconds)}")
    ctx.console.table("kiln build", ["entry", "result", "verified", "time", "asset", "log"],
                      rows, styles={"result": Style({"ok": "green", "FAILED": "red"})},
                      caption=caption)
    for r in summary.failed:
        ctx.console.line(f"{r.entry_id}: {r.error}")


def _print_repro(ctx: Context, results: tuple[ReproResult, ...]) -> None:
    from kiln.console import Style

    rows = [[r.entry_id, "identical" if r.same else "DIFFERENT", (r.first or "-")[:16],
             (r.second or "-")[:16], ", ".join(r.differing[:4]) or "-"] for r in results]
    ctx.console.table("reproducibility: a second build with empty caches",
                      ["entry", "archive", "first sha256", "second sha256", "differing members"],
                      rows, styles={"archive": Style({"identical": "green",
                                                      "DIFFERENT": "red"})})


def cmd_build(ctx: Context) -> int:
    from kiln import vcs
    from kiln.build.cache import CacheLayout, default_cache_dir
    from kiln.build.jobs import build_env, check_reproducible
    from kiln.build.toolchains import check_buildable
    from kiln.plan import plan

    a = ctx.args
    repo = ctx.repo
    project = ctx.project()
    if a.build_number is not None:
        build_number = int(a.build_number)
    else:
        build_number = vcs.build_number(repo, build_env(ctx.env))
    matrix = ctx.matrix()
    jobs = plan(matrix, a.selectors, build_number=build_number, names=project.names)
    check_buildable([j.entry for j in jobs], project.recipes_dir, on_ci_runner=a.on_ci_runner)
    cache_root = Path(a.cache_dir) if a.cache_dir else default_cache_dir(ctx.env)
    layout = CacheLayout.at(cache_root)
    out = Path(a.out)
    with _sigterm_as_interrupt():
        summary = build_jobs(jobs, repo=repo, out=out, env=ctx.env, parallel=a.jobs,
                             console=ctx.console, layout=layout, matrix=matrix,
                             quiet=a.json, on_ci_runner=a.on_ci_runner, project=project)
        repro: tuple[ReproResult, ...] = ()
        if a.check_reproducible and summary.ok:
            if not a.json:
                ctx.console.line("checking reproducibility: building again with empty caches")
            repro = check_reproducible(jobs, summary, repo=repo, env=ctx.env,
                                       parallel=a.jobs, console=ctx.console, layout=layout,
                                       matrix=matrix)
    if a.json:
        data = summary.to_json()
        if a.check_reproducible:
            data["reproducible"] = [{"entry_id": r.entry_id, "asset": r.asset,
                                     "same": r.same, "first": r.first, "second": r.second,
                                     "differing": list(r.differing)} for r in repro]
        ctx.out.write(json.dumps(data, indent=2) + "\n")
    else:
        _print_summary(ctx, summary)
        if repro:
            _print_repro(ctx, repro)
    if not summary.ok:
        failed = summary.failed
        raise BuildError(f"{len(failed)} of {len(summary.results)} builds failed: "
                         + ", ".join(r.entry_id for r in failed),
                         hint="each failure's log is named above (" + ", ".join(
                             str(r.log) for r in failed[:3]) + ")")
    if a.check_reproducible:
        bad = [r for r in repro if not r.same]
        if bad:
            raise IntegrityError("not reproducible: " + ", ".join(
                f"{r.asset} ({', '.join(r.differing[:3]) or 'sha256 differs'})" for r in bad),
                hint="compare the members named; SOURCE_DATE_EPOCH, paths and timestamps "
                     "are the usual causes")
    return 0
