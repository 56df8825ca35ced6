"""Authenticode signatures of the Windows binaries, with Debian's ``osslsigncode``.

Every ``.exe`` and ``.dll`` of a Windows entry's staged tree is signed (``sign_tree``) after
the tree is installed and before it is verified and packaged; the verifiers check each PE file
against the certificate (``verify_pe``).

Where the key comes from (``resolve_code_signing``), like the minisign release key
(``kiln.release.sign``):

- ``KILN_AUTHENTICODE_KEY`` (a PEM private key) and ``KILN_AUTHENTICODE_CERT`` (its PEM
  certificate, optionally followed by the intermediate certificates), both outside the
  repository. An encrypted key reads its password from ``KILN_AUTHENTICODE_PASSWORD``, which
  reaches osslsigncode on its standard input (``-readpass -``), never on its command line, so
  it appears in no log. ``KILN_AUTHENTICODE_TIMESTAMP_URL``, when set, adds an RFC 3161
  timestamp (``-ts``).
- Neither set: a throwaway self-signed code-signing certificate, made once with ``openssl``
  in kiln's cache and kept there, so that local builds are signed (and reproducible) too. The
  release notes say that it is a throwaway: Windows trusts it no more than an unsigned file.

Signing is deterministic: RSA PKCS#1 v1.5 signatures depend on the key and the data only,
and the signing time is pinned to ``SOURCE_DATE_EPOCH`` (``-time``), so the same tree signed
twice gives the same bytes. A timestamp from a server is not reproducible: with
``KILN_AUTHENTICODE_TIMESTAMP_URL`` set, two builds differ in the timestamp token.

The verification's record names the certificate (``signer_note``): its subject, its sha256
fingerprint and whether it is a throwaway, and the release notes read it back
(``signers_in``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kiln.errors import CommandFailed, ConfigError, IntegrityError
from kiln.files import install_once, is_within
from kiln.run import run

__all__ = [
    "CERT_ENV",
    "KEY_ENV",
    "PASSWORD_ENV",
    "PE_SUFFIXES",
    "THROWAWAY_SUBJECT",
    "TIMESTAMP_ENV",
    "CodeSigningKey",
    "PeSignature",
    "Signer",
    "cert_sha256",
    "pe_files",
    "resolve_code_signing",
    "sign_command",
    "sign_pe",
    "sign_tree",
    "signer_note",
    "signers_in",
    "throwaway_key",
    "tool_version",
    "verify_pe",
]

KEY_ENV = "KILN_AUTHENTICODE_KEY"
CERT_ENV = "KILN_AUTHENTICODE_CERT"
PASSWORD_ENV = "KILN_AUTHENTICODE_PASSWORD"
TIMESTAMP_ENV = "KILN_AUTHENTICODE_TIMESTAMP_URL"
PE_SUFFIXES = (".exe", ".dll")
# The throwaway certificate names the project it signs for: "/O=<name>/CN=<name> local build ...".
THROWAWAY_SUBJECT = "/O={project}/CN={project} local build (throwaway code-signing certificate)"
THROWAWAY_DIR_MARKER = "COMPLETE"
_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----",
                       re.DOTALL)


@dataclass(frozen=True, kw_only=True)
class CodeSigningKey:
    """A private key and its certificate, both PEM files."""

    key: Path
    cert: Path
    password: str | None = field(default=None, repr=False)
    timestamp_url: str | None = None
    throwaway: bool = False
    description: str  # the program name signed into each file (osslsigncode -n): the project

    @property
    def sha256(self) -> str:
        """The certificate's fingerprint (sha256 of its DER bytes, lowercase hex)."""
        return cert_sha256(self.cert)


@dataclass(frozen=True, kw_only=True)
class PeSignature:
    """What ``osslsigncode verify`` showed of a valid signature."""

    subject: str


@dataclass(frozen=True, kw_only=True)
class Signer:
    """A certificate as the verification record and the release notes name it."""

    subject: str
    sha256: str
    throwaway: bool


