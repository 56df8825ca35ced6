"""``install.sh`` on the recorded machines of tests/unit/fixtures/hosts: the same choice and
the same fallbacks, in the same order, as ``kiln.install.installer.rank``.

Each profile becomes a directory standing in for ``/`` (``EMBER_INSTALL_SYSROOT``) and stub
programs for the tools it records; ``PATH`` holds only those stubs and an allow-list of basic
utilities, so the script also proves it needs nothing else. Windows profiles are install.ps1's
(pwsh is not available here to run it).
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from ember_project import render

from kiln.install.host import load_profile, probe
from kiln.install.installer import rank
from kiln.matrix import load_matrix
from kiln.package.records import AssetRecord, Tool, Verification
from kiln.release.assemble import disabled_builds
from kiln.release.index import matrix_index
from kiln.release.manifest import ReleaseAsset, ReleaseManifest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HOSTS = REPO / "tests" / "unit" / "fixtures" / "hosts"
PROFILES = sorted(p.stem for p in HOSTS.glob("*.yaml")
                  if load_profile(p).system_name != "Windows")
# What install.sh may use besides its own builtins: POSIX utilities (and mktemp).
UTILITIES = ("awk", "sed", "grep", "cat", "head", "tail", "tr", "sort", "cut", "mkdir", "rm",
             "mv", "cp", "ls", "mktemp", "dirname", "basename", "sleep", "sha256sum", "tar",
             "env")
# A throwaway minisign public key: the profiles run with --insecure-skip-signature.
PUBKEY = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3"


def matrix_manifest(tag: str = "b42") -> ReleaseManifest:
    matrix = load_matrix(REPO / "matrix")
    assets = []
    for e in matrix.enabled:
        name = f"ember-{tag}-bin-{e.id}.{e.archive}"
        record = AssetRecord(
            name=name, kind="archive", entry_id=e.id, os=e.os, arch=e.arch,
            backend=e.backend, backend_version=e.backend_version, libc=e.libc,
            libc_floor=e.libc_floor, min_os=e.min_os, cpu_baseline=e.cpu_baseline,
            cpu_dispatch=e.cpu_dispatch, gpu_targets=e.gpu_targets, min_driver=e.min_driver,
            build_number=int(tag[1:]), commit="0" * 40, size=1000, sha256="0" * 64,
            unpacked_size=4000,
            toolchain=(Tool(name="zig", version="0.17.1"),),
            verification=Verification(method=e.verify, ok=True, detail="ok"))
        assets.append(ReleaseAsset(record=record, url=name))
    return ReleaseManifest(project="ember", tag=tag, build_number=int(tag[1:]),
                           commit="0" * 40, date="2026-01-01T00:00:00Z", base_url="",
                           assets=tuple(assets), missing=(),
                           disabled=disabled_builds(matrix))


def placement(manifest: ReleaseManifest) -> dict[str, tuple[str | None, str]]:
    """Entry id -> (distribution, scope), as the release index records them."""
    index = matrix_index(manifest, load_matrix(REPO / "matrix"))
    return {a.record.entry_id: (a.distro, a.scope) for a in index.releases[0].assets}


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, ReleaseManifest]:
    if shutil.which("dash") is None and shutil.which("sh") is None:
        pytest.skip("no POSIX sh")
    root = tmp_path_factory.mktemp("sh-profiles")
    manifest = matrix_manifest()
    rel = root / "b42"
    rel.mkdir()
    index = matrix_index(manifest, load_matrix(REPO / "matrix")).text()
    (rel / "index.json").write_text(index, encoding="utf-8")
    digest = hashlib.sha256(index.encode()).hexdigest()
    (rel / "SHA256SUMS").write_text("".join(f"{'0' * 64}  {a.record.name}\n"
                                            for a in manifest.assets)
                                    + f"{digest}  index.json\n", encoding="utf-8")
    script = root / "install.sh"
    script.write_text(render(manifest, PUBKEY, str(root) + "/",
                             placement=placement(manifest))["install.sh"], encoding="utf-8")
    return root, script, manifest


def _stub(path: Path, cases: dict[str, tuple[int, str, str]]) -> None:
    """A program that answers the recorded argument lists, and fails on any other."""
    lines = ["#!/bin/sh", 'case "$*" in']
    for args, (rc, out, err) in cases.items():
        lines.append(f"  {shlex.quote(args)})")
        if out:
            lines.append(f"    printf '%s' {shlex.quote(out)}")
        if err:
            lines.append(f"    printf '%s' {shlex.quote(err)} >&2")
        lines.append(f"    exit {rc} ;;")
    lines += ["esac", "exit 1", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    path.chmod(0o755)


def machine(profile: str, where: Path) -> tuple[Path, dict[str, str]]:
    """The profile as a sysroot, stub programs and an environment."""
    src = load_profile(HOSTS / f"{profile}.yaml")
    sysroot, stubs, tools = where / "root", where / "stubs", where / "tools"
    for d in (sysroot, stubs, tools):
        d.mkdir(parents=True)
    for name, text in src.files.items():
        path = sysroot / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    programs: dict[str, dict[str, tuple[int, str, str]]] = {}
    for command, out in src.commands.items():
        program, _, args = command.partition(" ")
        programs.setdefault(program, {})[args] = (out.rc, out.stdout, out.stderr)
    uname_o = "Android" if src.env("TERMUX_VERSION") else "GNU/Linux"
    programs["uname"] = {"-s": (0, src.system_name + "\n", ""),
                         "-m": (0, src.machine_name + "\n", ""), "-o": (0, uname_o + "\n", "")}
    for program, cases in programs.items():
        target = sysroot / program.lstrip("/") if program.startswith("/") else stubs / program
        _stub(target, cases)
    for tool in UTILITIES:
        found = shutil.which(tool)
        if found:
            (tools / tool).symlink_to(found)
    env = {"PATH": f"{stubs}:{tools}", "HOME": str(where / "home"), "TMPDIR": str(where),
           "EMBER_INSTALL_SYSROOT": str(sysroot), "LANG": "C",
           **{k: v for k, v in src.environ.items()}}
    (where / "home").mkdir()
    return sysroot, env


@pytest.mark.parametrize("profile", PROFILES)
def test_install_sh_ranks_like_kiln(release: tuple[Path, Path, ReleaseManifest],
                                    tmp_path: Path, profile: str) -> None:
    root, script, manifest = release
    _sysroot, env = machine(profile, tmp_path)
    # The stubbed wsl nvidia-smi lives in the sysroot; the script looks for it there.
    shell = shutil.which("dash") or shutil.which("sh") or "sh"
    done = subprocess.run([shell, str(script), "--from", str(root) + "/", "--tag", "b42",
                           "--dry-run", "--insecure-skip-signature"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    want = rank(manifest, probe(load_profile(HOSTS / f"{profile}.yaml")),
                placement=placement(manifest))
    text = done.stdout + done.stderr
    got = re.findall(r"^(?:choice|fallback): ([a-z0-9.-]+):", done.stdout, re.M)
    assert got == [c.entry_id for c in want.candidates], text
    if want.chosen is None:
        assert done.returncode == 11, text
        assert "no build of b42 runs on this machine" in done.stderr
    else:
        assert done.returncode == 0, text
    # Reasons for the rejected builds of this platform match kiln's wording where they can.
    for r in want.rejected:
        if r.kind == "unfit" and r.reason.startswith(("needs glibc", "driver ")):
            assert f"not usable: {r.entry_id}: {r.reason}" in done.stdout, text


def test_install_sh_uses_only_allowed_programs() -> None:
    text = (REPO / "kiln" / "release" / "templates" / "install.sh.j2").read_text(encoding="utf-8")
    assert "bash" not in text.splitlines()[0]
    # no bash: [[ ]], function, local, ${var//x/y}
    assert not re.search(r"\[\[ |\bfunction |\blocal |\$\{[A-Za-z_]+//", text)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_install_sh_passes_shellcheck(release: tuple[Path, Path, ReleaseManifest]) -> None:
    _root, script, _m = release
    done = subprocess.run(["shellcheck", "-s", "sh", str(script)], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stdout


def test_install_sh_parses_in_every_available_shell(
        release: tuple[Path, Path, ReleaseManifest]) -> None:
    _root, script, _m = release
    shells = [s for s in ("dash", "sh", "bash", "busybox", "mksh", "zsh") if shutil.which(s)]
    for s in shells:
        argv = [s, "sh", "-n", str(script)] if s == "busybox" else [s, "-n", str(script)]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{s}: {done.stderr}"
    assert os.access(script, os.R_OK)
