"""``kiln release`` and ``kiln publish``: the command-line edge of the release stage.

Parsing and printing only: ``kiln release`` calls ``kiln.release.make.make_release`` and
``kiln publish`` calls ``kiln.publish.publish``, each imported when the command runs.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.cli.context import Context

__all__ = ["SCHEMES", "SchemesHelpFormatter", "cmd_publish", "cmd_release", "register"]

SCHEMES = "{schemes}"


class SchemesHelpFormatter(argparse.HelpFormatter):
    """Replaces ``{schemes}`` in an argument's help with the destinations of
    ``kiln.publish.PUBLISHERS`` when the help is shown: the list comes from the registry, and
    only ``--help`` pays for importing it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        if text is None or SCHEMES not in text:
            return text
        from kiln.publish import scheme_help

        return text.replace(SCHEMES, scheme_help())


def register(sub: Any) -> None:
    r = sub.add_parser(
        "release", help="collect, check, sign and describe a release (tag b<N>)",
        description="Collect the per-entry archives (built now, or downloaded from CI into "
                    "--artifacts), apply the completeness gate, and write the release "
                    "directory: archives, manifest.json, SHA256SUMS, its minisign signature, "
                    "minisign.pub, an SBOM and RELEASE_NOTES.md. Creates the annotated tag.")
    r.add_argument("--out", required=True, metavar="DIR", help="the release directory to write")
    r.add_argument("--tag", metavar="bN",
                   help="the tag (default: b<N> with N = git rev-list --count HEAD)")
    r.add_argument("--artifacts", metavar="DIR",
                   help="use the archives and .json records under DIR instead of building")
    r.add_argument("--allow-missing", nargs="+", action="extend", default=[], metavar="ID",
                   help="enabled entries (ids or globs) that may be missing; the notes say so")
    r.add_argument("--allow-dirty", action="store_true",
                   help="release from a work tree with uncommitted changes")
    r.add_argument("--signing-key", metavar="FILE",
                   help="minisign secret key (default: $KILN_SIGNING_KEY; password from "
                        "$KILN_SIGNING_PASSWORD)")
    r.add_argument("--base-url", metavar="URL",
                   help="download URL of the release's assets ({tag} is replaced; default: "
                        "the GitHub release of kiln.toml's release.github)")
    r.add_argument("--no-git-tag", action="store_true",
                   help="do not create the git tag (it is still checked when it exists)")
    r.add_argument("--parallel", type=int, default=max(1, os.cpu_count() or 1), metavar="N",
                   help="builds run at once when building here")
    r.add_argument("--bench", metavar="FILE",
                   help="a `bench/bench_cpu.py --json FILE` report: the release carries it "
                        "(bench-cpu.json) and its page and the mirror's draw its figures")
    r.set_defaults(func=cmd_release)

    p = sub.add_parser(
        "publish", help="publish a release directory to --to URL (kiln publish --help lists them)",
        formatter_class=SchemesHelpFormatter,
        description="Check a release directory (checksums, signature) and publish it. "
                    "Re-running after a failure resumes; nothing incomplete is ever visible "
                    "as published. GitHub needs GITHUB_TOKEN.")
    p.add_argument("dir", metavar="DIR", help="a directory made by `kiln release --out DIR`")
    p.add_argument("--to", required=True, metavar="URL",
                   help=f"the destination, one of {SCHEMES} (file://PATH: a mirror "
                        f"directory, github://OWNER/REPO: a GitHub release)")
    p.add_argument("--signing-key", metavar="FILE",
                   help="the release's minisign secret key, to re-sign a mirror's index.json "
                        "(default: $KILN_SIGNING_KEY; without one a mirror keeps no index)")
    p.add_argument("--index-expiry-days", type=int, default=30, metavar="N",
                   help="how long the mirror's re-signed index.json is valid (default 30): "
                        "installers refuse an expired one, so publish again before then")
    p.set_defaults(func=cmd_publish)


def cmd_release(ctx: Context) -> int:
    from kiln.release.make import make_release

    a = ctx.args
    repo = ctx.repo
    result = make_release(
        Path(a.out), repo=repo, tag=a.tag,
        artifacts=Path(a.artifacts) if a.artifacts else None,
        allow_missing=a.allow_missing, allow_dirty=a.allow_dirty, signing_key=a.signing_key,
        base_url=a.base_url, git_tag=not a.no_git_tag, parallel=a.parallel,
        matrix=ctx.matrix(), env=ctx.env, console=ctx.console,
        bench=Path(a.bench) if a.bench else None)
    tag, head, manifest = result.tag, result.commit, result.manifest
    if result.tag_created:
        ctx.console.line(f"created tag {result.git_tag} at {head[:12]} (push it: git push origin "
                         f"{result.git_tag})")
    rows = [[x.record.entry_id, x.record.name, str(x.record.size),
             x.record.verification.method] for x in manifest.assets]
    ctx.console.table(f"release {tag}: {len(rows)} assets", ["entry", "asset", "bytes",
                                                            "verified"], rows)
    for m in manifest.missing:
        ctx.console.line(f"missing (allowed): {m.entry_id}: {m.reason}")
    ctx.console.line(f"wrote {result.out} ({len(manifest.disabled)} disabled builds listed in "
                     f"the notes); notes kept as {result.notes.relative_to(repo)}")
    return 0


def cmd_publish(ctx: Context) -> int:
    from kiln.errors import ConfigError
    from kiln.publish import publish

    days = ctx.args.index_expiry_days
    if not 1 <= days <= 3650:
        raise ConfigError(f"--index-expiry-days {days} is not from 1 to 3650")
    # The project's git tag prefix (kiln.toml's release.tag_prefix), where there is a project.
    project = ctx.project_or_none()
    settings = project.release if project is not None else None
    published = publish(Path(ctx.args.dir), ctx.args.to, env=ctx.env, log=ctx.console.note,
                        signing_key=ctx.args.signing_key, index_expiry_days=days,
                        tag_prefix=settings.tag_prefix if settings is not None else "")
    result = published.result
    if result.already_published:
        ctx.console.line(f"{published.tag} was already published to {result.destination}: "
                         f"{result.url}")
    else:
        ctx.console.line(f"published {published.tag} to {result.destination}: {result.url} "
                         f"({len(result.uploaded)} uploaded, {len(result.kept)} already there)")
    return 0