def cert_sha256(cert: Path) -> str:
    """sha256 of the first certificate of a PEM file (what ``openssl x509 -fingerprint
    -sha256`` prints, in lowercase hex without colons)."""
    try:
        text = cert.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"code-signing certificate {cert}: cannot read it: {exc}") from exc
    m = _PEM_CERT.search(text)
    if m is None:
        raise ConfigError(f"code-signing certificate {cert}: no PEM certificate in it",
                          hint="give a PEM file (-----BEGIN CERTIFICATE-----)")
    try:
        der = base64.b64decode("".join(m.group(1).split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"code-signing certificate {cert}: bad base64 in it") from exc
    return hashlib.sha256(der).hexdigest()


# --------------------------------------------------------------------------------------------
# Where the key comes from


def _pem_file(raw: str, what: str, variable: str, repo: Path) -> Path:
    path = Path(raw).expanduser()
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist or is not a file",
                          hint=f"check {variable}")
    if is_within(path, repo):
        raise ConfigError(f"{what} {path} is inside the repository {repo}",
                          hint="keep signing keys and certificates out of the checkout")
    return path


def resolve_code_signing(env: Mapping[str, str], *, repo: Path, local_dir: Path,
                         run_env: Mapping[str, str], project: str) -> CodeSigningKey:
    """The key ``project``'s Windows binaries are signed with: ``KILN_AUTHENTICODE_KEY`` and
    ``KILN_AUTHENTICODE_CERT`` when set (both), else the project's throwaway certificate kept
    in ``local_dir / project`` (made on first use, with ``openssl`` run in ``run_env``). The
    signatures carry the project's name as the program description."""
    key_raw, cert_raw = env.get(KEY_ENV), env.get(CERT_ENV)
    url = env.get(TIMESTAMP_ENV) or None
    if not key_raw and not cert_raw:
        local = throwaway_key(local_dir / project, env=run_env, project=project)
        return CodeSigningKey(key=local.key, cert=local.cert, timestamp_url=url, throwaway=True,
                              description=project)
    if not key_raw or not cert_raw:
        have, lack = (KEY_ENV, CERT_ENV) if key_raw else (CERT_ENV, KEY_ENV)
        raise ConfigError(f"{have} is set but {lack} is not",
                          hint="set both (a PEM private key and its PEM certificate), or "
                               "neither for a throwaway self-signed certificate")
    key = _pem_file(key_raw, "Authenticode key", KEY_ENV, repo)
    cert = _pem_file(cert_raw, "Authenticode certificate", CERT_ENV, repo)
    cert_sha256(cert)  # a readable PEM certificate, checked before any build starts
    try:
        encrypted = "ENCRYPTED" in key.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise ConfigError(f"Authenticode key {key}: cannot read it: {exc}") from exc
    password = env.get(PASSWORD_ENV) or None
    if encrypted and password is None:
        raise ConfigError(f"Authenticode key {key} is protected by a password",
                          hint=f"set {PASSWORD_ENV} to the key's password")
    return CodeSigningKey(key=key, cert=cert, password=password, timestamp_url=url,
                          description=project)


def throwaway_key(local_dir: Path, *, env: Mapping[str, str], project: str) -> CodeSigningKey:
    """``project``'s throwaway self-signed code-signing certificate under ``local_dir``, made
    once (under a lock) with ``openssl``: RSA 3072, SHA-256, extended key usage codeSigning,
    20 years."""

    def fill(tmp: Path) -> str:
        key, cert = tmp / "key.pem", tmp / "cert.pem"
        run(["openssl", "req", "-x509", "-newkey", "rsa:3072", "-sha256", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", "7300",
             "-subj", THROWAWAY_SUBJECT.format(project=project),
             "-addext", "basicConstraints=critical,CA:FALSE",
             "-addext", "keyUsage=critical,digitalSignature",
             "-addext", "extendedKeyUsage=codeSigning"],
            env=env, what="openssl req (throwaway code-signing certificate)")
        key.chmod(0o600)
        return "throwaway self-signed code-signing certificate made by kiln\n"

    local_dir.parent.mkdir(parents=True, exist_ok=True)
    dest = install_once(local_dir, lock=local_dir.parent / f".{local_dir.name}.lock",
                        fill=fill, marker=THROWAWAY_DIR_MARKER)
    return CodeSigningKey(key=dest / "key.pem", cert=dest / "cert.pem", throwaway=True,
                          description=project)


def tool_version(env: Mapping[str, str]) -> str:
    """``osslsigncode --version``'s first line (part of a Windows build's cache key)."""
    out = run(["osslsigncode", "--version"], env=env, what="osslsigncode --version").stdout
    return (out.strip().splitlines() or ["?"])[0]


# --------------------------------------------------------------------------------------------
# Signing


