"""Every installer case against ``kiln install`` and ``install.sh`` (dash and bash): an honest
b9 is installed first; the hostile mirror on 127.0.0.1 offers something else; the installer
must refuse with the documented exit code and a message naming what is wrong, leave the b9
install byte for byte as it was, write nothing outside its prefix's staging directory and
its download cache (whose entries must all be verified), and run no injected command.

A case whose documented outcome is an install (exit 0: the installer disarms the hostile
part, an install record the archive carries) must instead leave the release's own tree in
the prefix with exactly one install record, the installer's, telling the truth."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from kiln.release.index import TrustStore, origin_id

from .checks import (
    Run,
    bad_cache_entries,
    diff,
    outcome_problems,
    pwned,
    report,
    run,
    tree,
)
from .conftest import REPO, Hostile
from .corpus import (
    CLI_SCRIPT,
    DASH,
    DATE,
    ENTRY,
    INSTALLED,
    INSTALLERS,
    KILN,
    NEW,
    PROJECT,
    Case,
    Member,
    MirrorSpec,
    ReleaseSpec,
    all_cases,
    asset_name,
    expect,
    honest_members,
    top_dir,
)
from .server import HostileServer

pytestmark = [pytest.mark.integration]

# One xdist group per installer: each worker builds the mirrors of the cases it runs (the
# corpus is built lazily, a case at a time), so the three installers spread over the workers.
PARAMS = [pytest.param(consumer, c.name, id=f"{consumer}:{c.name}",
                       marks=pytest.mark.xdist_group(f"hostile-{consumer}"))
          for c in all_cases() for consumer in INSTALLERS if consumer in c.consumers]
# The honest release carries loose modes and a stranger's uid/gid, which an installer must
# mask (0o755 / 0o644) and never apply (no chown, even when it runs as root).
LOOSE = (Member(f"{top_dir(NEW)}/bin/world-exec", data=CLI_SCRIPT, mode=0o777, owner=4321),
         Member(f"{top_dir(NEW)}/lib/world-writable.bin", data=b"x", mode=0o666, owner=4321))
CONTROL = Case(name="control-honest-b10", klass="control", consumers=INSTALLERS,
               mirror=MirrorSpec(releases=(ReleaseSpec(members=LOOSE),)),
               expect=expect(0, ""))


@dataclass
class Workspace:
    """One test's directories: a b9 install deep inside ``tmp`` (so ``..`` members that
    climb a few levels still land in the watched tree), caches, TMPDIR, HOME and cwd."""

    tmp: Path

    def __post_init__(self) -> None:
        for d in (self.home, self.tmpdir, self.cwd, self.prefix.parent):
            d.mkdir(parents=True, exist_ok=True)
        top = self.prefix
        for m in honest_members(INSTALLED):
            rel = m.name.split("/", 1)[1]
            if not rel:
                continue
            p = top / rel
            if m.name.endswith("/"):
                p.mkdir(parents=True, exist_ok=True)
            else:
                p.write_bytes(m.data)
                p.chmod(m.mode)
        record = {"schema": 1, "tag": INSTALLED, "entry_id": ENTRY,
                  "asset": f"ember-{INSTALLED}-bin-{ENTRY}.tar.gz", "sha256": "0" * 64,
                  "url": "https://ember.invalid/b9/", "signed": True,
                  "installed_by": "kiln install", "host": "hostile corpus",
                  "files": ["bin/ember-cli", "lib/libember.bin"]}
        (top / ".ember-install.json").write_text(json.dumps(record, indent=2, sort_keys=True)
                                                 + "\n", encoding="utf-8")

    home = property(lambda self: self.tmp / "home")
    tmpdir = property(lambda self: self.tmp / "tmpdir")
    cwd = property(lambda self: self.tmp / "cwd")
    kiln_cache = property(lambda self: self.tmp / "kiln-cache")
    xdg_cache = property(lambda self: self.tmp / "xdg-cache")
    prefix = property(lambda self: self.tmp / "w" / "a" / "b" / "c" / "ember")

    def env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home),
                "LANG": "C.UTF-8", "KILN_CACHE_DIR": str(self.kiln_cache),
                "XDG_CACHE_HOME": str(self.xdg_cache), "TMPDIR": str(self.tmpdir)}

    def watched(self) -> dict[str, tuple[str, ...]]:
        return tree(self.tmp, skip=(self.kiln_cache, self.xdg_cache))

    def lock_files(self) -> set[str]:
        # kiln install's lock file beside the prefix is expected to stay.
        rel = os.path.relpath(self.prefix.parent, self.tmp)
        return {f"{rel}/.{self.prefix.name}.lock"}


def seed_trust(ws: Workspace, pubkey: str, version: int, origin: str) -> None:
    """The installers' record of the highest index version seen from the mirror ``origin``,
    as each keeps it: kiln install beside its download cache, install.sh in its cache
    directory."""
    slot = TrustStore.slot(pubkey, "mirror", origin)
    ws.kiln_cache.mkdir(parents=True, exist_ok=True)
    (ws.kiln_cache / "trust.json").write_text(json.dumps({slot: version}) + "\n",
                                              encoding="utf-8")
    sh = ws.xdg_cache / "ember-install" / "trust"
    sh.mkdir(parents=True, exist_ok=True)
    (sh / f"{TrustStore.key_id(pubkey)}-{origin_id(origin)}.mirror").write_text(
        f"{version}\n", encoding="utf-8")


def run_installer(consumer: str, case: Case, hostile: Hostile, server: HostileServer,
                  install_sh: Path, ws: Workspace) -> Run:
    assert case.mirror is not None
    mirror = hostile.builder.mirror(case)
    url = server.url + mirror.relative_to(hostile.builder.mirrors).as_posix() + "/"
    if case.mirror.template:
        url += "{tag}/"
    if consumer == KILN:
        argv = [sys.executable, "-m", "kiln", "install", "--from", url, "--pubkey",
                str(hostile.pubkey), "--prefix", str(ws.prefix), *case.mirror.args]
    else:
        shell = "/usr/bin/dash" if consumer == DASH else "/usr/bin/bash"
        if not Path(shell).exists():
            pytest.skip(f"{shell} is not installed")
        argv = [shell, str(install_sh), "--from", url, "--prefix", str(ws.prefix),
                *case.mirror.args]
    if case.mirror.trust_seen is not None:
        seed_trust(ws, hostile.pubkey.read_text(encoding="utf-8"), case.mirror.trust_seen,
                   url)
    rel = mirror.relative_to(hostile.builder.mirrors).as_posix()
    faults = {f"{rel}/{path}": fault for path, fault in case.mirror.faults}
    server.faults.update(faults)
    try:
        return run(argv, env=ws.env(), cwd=ws.cwd, timeout=150)
    finally:
        for k in faults:
            server.faults.pop(k, None)


RECORD = f".{PROJECT}-install.json"
RECORD_NAME = re.compile(r"\.[^/]+-install\.json")  # any project's install record


def installed_problems(consumer: str, case: Case, hostile: Hostile, r: Run,
                       ws: Workspace) -> list[str]:
    """A case that installs: exit 0 and the installer's message; the prefix holds the
    release's own tree (nothing written through a link the archive carried) and exactly one
    install record, the installer's, naming the release it installed."""
    problems = outcome_problems(dataclasses.replace(r, err=r.out + r.err),
                                case.expect_for(consumer))
    if r.code != 0:
        return problems
    honest = {m.name.split("/", 1)[1].rstrip("/"): m for m in honest_members(NEW)}
    honest.pop("", None)
    have = tree(ws.prefix)
    if set(have) != {*honest, RECORD}:
        problems.append(f"the prefix holds {sorted(set(have) - {*honest, RECORD})} beyond "
                        f"the release's tree and lacks {sorted({*honest, RECORD} - set(have))}")
    records = sorted(p.name for p in ws.prefix.iterdir() if RECORD_NAME.fullmatch(p.name))
    if records != [RECORD]:
        problems.append(f"the prefix holds the install records {records}, not {RECORD} alone")
    for rel, m in honest.items():
        p = ws.prefix / rel
        if m.name.endswith("/") or p.is_symlink() or not p.is_file():
            continue
        if p.read_bytes() != m.data:
            problems.append(f"{rel} is not the archive's (written through a link?)")
    path = ws.prefix / RECORD
    if path.is_symlink() or not path.is_file():
        problems.append(f"{RECORD} is not a plain file")
        return problems
    record = json.loads(path.read_text(encoding="utf-8"))
    mirror = hostile.builder.mirror(case)
    want = {"tag": NEW, "asset": asset_name(NEW), "entry_id": ENTRY, "date": DATE,
            "sha256": hashlib.sha256((mirror / NEW / asset_name(NEW)).read_bytes()).hexdigest(),
            "signed": True, "installed_by": "kiln install" if consumer == KILN else "install.sh"}
    wrong = {k: record.get(k) for k, v in want.items() if record.get(k) != v}
    if wrong:
        problems.append(f"{RECORD} lies: {wrong}")
    listed = [f for f in record.get("files", []) if RECORD_NAME.fullmatch(f)]
    if listed:
        problems.append(f"{RECORD} lists install records as installed files: {listed}")
    return problems


