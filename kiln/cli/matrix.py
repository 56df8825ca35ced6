"""``kiln matrix validate|list|schema``, ``kiln plan`` and ``kiln docs``: reading the build
matrix. Parsing only here; each command imports ``kiln.matrix``, ``kiln.plan`` or
``kiln.console``'s styles when it runs, so that ``kiln --help`` stays fast."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.cli.context import Context
    from kiln.console import Style

__all__ = ["cmd_docs", "cmd_matrix_list", "cmd_matrix_schema", "cmd_matrix_validate",
           "cmd_plan", "register", "status_style", "verify_style",
           "where_style"]


def status_style() -> Style:
    from kiln.console import Style

    return Style({"enabled": "green", "disabled": "red"})


def where_style() -> Style:
    from kiln.console import Style

    return Style({"local": "cyan", "ci-only": "yellow"})


def verify_style() -> Style:
    from kiln.console import Style

    return Style({"native": "green", "qemu": "green", "wine": "green", "lavapipe": "green",
                  "openvino-cpu": "green", "inspect": "blue"})


def cmd_matrix_validate(ctx: Context) -> int:
    from kiln.matrix import load_matrix

    root = Path(ctx.args.dir) if ctx.args.dir else ctx.repo / "matrix"
    m = load_matrix(root)
    enabled = len(m.enabled)
    local = sum(1 for e in m.enabled if e.local)
    # One plain line, as Console.line writes it, without the console: loading its rendering
    # library would be a third of this command's time (CI runs it on every push).
    print(f"matrix {root}: {len(m)} entries valid ({enabled} enabled: {local} local, "
          f"{enabled - local} ci-only; {len(m.disabled)} disabled)", file=ctx.out)
    return 0


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
    project = ctx.project_or_none()
    ctx.console.table(f"{project.name} build matrix" if project else "build matrix",
                      ["id", "platform", "backend", "needs", "builds", "verified", "status"],
                      rows, styles={"status": status_style(), "builds": where_style(),
                                    "verified": verify_style()}, caption=caption,
                      sections=sections,
                      dim_rows=[i for i, e in enumerate(m) if not e.enabled])
    return 0


def cmd_matrix_schema(ctx: Context) -> int:
    from kiln.matrix import json_schema

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


def _build_number(ctx: Context) -> int:
    if ctx.args.build_number is not None:
        return int(ctx.args.build_number)
    from kiln.vcs import build_number

    return build_number(ctx.repo, ctx.env)


def cmd_plan(ctx: Context) -> int:
    from kiln.plan import github_matrix, plan, select

    m = ctx.matrix()
    a = ctx.args
    if a.github_matrix:
        entries = select(m, a.selectors, include_disabled=False, local=a.local,
                         ci_only=a.ci_only)
        ctx.out.write(json.dumps(github_matrix(entries), separators=(",", ":")) + "\n")
        return 0
    jobs = plan(m, a.selectors, build_number=_build_number(ctx), include_disabled=a.all,
                local=a.local, ci_only=a.ci_only, names=ctx.project().names)
    if a.json:
        ctx.out.write(json.dumps([j.to_json() for j in jobs], indent=2) + "\n")
        return 0
    rows = [[j.entry.id, j.artifact, j.toolchain, j.verify,
             "enabled" if j.entry.enabled else "disabled"] for j in jobs]
    ctx.console.table(f"plan: {len(jobs)} jobs", ["id", "artifact", "toolchain", "verified",
                                                  "status"], rows,
                      styles={"status": status_style(), "verified": verify_style()})
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


def register(sub: Any) -> None:
    pm: argparse.ArgumentParser = sub.add_parser(
        "matrix", help="inspect and validate the build matrix")
    msub = pm.add_subparsers(dest="matrix_command", required=True, metavar="SUBCOMMAND")
    v = msub.add_parser("validate", help="check every file of a matrix directory")
    v.add_argument("dir", nargs="?", help="matrix directory (default: ./matrix)")
    v.set_defaults(func=cmd_matrix_validate)
    ls = msub.add_parser("list", help="a table of every entry")
    ls.set_defaults(func=cmd_matrix_list)
    sc = msub.add_parser("schema", help="print (or --write) the JSON Schema for editors")
    sc.add_argument("--write", metavar="FILE", help="write it to FILE atomically")
    sc.set_defaults(func=cmd_matrix_schema)

    pd: argparse.ArgumentParser = sub.add_parser(
        "docs", help="regenerate the README's matrix table")
    g = pd.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", action="store_true", help="rewrite README.md")
    g.add_argument("--check", action="store_true", help="fail if README.md is out of date")
    pd.set_defaults(func=cmd_docs)

    pp: argparse.ArgumentParser = sub.add_parser(
        "plan", help="show what would be built for the selected entries")
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
