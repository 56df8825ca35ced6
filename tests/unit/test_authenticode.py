"""kiln/package/authenticode.py without starting a program: where the key comes from, the
osslsigncode command lines (no secret on them, none in the log), how ``osslsigncode verify``'s
answers are read, the signer phrase the record carries and the line the release notes print.
The real signing of a real PE file is in tests/integration/test_authenticode_build.py."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from test_release import CI_ONLY, COMMIT, local_assets

import kiln.package.authenticode as ac
import kiln.run
from kiln.errors import ConfigError, IntegrityError
from kiln.matrix import load_matrix
from kiln.release.assemble import gate, release_manifest
from kiln.release.manifest import ReleaseManifest
from kiln.release.notes import notes_context, render_notes
from kiln.run import Completed

REPO = Path(__file__).resolve().parents[2]
DER = b"0\x82fake certificate bytes"
PASSWORD = "correct horse battery staple"


def pem(path: Path, der: bytes = DER) -> Path:
    body = base64.encodebytes(der).decode()
    path.write_text(f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n")
    return path


def key_file(path: Path, *, encrypted: bool = False) -> Path:
    kind = "ENCRYPTED PRIVATE KEY" if encrypted else "PRIVATE KEY"
    path.write_text(f"-----BEGIN {kind}-----\nAAAA\n-----END {kind}-----\n")
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    d.mkdir()
    return d


def configured(outside: Path, **env: str) -> dict[str, str]:
    return {ac.KEY_ENV: str(key_file(outside / "k.pem")),
            ac.CERT_ENV: str(pem(outside / "c.pem")), **env}


# --------------------------------------------------------------------------------------------
# where the key comes from


def test_a_configured_key_and_certificate(outside: Path, tmp_path: Path) -> None:
    env = configured(outside, **{ac.TIMESTAMP_ENV: "http://timestamp.example"})
    key = ac.resolve_code_signing(env, repo=REPO, local_dir=tmp_path / "local", run_env={},
                                  project="ember")
    assert key.key == outside / "k.pem" and key.cert == outside / "c.pem"
    assert not key.throwaway and key.password is None
    assert key.timestamp_url == "http://timestamp.example"
    assert key.sha256 == hashlib.sha256(DER).hexdigest()
    assert not (tmp_path / "local").exists()  # no throwaway made


def test_half_a_configuration_is_refused(outside: Path, tmp_path: Path) -> None:
    env = configured(outside)
    for missing in (ac.KEY_ENV, ac.CERT_ENV):
        half = {k: v for k, v in env.items() if k != missing}
        with pytest.raises(ConfigError, match=f"{missing} is not"):
            ac.resolve_code_signing(half, repo=REPO, local_dir=tmp_path / "l", run_env={},
                                  project="ember")


def test_keys_inside_the_repository_are_refused(tmp_path: Path, outside: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {ac.KEY_ENV: str(key_file(repo / "k.pem")), ac.CERT_ENV: str(pem(outside / "c.pem"))}
    with pytest.raises(ConfigError, match="inside the repository"):
        ac.resolve_code_signing(env, repo=repo, local_dir=tmp_path / "l", run_env={},
                                  project="ember")


def test_an_encrypted_key_needs_its_password(outside: Path, tmp_path: Path) -> None:
    env = {ac.KEY_ENV: str(key_file(outside / "k.pem", encrypted=True)),
           ac.CERT_ENV: str(pem(outside / "c.pem"))}
    with pytest.raises(ConfigError, match="protected by a password") as err:
        ac.resolve_code_signing(env, repo=REPO, local_dir=tmp_path / "l", run_env={},
                                  project="ember")
    assert ac.PASSWORD_ENV in (err.value.hint or "")
    key = ac.resolve_code_signing({**env, ac.PASSWORD_ENV: PASSWORD}, repo=REPO,
                                  local_dir=tmp_path / "l", run_env={},
                                  project="ember")
    assert key.password == PASSWORD and PASSWORD not in repr(key)


def test_not_a_certificate(outside: Path) -> None:
    (outside / "c.pem").write_text("hello\n")
    with pytest.raises(ConfigError, match="no PEM certificate"):
        ac.cert_sha256(outside / "c.pem")


def test_without_configuration_a_throwaway_is_made_once(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[tuple[str, ...]] = []

    def fake_openssl(argv: Sequence[str], **kw: Any) -> Completed:
        args = tuple(str(a) for a in argv)
        made.append(args)
        key = Path(args[args.index("-keyout") + 1])
        key_file(key)
        pem(Path(args[args.index("-out") + 1]))
        return Completed(argv=args, returncode=0, stdout="", stderr="")

    monkeypatch.setattr(ac, "run", fake_openssl)
    local = tmp_path / "cache" / "authenticode"
    first = ac.resolve_code_signing({}, repo=REPO, local_dir=local, run_env={},
                                  project="ember")
    again = ac.resolve_code_signing({}, repo=REPO, local_dir=local, run_env={},
                                  project="ember")
    assert len(made) == 1 and first == again and first.throwaway
    assert first.cert == local / "ember" / "cert.pem"
    assert (first.key.stat().st_mode & 0o777) == 0o600
    assert "extendedKeyUsage=codeSigning" in made[0]
    subject = made[0][made[0].index("-subj") + 1]
    assert "throwaway" in subject and subject.startswith("/O=ember/CN=ember local build")
    # another project gets its own certificate, in its own directory, naming it
    other = ac.resolve_code_signing({}, repo=REPO, local_dir=local, run_env={}, project="llama")
    assert len(made) == 2 and other.cert == local / "llama" / "cert.pem"
    assert other.description == "llama"
    assert made[1][made[1].index("-subj") + 1].startswith("/O=llama/CN=llama local build")


# --------------------------------------------------------------------------------------------
# signing


def test_the_sign_command(tmp_path: Path) -> None:
    key = ac.CodeSigningKey(key=Path("k.pem"), cert=Path("c.pem"), password=PASSWORD,
                            description="ember")
    argv = ac.sign_command(key, Path("a.exe"), Path("b.exe"), epoch=1_700_000_000)
    assert argv[argv.index("-n") + 1] == "ember"  # the project's name is the description
    assert argv[:2] == ["osslsigncode", "sign"]
    assert argv[argv.index("-time") + 1] == "1700000000"  # the signing time is pinned
    assert argv[argv.index("-h") + 1] == "sha256"
    assert argv[argv.index("-readpass") + 1] == "-"  # the password comes on standard input
    assert PASSWORD not in " ".join(argv) and "-pass" not in argv
    assert "-ts" not in argv  # no timestamp server unless one is configured
    with_ts = ac.sign_command(dataclasses.replace(key, timestamp_url="http://ts.example"),
                              Path("a.exe"), Path("b.exe"), epoch=1)
    assert with_ts[with_ts.index("-ts") + 1] == "http://ts.example"
    no_password = ac.sign_command(dataclasses.replace(key, password=None), Path("a.exe"),
                                  Path("b.exe"), epoch=1)
    assert "-readpass" not in no_password


class FakeSubprocess:
    """Stands in for subprocess.run under kiln.run.run: writes the signed file."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, args: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append({"args": list(args), **kw})
        src = Path(args[args.index("-in") + 1])
        Path(args[args.index("-out") + 1]).write_bytes(src.read_bytes() + b"SIGNATURE")
        if kw.get("stdout") is not None:
            kw["stdout"].write("Succeeded\n")
        return subprocess.CompletedProcess(args, 0, "", "")