@pytest.mark.parametrize(("consumer", "name"), PARAMS)
def test_installer_refuses(consumer: str, name: str, hostile: Hostile,
                           server: HostileServer, install_sh: Path, tmp_path: Path,
                           record_property: pytest.RecordProperty) -> None:
    record_property("hostile", f"{consumer}:{name}")
    case = hostile.cases[name]
    ws = Workspace(tmp_path)
    prefix_before = tree(ws.prefix)
    before = ws.watched()
    r = run_installer(consumer, case, hostile, server, install_sh, ws)
    if case.installs(consumer):
        problems = installed_problems(consumer, case, hostile, r, ws)
    else:
        problems = outcome_problems(r, case.expect_for(consumer))
        if tree(ws.prefix) != prefix_before:
            problems.append("the b9 install changed: " + ", ".join(diff(prefix_before,
                                                                        tree(ws.prefix))[:8]))
    outside = [d for d in diff(before, ws.watched())
               if d.split(" ")[1] not in ws.lock_files()
               and not d.split(" ")[1].startswith(os.path.relpath(ws.prefix, tmp_path))]
    if outside:
        problems.append("written outside the prefix and caches: " + ", ".join(outside[:8]))
    bad = bad_cache_entries((ws.kiln_cache, ws.xdg_cache))
    if bad:
        problems.append("unverified cache entries: " + ", ".join(bad[:4]))
    marks = pwned((tmp_path, hostile.root), shallow=(REPO, Path.cwd()))
    if marks:
        problems.append("an injected command ran: " + ", ".join(marks))
    if any(hostile.sandbox.iterdir()):
        problems.append(f"written into {hostile.sandbox}: "
                        + ", ".join(p.name for p in hostile.sandbox.iterdir()))
    assert not problems, f"{consumer} {name}: " + report(problems, r)


