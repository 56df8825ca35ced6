"""``kiln install``, ``kiln uninstall`` and ``kiln host``: put the right build of a release for
this machine into a prefix, verified; remove it; show what kiln sees of the machine.

The project installed is the one the release's signed index names (its ``project``): it names
the default prefix (``~/.<project>``), the install record (``.<project>-install.json``) and
every message. ``kiln uninstall`` has no release to read: it takes ``--prefix`` or
``--project``.

The choice is made by ``kiln.install.installer.rank`` from the facts of ``kiln.install.host``;
``--dry-run``
prints it with every reason and downloads no archive.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from kiln.errors import ConfigError

if TYPE_CHECKING:
    from kiln.cli.context import Context
    from kiln.install.host import Host

__all__ = ["FROM_ENV", "PINNED_PUBKEY", "PUBKEY_ENV", "cmd_host", "cmd_install", "cmd_uninstall",
           "register"]

# The project's release key (minisign, base64), pinned here so that a mirror cannot swap it.
# ``None`` until the project's release key exists; then ``--pubkey`` / KILN_INSTALL_PUBKEY
# are needed. The release's own ``minisign.pub`` is never trusted: it comes from the mirror.
PINNED_PUBKEY: str | None = None
FROM_ENV = "KILN_INSTALL_FROM"
PUBKEY_ENV = "KILN_INSTALL_PUBKEY"


def _host(ctx: Context) -> Host:
    from kiln.install.host import LiveSource, load_profile, probe

    profile = getattr(ctx.args, "host_profile", None)
    if profile:
        return probe(load_profile(Path(profile)))
    return probe(LiveSource(ctx.env))


def cmd_install(ctx: Context) -> int:
    from kiln.install.installer import (
        Choice,
        Fetcher,
        Release,
        default_prefix,
        install_release,
        progress_printer,
        pubkey_from,
        require_choice,
    )

    a = ctx.args
    source = a.source or ctx.env.get(FROM_ENV)
    if not source:
        raise ConfigError("no release mirror to install from",
                          hint=f"pass --from URL (a mirror or release directory) or set "
                               f"{FROM_ENV}")
    if a.host_profile and not a.dry_run:
        raise ConfigError("--host-profile describes another machine: it only goes with "
                          "--dry-run")
    pubkey = pubkey_from(a.pubkey or ctx.env.get(PUBKEY_ENV)) or PINNED_PUBKEY
    err = sys.stderr
    fetcher = Fetcher(progress=progress_printer(err, terminal=err.isatty() and not a.json))
    prefix = Path(a.prefix).expanduser() if a.prefix else None

    def show(release: Release, choice: Choice) -> None:
        """What is known before any download: the signature warning and the choice."""
        if not release.signed:
            print("kiln: warning: --insecure-skip-signature: the release's signature was NOT "
                  "checked; checksums only protect against damage, not tampering", file=err)
        for note in release.notes:
            print(f"kiln: warning: {note}", file=err)
        if a.dry_run:
            if a.json:
                ctx.out.write(json.dumps(choice.to_json(), indent=2) + "\n")
            else:
                ctx.console.line(f"{release.project} {release.tag} from {release.url}")
                for line in choice.explain():
                    ctx.console.line(line)
            return
        best = require_choice(choice)
        if prefix is None:
            # no HOME: refused before the summary, as before a download
            default_prefix(ctx.env, release.project)
        if not a.json:
            ctx.console.line(f"{release.project} {release.tag}: {choice.summary()}")
            for note in best.notes:
                ctx.console.line(f"  note: {note}")

    done = install_release(source, tag=a.tag, prefix=prefix, pubkey=pubkey, backend=a.backend,
                           host=_host(ctx) if a.host_profile else None, env=ctx.env,
                           fetcher=fetcher,
                           allow_downgrade=a.allow_downgrade,
                           insecure_skip_signature=a.insecure_skip_signature,
                           dry_run=a.dry_run, on_choice=show)
    release, choice, result = done.release, done.choice, done.result
    if result is None:  # --dry-run
        require_choice(choice)
        return 0
    if a.json:
        ctx.out.write(json.dumps({"installed": str(result.prefix), "project": result.project,
                                  "tag": result.tag, "date": release.date,
                                  "entry_id": result.entry_id, "asset": result.asset,
                                  "replaced": result.replaced, "downgrade": result.downgrade,
                                  "bin": str(result.bin), "programs": list(result.programs),
                                  "choice": choice.to_json()}, indent=2) + "\n")
        return 0
    replaced = ""
    if result.replaced:
        older = ", an older release: --allow-downgrade" if result.downgrade else ""
        replaced = f" (replaced {result.replaced}{older})"
    ctx.console.line(f"installed {result.project} {result.tag} ({result.entry_id}) into "
                     f"{result.prefix}{replaced}")
    ctx.console.line(f"  programs: {', '.join(result.programs)}")
    ctx.console.line(f"  add to PATH: export PATH=\"{result.bin}:$PATH\"")
    return 0


def cmd_uninstall(ctx: Context) -> int:
    from kiln.install.installer import check_project, default_prefix, uninstall

    a = ctx.args
    # dest uninstall_project: kiln's own -C/--project DIR (args.project) is another option
    project = (check_project(a.uninstall_project, what="--project")
               if a.uninstall_project is not None else None)
    if a.prefix:
        prefix = Path(a.prefix).expanduser()
    elif project is not None:
        prefix = default_prefix(ctx.env, project)
    else:
        raise ConfigError("kiln uninstall needs to know what to remove",
                          hint="pass --prefix DIR (the directory installed into) or "
                               "--project NAME (to remove ~/.NAME)")
    record = uninstall(prefix, project)
    if a.json:
        ctx.out.write(json.dumps({"removed": str(prefix.absolute()), **record}, indent=2)
                      + "\n")
    else:
        ctx.console.line(f"removed {record['project']} {record.get('tag', '?')} "
                         f"({record.get('entry_id', '?')}) from {prefix.absolute()}")
    return 0


def cmd_host(ctx: Context) -> int:
    host = _host(ctx)
    if ctx.args.json:
        ctx.out.write(json.dumps(host.to_json(), indent=2) + "\n")
        return 0
    ctx.console.line(host.summary)
    rows = [[k, ", ".join(map(str, v)) if isinstance(v, list) else str(v)]
            for k, v in host.to_json().items() if k != "cpu" and v not in (None, [], False)]
    cpu = host.cpu
    rows.insert(0, ["cpu", f"{cpu.model or '?'} ({cpu.level or '?'}, "
                           f"{', '.join(sorted(cpu.features)) or 'no kernel features'}"
                           f"{', ' + cpu.uarch if cpu.uarch else ''})"])
    ctx.console.table(None, ["fact", "value"], rows)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("install", help="install the right build for this machine")
    p.add_argument("--from", dest="source", metavar="URL",
                   help=f"mirror root, release directory, or URL with {{tag}} (default: "
                        f"${FROM_ENV})")
    p.add_argument("--tag", default="latest", metavar="bN|latest",
                   help="release to install (default: latest)")
    p.add_argument("--prefix", metavar="DIR",
                   help="install directory (default: ~/.<project>)")
    p.add_argument("--backend", metavar="B",
                   help="force a backend (cuda, cuda-12.4, vulkan, cpu...) or an entry id")
    p.add_argument("--dry-run", action="store_true",
                   help="print the choice and every reason; download no archive")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--pubkey", metavar="KEY|FILE",
                   help=f"minisign public key the release must be signed with "
                        f"(default: ${PUBKEY_ENV}, then the key pinned in kiln)")
    p.add_argument("--allow-downgrade", action="store_true",
                   help="replace an install with an older release (refused without "
                        "it: a mirror whose latest points back in time)")
    p.add_argument("--insecure-skip-signature", action="store_true",
                   help="do not check the signature of SHA256SUMS (checksums still checked)")
    p.add_argument("--host-profile", metavar="FILE",
                   help="with --dry-run: choose for the machine described in FILE "
                        "(a kiln host profile) instead of this one")
    p.set_defaults(func=cmd_install)

    u = sub.add_parser("uninstall", help="remove an install made by kiln install or "
                                         "install.sh")
    u.add_argument("--prefix", metavar="DIR",
                   help="install directory (the one holding .<project>-install.json)")
    u.add_argument("--project", dest="uninstall_project", metavar="NAME",
                   help="the project to remove: its install in ~/.NAME, or in --prefix")
    u.add_argument("--json", action="store_true", help="print what was removed as JSON")
    u.set_defaults(func=cmd_uninstall)

    h = sub.add_parser("host", help="show what kiln install sees of this machine")
    h.add_argument("--json", action="store_true", help="print the facts as JSON")
    h.add_argument("--host-profile", metavar="FILE", help="read a recorded machine profile")
    h.set_defaults(func=cmd_host)
