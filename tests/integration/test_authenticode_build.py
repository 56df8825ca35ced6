"""Authenticode signing for real: osslsigncode, openssl and zig.

- A tiny PE (an .exe and a .dll cross-compiled with ``zig cc -target x86_64-windows-gnu``, no
  C library, so no libc build is needed) signed with a throwaway certificate: twice gives the
  same bytes, it verifies, a flipped byte or no signature fails, and an encrypted key's
  password appears in no log.
- ``kiln build win-cpu-x64`` (in the snapshot and cache of tests/integration/test_build_e2e.py):
  every .exe and .dll of the archive verifies against the certificate the build used, the wine
  verification checked the signatures, and the archive's file set is the committed one below.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from test_build_e2e import WORK, _once_per_run, cache, kiln, snap

from kiln.build.toolchains import ToolchainPaths
from kiln.build.toolchains.zig import ZigToolchain
from kiln.errors import ConfigError, IntegrityError
from kiln.package import authenticode as ac

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("kiln-build")]
__all__ = ["cache", "snap"]  # fixtures shared with test_build_e2e

EPOCH = 1_767_225_600
PASSWORD = "not-on-any-command-line"
ENTRY = "win-cpu-x64"
# The files of the Windows CPU archive, on purpose: a file that appears or disappears between
# releases breaks the scripts and installers of people who unpack it. Change this list (and
# say so in the release notes) when the set changes on purpose.
EXPECTED_WINDOWS_MEMBERS = (
    "BUILD-INFO.json",
    "LICENSE",
    "bin/ember-bench.exe",
    "bin/ember-cli.exe",
    "bin/ember-server.exe",
    "bin/ember.dll",
    "include/ember.h",
    "lib/libember.dll.a",
    "lib/libember_static.a",
    "share/ember/LICENSE",
    "share/ember/licenses/cJSON.txt",
    "share/ember/licenses/civetweb.md",
)


def tool_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME":
            os.environ.get("HOME", "/")}


@pytest.fixture(scope="module")
def zig(cache: Path) -> Path:
    paths = ToolchainPaths(root=cache / "toolchains", zig_cache=cache / "zig")
    return ZigToolchain().install(paths, python=sys.executable, env=dict(os.environ)).executable


@pytest.fixture(scope="module")
def tiny(zig: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A console .exe and a .dll without a C library: nothing for zig to build but them."""
    d = tmp_path_factory.mktemp("tiny-pe")
    (d / "exe.c").write_text("int start(void) { return 0; }\n")
    (d / "dll.c").write_text(
        "int __stdcall entry(void *h, unsigned long why, void *r) "
        "{ (void)h; (void)why; (void)r; return 1; }\n"
        "__declspec(dllexport) int ember_tiny(int x) { return 3 * x + 1; }\n")
    env = {**tool_env(), "ZIG_GLOBAL_CACHE_DIR": str(d / "zig-cache"),
           "ZIG_LOCAL_CACHE_DIR": str(d / "zig-cache")}
    common = [str(zig), "cc", "-target", "x86_64-windows-gnu", "-O1", "-nostdlib"]
    subprocess.run([*common, "-Wl,--entry=start", "-Wl,--subsystem,console", "-o",
                    str(d / "tiny.exe"), str(d / "exe.c")], env=env, check=True)
    subprocess.run([*common, "-shared", "-Wl,--entry=entry", "-o", str(d / "tiny.dll"),
                    str(d / "dll.c")], env=env, check=True)
    return {"exe": d / "tiny.exe", "dll": d / "tiny.dll"}


@pytest.fixture(scope="module")
def throwaway(tmp_path_factory: pytest.TempPathFactory) -> ac.CodeSigningKey:
    return ac.throwaway_key(tmp_path_factory.mktemp("signing") / "authenticode", env=tool_env(),
                            project="ember")


def signed_copy(src: Path, dest_dir: Path, key: ac.CodeSigningKey, **kw: Any) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / src.name
    shutil.copy2(src, dest)
    ac.sign_pe(dest, key, epoch=EPOCH, env=tool_env(), **kw)
    return dest


@pytest.mark.parametrize("kind", ["exe", "dll"])
def test_signing_is_deterministic_and_verifies(tiny: dict[str, Path], kind: str,
                                               throwaway: ac.CodeSigningKey,
                                               tmp_path: Path) -> None:
    one = signed_copy(tiny[kind], tmp_path / "one", throwaway)
    two = signed_copy(tiny[kind], tmp_path / "two", throwaway)
    assert one.read_bytes() != tiny[kind].read_bytes()
    assert one.read_bytes() == two.read_bytes()  # same key, data and time: same bytes
    seen = ac.verify_pe(one, throwaway.cert, env=tool_env())
    assert "throwaway" in seen.subject


def test_a_changed_byte_or_no_signature_fails(tiny: dict[str, Path],
                                              throwaway: ac.CodeSigningKey,
                                              tmp_path: Path) -> None:
    good = signed_copy(tiny["exe"], tmp_path, throwaway)
    data = bytearray(good.read_bytes())
    data[0x200] ^= 0xFF  # inside the first section, covered by the signature's digest
    bad = tmp_path / "flipped.exe"
    bad.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"^flipped\.exe: .*MISMATCH"):
        ac.verify_pe(bad, throwaway.cert, env=tool_env())
    with pytest.raises(IntegrityError, match=r"^tiny\.dll: .*no signature"):
        ac.verify_pe(tiny["dll"], throwaway.cert, env=tool_env())


