"""``kiln reproduce``: the command-line edge of ``kiln.release.reproduce``.

Parsing and printing only: the rebuild and the comparison are ``reproduce()``'s, imported when
the command runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.cli.context import Context

__all__ = ["cmd_reproduce", "register"]


def register(sub: Any) -> None:
    r = sub.add_parser(
        "reproduce", help="rebuild a release from its commit and compare it byte for byte",
        description="Check a release (checksums, signature), rebuild its local assets from "
                    "the release's commit (a git worktree of this repository) with the "
                    "recorded toolchains, build number and SOURCE_DATE_EPOCH and with empty "
                    "build caches, and compare each with the release's bytes. A difference is "
                    "explained by diffoscope (text and HTML under the report directory; exit "
                    "12); a full match writes reproduced.intoto.json, an in-toto statement, "
                    "signed with minisign when a key is given.")
    r.add_argument("--release", required=True, metavar="DIR|URL",
                   help="the release: a directory made by `kiln release`, or its file://, "
                        "http:// or https:// URL")
    r.add_argument("--only", nargs="+", action="extend", default=[], metavar="ID",
                   help="rebuild only these entries (ids or globs; default: every entry of "
                        "the release that builds here)")
    r.add_argument("--report-dir", metavar="DIR",
                   help="where reports go (default: beside a release directory, "
                        "<release>-reproduce; for a URL, <project>-<tag>-reproduce here)")
    r.add_argument("--signing-key", metavar="FILE",
                   help="minisign secret key that signs the statement (default: "
                        "$KILN_SIGNING_KEY; password from $KILN_SIGNING_PASSWORD); without "
                        "one the statement is written unsigned")
    r.add_argument("--public-key", metavar="FILE",
                   help="the minisign public key the release must be signed with (default: "
                        "the release's own minisign.pub)")
    r.add_argument("--parallel", type=int, default=max(1, os.cpu_count() or 1), metavar="N",
                   help="builds run at once")
    r.set_defaults(func=cmd_reproduce)


def cmd_reproduce(ctx: Context) -> int:
    from kiln.release.reproduce import NOT_REBUILT, outcome_error, reproduce

    a = ctx.args
    result = reproduce(
        a.release, repo=ctx.repo, only=a.only,
        report_dir=Path(a.report_dir) if a.report_dir else None, signing_key=a.signing_key,
        public_key=Path(a.public_key) if a.public_key else None, parallel=a.parallel,
        env=ctx.env, console=ctx.console)
    m = result.manifest
    rows = [[c.entry_id, c.name,
             c.status + (f" ({c.why})" if c.status == NOT_REBUILT and c.why else "")]
            for c in result.checks]
    ctx.console.table(f"reproduce {m.project} {m.tag} (commit {m.commit[:12]}): "
                      f"{len(result.identical)} of {len(rows)} identical",
                      ["entry", "asset", "result"], rows)
    for c in result.different:
        ctx.console.line(f"DIFFERENT: {c.name}: diffoscope report {c.report}")
    error = outcome_error(result)
    if error is not None:
        raise error
    if result.statement is not None:
        if result.signed:
            ctx.console.line(f"wrote {result.statement} and its minisign signature "
                             f"{result.statement.name}.minisig")
        else:
            ctx.console.line(f"WARNING: wrote {result.statement} UNSIGNED: no signing key "
                             "(pass --signing-key FILE or set KILN_SIGNING_KEY to sign it)")
    return 0