@pytest.mark.parametrize("consumer", INSTALLERS)
def test_control_installs_an_honest_release(consumer: str, hostile: Hostile,
                                           server: HostileServer, install_sh: Path,
                                           tmp_path: Path) -> None:
    """The harness itself: an honest b10 on the same server replaces the b9 install."""
    ws = Workspace(tmp_path)
    r = run_installer(consumer, CONTROL, hostile, server, install_sh, ws)
    assert r.code == 0, report(["the honest release was not installed"], r)
    record = json.loads((ws.prefix / ".ember-install.json").read_text(encoding="utf-8"))
    assert record["tag"] == NEW
    assert record.get("date") == DATE, "the install record lacks the signed release date"
    assert (ws.prefix / "bin" / "ember-cli").read_bytes() == CLI_SCRIPT
    assert re.search(rf"installed ember {NEW} \({ENTRY}\)", r.out), r.out
    assert bad_cache_entries((ws.kiln_cache, ws.xdg_cache)) == []
    modes = {p.relative_to(ws.prefix).as_posix(): stat.S_IMODE(p.lstat().st_mode)
             for p in ws.prefix.rglob("*") if not p.is_symlink()}
    assert modes["bin/world-exec"] == 0o755 and modes["lib/world-writable.bin"] == 0o644, modes
    assert all(m in (0o755, 0o644) for m in modes.values()), modes
    owners = {p.lstat().st_uid for p in ws.prefix.rglob("*")} | {ws.prefix.stat().st_uid}
    assert owners == {os.getuid()}, owners


DOWNGRADE = Case(name="control-downgrade-b3", klass="control", consumers=INSTALLERS,
                 mirror=MirrorSpec(releases=(ReleaseSpec(tag="b3"),), latest=b"b3\n",
                                   args=("--tag", "latest", "--allow-downgrade")),
                 expect=expect(0, ""))
REINSTALL = Case(name="control-reinstall-b9", klass="control", consumers=INSTALLERS,
                 mirror=MirrorSpec(releases=(ReleaseSpec(tag=INSTALLED),),
                                   latest=INSTALLED.encode() + b"\n"),
                 expect=expect(0, ""))


@pytest.mark.parametrize("consumer", INSTALLERS)
@pytest.mark.parametrize("control", [DOWNGRADE, REINSTALL], ids=lambda c: c.name)
def test_control_downgrade_override_and_reinstall(consumer: str, control: Case,
                                                  hostile: Hostile, server: HostileServer,
                                                  install_sh: Path, tmp_path: Path) -> None:
    """What the downgrade rule still allows: an older release with --allow-downgrade, and
    the installed release again."""
    ws = Workspace(tmp_path)
    r = run_installer(consumer, control, hostile, server, install_sh, ws)
    assert r.code == 0, report([f"{control.name} was refused"], r)
    tag = control.mirror.releases[0].tag if control.mirror else ""
    record = json.loads((ws.prefix / ".ember-install.json").read_text(encoding="utf-8"))
    assert record["tag"] == tag