def test_another_certificate_does_not_verify(tiny: dict[str, Path],
                                             throwaway: ac.CodeSigningKey,
                                             tmp_path: Path) -> None:
    other = ac.throwaway_key(tmp_path / "other", env=tool_env(), project="ember")
    signed = signed_copy(tiny["dll"], tmp_path / "s", throwaway)
    with pytest.raises(IntegrityError, match=r"^tiny\.dll: "):
        ac.verify_pe(signed, other.cert, env=tool_env())


def test_an_encrypted_key_password_stays_out_of_logs(tiny: dict[str, Path],
                                                     throwaway: ac.CodeSigningKey,
                                                     tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    encrypted = tmp_path / "keys" / "enc.pem"
    encrypted.parent.mkdir()
    # the password reaches openssl through its environment here, never a command line
    subprocess.run(["openssl", "pkey", "-in", str(throwaway.key), "-aes256", "-passout",
                    "env:KILN_TEST_PASS", "-out", str(encrypted)],
                   env={**tool_env(), "KILN_TEST_PASS": PASSWORD}, check=True)
    env = {ac.KEY_ENV: str(encrypted), ac.CERT_ENV: str(throwaway.cert),
           ac.PASSWORD_ENV: PASSWORD}
    key = ac.resolve_code_signing(env, repo=WORK / "repo", local_dir=tmp_path / "unused",
                                  run_env=tool_env(), project="ember")
    log = tmp_path / "sign.log"
    caplog.set_level(logging.INFO, logger="kiln.run")
    signed = signed_copy(tiny["exe"], tmp_path / "s", key, log_file=log)
    plain = signed_copy(tiny["exe"], tmp_path / "p", throwaway)
    assert signed.read_bytes() == plain.read_bytes()  # the same key, decrypted
    logged = log.read_text() + caplog.text
    assert "osslsigncode sign" in logged and "-readpass -" in logged
    assert PASSWORD not in logged
    wrong = {**env, ac.PASSWORD_ENV: "wrong"}
    key = ac.resolve_code_signing(wrong, repo=WORK / "repo", local_dir=tmp_path / "unused",
                                  run_env=tool_env(), project="ember")
    with pytest.raises(ConfigError, match="wrong password"):
        signed_copy(tiny["exe"], tmp_path / "w", key, log_file=log)
    assert PASSWORD not in log.read_text()


# --------------------------------------------------------------------------------------------
# the build


def _forget_verifications(cache: Path, entry_id: str) -> None:
    """Drop the cached verification results of ``entry_id``'s builds (not the builds), so
    that the run below verifies again and its log holds every signature check: a warm cache
    (another test built the same entry, or an earlier run) would otherwise serve the report."""
    for meta in (cache / "builds").glob("*/meta.json"):
        try:
            entry = json.loads(meta.read_text(encoding="utf-8")).get("entry")
        except (OSError, ValueError):
            continue
        if entry == entry_id:
            for result in (meta.parent / "verify").glob("*.json"):
                result.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def windows_build(snap: Path, cache: Path) -> dict[str, Any]:
    out = WORK / "out-authenticode"
    saved = WORK / "authenticode.json"
    with _once_per_run("authenticode") as todo:
        if todo:
            shutil.rmtree(out, ignore_errors=True)
            _forget_verifications(cache, ENTRY)
            env = {k: "" for k in (ac.KEY_ENV, ac.CERT_ENV, ac.TIMESTAMP_ENV)}
            done = kiln([ENTRY, "--out", str(out), "--json", "--build-number", "3"], snap,
                        cache, env=env)
            assert done.returncode == 0, done.stdout + done.stderr
            saved.write_text(done.stdout)
    data: dict[str, Any] = json.loads(saved.read_text())
    (result,) = data["results"]
    return {"out": out, "result": result, "cert": cache / "authenticode" / "ember" / "cert.pem"}


def test_every_pe_file_of_the_archive_verifies(windows_build: dict[str, Any],
                                               tmp_path: Path) -> None:
    archive = Path(windows_build["result"]["asset"])
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp_path)
    pe = ac.pe_files(tmp_path)
    assert {p.name for p in pe} == {"ember-cli.exe", "ember-bench.exe", "ember-server.exe",
                                    "ember.dll"}
    for path in pe:
        done = subprocess.run(["osslsigncode", "verify", "-CAfile", str(windows_build["cert"]),
                               "-ignore-cdp", "-in", str(path)], capture_output=True,
                              text=True, check=False)
        assert done.returncode == 0 and "Signature verification: ok" in done.stdout, (
            path.name, done.stdout + done.stderr)


def test_the_wine_verification_checked_the_signatures(windows_build: dict[str, Any]) -> None:
    result = windows_build["result"]
    verification = result["verification"]
    assert verification["method"] == "wine" and verification["ok"]
    detail = verification["detail"]
    assert "4 PE files Authenticode-signed" in detail
    assert "ran under wine: 16 ids identical to the host build's" in detail
    (signer,) = ac.signers_in(detail)
    assert signer.throwaway and signer.sha256 == ac.cert_sha256(windows_build["cert"])
    log = Path(result["log"]).read_text()
    for name in ("ember-cli.exe", "ember-bench.exe", "ember-server.exe", "ember.dll"):
        assert f"inspect ok   bin/{name}: authenticode: verifies" in log


def test_the_windows_archive_holds_the_committed_file_set(
        windows_build: dict[str, Any]) -> None:
    archive = Path(windows_build["result"]["asset"])
    top = archive.name.removesuffix(".zip") + "/"
    with zipfile.ZipFile(archive) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
    assert all(n.startswith(top) for n in names)
    assert tuple(sorted(n.removeprefix(top) for n in names)) == EXPECTED_WINDOWS_MEMBERS
