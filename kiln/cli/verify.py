"""``kiln verify DIR``: check a downloaded release directory (signature, checksums, manifest,
provenance) and print what was checked. Parsing and printing only: the checks are
``kiln.release.check``, imported when the command runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.cli.context import Context

__all__ = ["cmd_verify", "register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "verify", help="check a release directory: signature, checksums, manifest, provenance",
        description="Check a release directory as a downstream user would: the minisign "
                    "signature of SHA256SUMS, every file against SHA256SUMS, manifest.json, "
                    "and the signed provenance (provenance.intoto.json). Exits 0 only when "
                    "every check passes; otherwise with the exit code of the first failure "
                    "(12: a checksum or signature does not match, 9: not a consistent "
                    "release).")
    p.add_argument("dir", metavar="DIR", help="the release directory")
    p.add_argument("--key", metavar="FILE|KEY",
                   help="the project's minisign public key (a minisign.pub file or its RW... "
                        "line); without it the release's own minisign.pub is used, which "
                        "proves nothing against a tampered mirror")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_verify)


def cmd_verify(ctx: Context) -> int:
    from kiln.release.check import CHECKS, public_key_from, verify_release

    a = ctx.args
    key = public_key_from(a.key) if a.key else None
    report = verify_release(Path(a.dir), key=key)
    for warning in report.warnings:
        print(f"kiln: warning: {warning}", file=sys.stderr)
    if a.json:
        json.dump(report.to_json(), ctx.out, indent=2, sort_keys=True)
        ctx.out.write("\n")
    else:
        what = {c.name: c.what for c in CHECKS}
        rows = [["ok" if o.ok else "FAILED", o.name, what.get(o.name, ""), o.detail]
                for o in report.outcomes]
        title = f"kiln verify {report.directory}" + (f": {report.tag}" if report.tag else "")
        ctx.console.table(title, ["result", "check", "what", "found"], rows)
        passed = sum(o.ok for o in report.outcomes)
        ctx.console.line(f"{passed} of {len(report.outcomes)} checks passed"
                         + ("" if report.pinned else " (key: the release's own, not pinned)"))
    if report.error is not None:
        raise report.error
    return 0