def pe_files(tree: Path) -> list[Path]:
    """The ``.exe`` and ``.dll`` files of ``tree`` (not links), sorted."""
    return sorted(p for p in tree.rglob("*")
                  if p.suffix.lower() in PE_SUFFIXES and p.is_file() and not p.is_symlink())


def sign_command(key: CodeSigningKey, src: Path, dst: Path, *, epoch: int) -> list[str]:
    """osslsigncode's command line: no secret on it (the password goes to standard input)."""
    argv = ["osslsigncode", "sign", "-certs", str(key.cert), "-key", str(key.key),
            "-h", "sha256", "-n", key.description, "-time", str(epoch)]
    if key.password is not None:
        argv += ["-readpass", "-"]
    if key.timestamp_url:
        argv += ["-ts", key.timestamp_url]
    return [*argv, "-in", str(src), "-out", str(dst)]


def sign_pe(path: Path, key: CodeSigningKey, *, epoch: int, env: Mapping[str, str],
            log_file: Path | None = None) -> None:
    """Sign one PE file in place (written beside it, then renamed over it)."""
    tmp = path.with_name(f".{path.name}.signed-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        run(sign_command(key, path, tmp, epoch=epoch), env=env, log_file=log_file,
            input_text=key.password, what=f"osslsigncode sign {path.name}")
    except CommandFailed as exc:
        tmp.unlink(missing_ok=True)
        if "bad password" in exc.output or "bad decrypt" in exc.output:
            raise ConfigError(f"osslsigncode sign {path.name}: wrong password for {key.key}",
                              hint=f"check {PASSWORD_ENV}") from None
        raise
    mode = path.stat().st_mode & 0o7777
    os.replace(tmp, path)
    path.chmod(mode)


def sign_tree(tree: Path, key: CodeSigningKey, *, epoch: int, env: Mapping[str, str],
              log_file: Path | None = None) -> tuple[str, ...]:
    """Sign every PE file of ``tree``; their paths relative to it."""
    signed = []
    for path in pe_files(tree):
        sign_pe(path, key, epoch=epoch, env=env, log_file=log_file)
        signed.append(path.relative_to(tree).as_posix())
    return tuple(signed)


# --------------------------------------------------------------------------------------------
# Verifying


def verify_pe(path: Path, cert: Path, *, env: Mapping[str, str]) -> PeSignature:
    """``osslsigncode verify`` against ``cert`` (the trust anchor); an ``IntegrityError`` that
    names the file when the signature is missing or does not verify."""
    done = run(["osslsigncode", "verify", "-CAfile", str(cert), "-ignore-cdp", "-in", str(path)],
               env=env, check=False, what=f"osslsigncode verify {path.name}")
    output = done.stdout + done.stderr
    if done.returncode != 0 or "Signature verification: ok" not in output:
        lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
        why = ("no signature" if any("No signature found" in ln for ln in lines)
               else "; ".join(ln for ln in lines if "MISMATCH" in ln or "ailed" in ln
                              or "rror" in ln)[:300] or (lines[-1] if lines else "no output"))
        raise IntegrityError(f"{path.name}: Authenticode signature missing or not valid for "
                             f"{cert.name}: {why}",
                             hint="the file was changed after signing, or signed with another "
                                  "certificate; build it again")
    subject = ""
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("Subject:"):
            subject = line.removeprefix("Subject:").strip()
            break
    return PeSignature(subject=subject)


# --------------------------------------------------------------------------------------------
# What the record and the release notes say


_NOTE = re.compile(r"Authenticode (throwaway self-signed )?certificate sha256 ([0-9a-f]{64}) "
                   r"subject (\"(?:[^\"\\]|\\.)*\")")


def signer_note(signer: Signer) -> str:
    """The signer in one phrase that ``signers_in`` reads back."""
    kind = "throwaway self-signed " if signer.throwaway else ""
    return (f"Authenticode {kind}certificate sha256 {signer.sha256} subject "
            f"{json.dumps(signer.subject, ensure_ascii=False)}")


def signers_in(text: str) -> tuple[Signer, ...]:
    """The signers ``signer_note`` wrote into ``text`` (a verification's detail), in order."""
    out: list[Signer] = []
    for m in _NOTE.finditer(text):
        try:
            subject = json.loads(m.group(3))
        except json.JSONDecodeError:
            continue
        signer = Signer(subject=str(subject), sha256=m.group(2), throwaway=bool(m.group(1)))
        if signer not in out:
            out.append(signer)
    return tuple(out)
