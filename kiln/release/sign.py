"""Sign ``SHA256SUMS`` with minisign (Debian's ``minisign`` program, through ``kiln.run``).

minisign rather than GPG: one small key file, Ed25519 signatures that are deterministic (the
same file signed twice gives the same bytes, which keeps releases reproducible), and a
verifier that users install in one line. The secret key comes from ``--signing-key FILE`` or
``KILN_SIGNING_KEY`` and must live outside the repository; a password-protected key reads its
password from ``KILN_SIGNING_PASSWORD``, handed to minisign on its standard input, never on
its command line, so it appears in no log. Secrets are removed from the environment that
minisign (and any other program kiln starts) sees.

The public key shipped in the release (``minisign.pub``) is recreated from the secret key
(``minisign -R``), so the two cannot disagree.
"""

from __future__ import annotations

import base64
import binascii
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kiln.errors import CommandFailed, ConfigError, IntegrityError
from kiln.files import is_within
from kiln.run import run

__all__ = [
    "KEY_ENV",
    "PASSWORD_ENV",
    "SECRET_ENV",
    "MinisignSigner",
    "SigningKey",
    "key_is_encrypted",
    "resolve_key",
    "scrub_env",
    "verify_signature",
]

KEY_ENV = "KILN_SIGNING_KEY"
PASSWORD_ENV = "KILN_SIGNING_PASSWORD"
# Variables that hold secrets: never passed on to programs kiln starts.
SECRET_ENV = (PASSWORD_ENV, "GITHUB_TOKEN", "GH_TOKEN", "KILN_SIGNING_KEY_TEXT")


def scrub_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the variables that hold secrets."""
    return {k: v for k, v in env.items() if k not in SECRET_ENV}


@dataclass(frozen=True, kw_only=True)
class SigningKey:
    path: Path
    password: str | None = field(default=None, repr=False)


def key_is_encrypted(text: str, *, source: str) -> bool:
    """Whether a minisign secret key file is protected by a password.

    The key's second line is base64 of: signature algorithm (2 bytes, ``Ed``), KDF algorithm
    (2 bytes: ``Sc`` for scrypt, zeros for none), then the rest. Reading those four bytes lets
    kiln ask for ``KILN_SIGNING_PASSWORD`` up front instead of minisign waiting for a terminal.
    """
    lines = text.splitlines()
    try:
        blob = base64.b64decode(lines[1].strip(), validate=True)
    except (IndexError, binascii.Error, ValueError) as exc:
        raise ConfigError(f"{source}: not a minisign secret key",
                          hint="create one with `minisign -G -s FILE -p FILE.pub`") from exc
    if len(blob) < 4 or blob[:2] != b"Ed":
        raise ConfigError(f"{source}: not a minisign secret key (unknown algorithm)",
                          hint="create one with `minisign -G -s FILE -p FILE.pub`")
    if blob[2:4] == b"Sc":
        return True
    if blob[2:4] == b"\x00\x00":
        return False
    raise ConfigError(f"{source}: minisign secret key with an unknown key derivation")


def resolve_key(option: str | None, env: Mapping[str, str], *, repo: Path) -> SigningKey:
    """The signing key from ``--signing-key`` or ``KILN_SIGNING_KEY``, checked before any
    work starts: it exists, it is not inside the repository, and its password is at hand."""
    raw = option or env.get(KEY_ENV)
    if not raw:
        raise ConfigError("no signing key: a release is signed with minisign",
                          hint=f"pass --signing-key FILE or set {KEY_ENV}=FILE (a key made "
                               "with `minisign -G`, kept outside the repository)")
    path = Path(raw).expanduser()
    if not path.is_file():
        raise ConfigError(f"signing key {path} does not exist or is not a file",
                          hint=f"check --signing-key / {KEY_ENV}")
    if is_within(path, repo):
        raise ConfigError(f"signing key {path} is inside the repository {repo}",
                          hint="keep secret keys out of the checkout (e.g. in "
                               "~/.minisign/ or the CI runner's temporary directory)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"signing key {path}: cannot read it: {exc}") from exc
    password = env.get(PASSWORD_ENV)
    if key_is_encrypted(text, source=str(path)) and not password:
        raise ConfigError(f"signing key {path} is protected by a password",
                          hint=f"set {PASSWORD_ENV} to the key's password")
    return SigningKey(path=path, password=password or None)


class MinisignSigner:
    """Signs with a minisign secret key; implements ``kiln.release.assemble.Signer``."""

    def __init__(self, key: SigningKey, *, env: Mapping[str, str]) -> None:
        self.key = key
        self.env = scrub_env(env)
        self._public: str | None = None

    def _stdin(self) -> str | None:
        # minisign reads the password from standard input when that is not a terminal.
        return None if self.key.password is None else self.key.password + "\n"

    def _run(self, argv: list[str], what: str) -> None:
        try:
            run(argv, env=self.env, input_text=self._stdin(), what=what)
        except CommandFailed as exc:
            if "Wrong password" in exc.output:
                raise ConfigError(f"{what}: wrong password for {self.key.path}",
                                  hint=f"check {PASSWORD_ENV}") from None
            raise

    def public_key(self) -> str:
        if self._public is None:
            with tempfile.TemporaryDirectory(prefix="kiln-pub-") as tmp:
                pub = Path(tmp) / "minisign.pub"
                self._run(["minisign", "-R", "-s", str(self.key.path), "-p", str(pub)],
                          "minisign -R (public key from the secret key)")
                self._public = pub.read_text(encoding="utf-8")
        return self._public

    def sign(self, path: Path, signature: Path, *, trusted_comment: str) -> None:
        self._run(["minisign", "-S", "-s", str(self.key.path), "-m", str(path),
                   "-x", str(signature), "-t", trusted_comment], "minisign -S")

    def verify(self, path: Path, signature: Path, public_key: Path) -> None:
        verify_signature(path, signature, public_key, env=self.env)


def verify_signature(path: Path, signature: Path, public_key: Path, *,
                     env: Mapping[str, str]) -> None:
    """``minisign -V``; a bad signature is an ``IntegrityError``."""
    done = run(["minisign", "-V", "-q", "-p", str(public_key), "-x", str(signature),
                "-m", str(path)], env=scrub_env(env), check=False, what="minisign -V")
    if done.returncode != 0:
        raise IntegrityError(f"{signature.name} does not verify {path.name} with "
                             f"{public_key.name}: {(done.stdout + done.stderr).strip()}",
                             hint="the file or the signature was changed; make the release "
                                  "again")