def test_the_password_never_reaches_a_command_line_or_a_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeSubprocess()
    monkeypatch.setattr(kiln.run.subprocess, "run", fake)
    tree = tmp_path / "stage"
    (tree / "bin").mkdir(parents=True)
    for name in ("ember-cli.exe", "EMBER.DLL", "ember.h", "libember.dll.a"):
        (tree / "bin" / name).write_bytes(b"MZ" + name.encode())
    (tree / "bin" / "ember-cli.exe").chmod(0o755)
    key = ac.CodeSigningKey(key=tmp_path / "k.pem", cert=tmp_path / "c.pem", password=PASSWORD,
                            description="ember")
    log = tmp_path / "entry.log"
    caplog.set_level(logging.INFO, logger="kiln.run")
    signed = ac.sign_tree(tree, key, epoch=1_700_000_000, env={"PATH": "/usr/bin"},
                          log_file=log)
    assert signed == ("bin/EMBER.DLL", "bin/ember-cli.exe")
    assert [c["input"] for c in fake.calls] == [PASSWORD, PASSWORD]
    assert all(PASSWORD not in " ".join(c["args"]) for c in fake.calls)
    assert all(PASSWORD not in str(c["env"]) for c in fake.calls)
    logged = log.read_text() + caplog.text
    assert "+ osslsigncode sign" in logged and PASSWORD not in logged
    # signed in place, mode kept, nothing left beside
    assert (tree / "bin" / "ember-cli.exe").read_bytes() == b"MZember-cli.exeSIGNATURE"
    assert (tree / "bin" / "ember-cli.exe").stat().st_mode & 0o777 == 0o755
    assert (tree / "bin" / "ember.h").read_bytes() == b"MZember.h"
    assert sorted(p.name for p in (tree / "bin").iterdir()) == [
        "EMBER.DLL", "ember-cli.exe", "ember.h", "libember.dll.a"]


# --------------------------------------------------------------------------------------------
# verifying: what osslsigncode verify answers

GOOD = """Signature Index: 0  (Primary Signature)
Signer's certificate:
\tSigner #0:
\t\tSubject: /O=ember/CN=ember local build (throwaway code-signing certificate)
\t\tIssuer : /O=ember/CN=ember local build (throwaway code-signing certificate)
Signature verification: ok

Number of verified signatures: 1
Succeeded
"""
MISMATCH = """Current message digest    : DF9E
Calculated message digest : 61AA     MISMATCH!!!
Number of verified signatures: 1
Failed
"""
UNSIGNED = "Calculated PE checksum: 0003A41A\nNo signature found\nFailed\n"


def fake_verify(monkeypatch: pytest.MonkeyPatch, stdout: str, rc: int) -> list[list[str]]:
    seen: list[list[str]] = []

    def run(argv: Sequence[str], *, env: Mapping[str, str], check: bool = True,
            what: str = "", **kw: Any) -> Completed:
        seen.append([str(a) for a in argv])
        assert not check
        return Completed(argv=tuple(seen[-1]), returncode=rc, stdout=stdout, stderr="")

    monkeypatch.setattr(ac, "run", run)
    return seen


def test_verify_reads_the_signer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen = fake_verify(monkeypatch, GOOD, 0)
    got = ac.verify_pe(tmp_path / "ember.dll", tmp_path / "c.pem", env={})
    assert got.subject == "/O=ember/CN=ember local build (throwaway code-signing certificate)"
    argv = seen[0]
    assert argv[:2] == ["osslsigncode", "verify"]
    assert argv[argv.index("-CAfile") + 1] == str(tmp_path / "c.pem")


@pytest.mark.parametrize(("stdout", "rc", "why"), [
    (MISMATCH, 1, "MISMATCH"),
    (UNSIGNED, 1, "no signature"),
    (MISMATCH, 0, "MISMATCH"),  # whatever the exit status: no "verification: ok", no pass
])
def test_verify_failures_name_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                       stdout: str, rc: int, why: str) -> None:
    fake_verify(monkeypatch, stdout, rc)
    with pytest.raises(IntegrityError, match=why) as err:
        ac.verify_pe(tmp_path / "ember-cli.exe", tmp_path / "c.pem", env={})
    assert err.value.message.startswith("ember-cli.exe: ")


# --------------------------------------------------------------------------------------------
# the record and the release notes


def test_signer_phrase_round_trip() -> None:
    odd = ac.Signer(subject='/CN=a "quoted"; name, with commas', sha256="ab" * 32,
                    throwaway=False)
    tw = ac.Signer(subject="/CN=x", sha256="cd" * 32, throwaway=True)
    detail = (f"inspect: 3 binaries, verifies: {ac.signer_note(odd)}; "
              f"{ac.signer_note(tw)}; {ac.signer_note(odd)}; ran under wine: ok")
    assert ac.signers_in(detail) == (odd, tw)
    assert ac.signers_in("inspect: 3 binaries") == ()


def windows_signed(manifest: ReleaseManifest, signer: ac.Signer) -> ReleaseManifest:
    assets = []
    for a in manifest.assets:
        if a.record.os == "windows":
            v = dataclasses.replace(a.record.verification, detail=(
                f"inspect: 3 binaries, 3 PE files Authenticode-signed "
                f"({ac.signer_note(signer)})"))
            a = dataclasses.replace(a, record=dataclasses.replace(a.record, verification=v))
        assets.append(a)
    return dataclasses.replace(manifest, assets=tuple(assets))


def test_the_notes_say_how_the_windows_binaries_are_signed(tmp_path: Path) -> None:
    matrix = load_matrix(REPO / "matrix")
    result = gate(matrix, local_assets(tmp_path, matrix), build_number=42, commit=COMMIT,
                  allow_missing=frozenset(CI_ONLY))
    manifest = release_manifest(result, project="ember", tag="b42", build_number=42,
                                commit=COMMIT, commit_epoch=1_700_000_000,
                                base_url="https://example.invalid/b42")
    files = {"sums": "SHA256SUMS", "signature": "SHA256SUMS.minisig",
             "public_key": "minisign.pub", "manifest": "manifest.json", "sbom": "sbom.json"}

    def render(m: ReleaseManifest) -> str:
        ctx = notes_context(m, repo_url="https://github.com/ember-ml/ember", changes=[],
                            previous=None, public_key="untrusted comment: x\nRWTkey\n",
                            file_names=files)
        return render_notes(REPO / "release_notes", ctx)

    throwaway = ac.Signer(subject="/O=ember/CN=local", sha256="ab" * 32, throwaway=True)
    text = render(windows_signed(manifest, throwaway))
    line = next(ln for ln in text.splitlines() if "Authenticode" in ln)
    assert "throwaway self-signed certificate" in line
    assert "`/O=ember/CN=local`" in line and f"`{'ab' * 32}`" in line
    assert "Not Authenticode-signed" not in text
    real = ac.Signer(subject="/CN=Ember Project", sha256="cd" * 32, throwaway=False)
    text = render(windows_signed(manifest, real))
    line = next(ln for ln in text.splitlines() if "Authenticode" in ln)
    assert "throwaway" not in line and "`/CN=Ember Project`" in line
    # records without a signature (older builds) are named, not passed over
    assert "Not Authenticode-signed: `ember-b42-bin-win" in render(manifest)
