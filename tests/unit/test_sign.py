"""Signing-key handling without running minisign (``kiln.release.sign.run`` is replaced)."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from kiln.errors import CommandFailed, ConfigError
from kiln.release import sign
from kiln.release.sign import MinisignSigner, SigningKey, key_is_encrypted, resolve_key, scrub_env
from kiln.run import Completed


def key_text(kdf: bytes) -> str:
    blob = b"Ed" + kdf + b"B2" + bytes(152)
    return "untrusted comment: minisign secret key\n" + base64.b64encode(blob).decode() + "\n"


ENCRYPTED = key_text(b"Sc")
PLAIN = key_text(b"\x00\x00")


def test_key_is_encrypted() -> None:
    assert key_is_encrypted(ENCRYPTED, source="k") is True
    assert key_is_encrypted(PLAIN, source="k") is False
    with pytest.raises(ConfigError, match="not a minisign secret key"):
        key_is_encrypted("hello\n", source="k")


def test_resolve_key_from_option_or_env(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    key = tmp_path / "k.key"
    key.write_text(PLAIN)
    assert resolve_key(str(key), {}, repo=repo).path == key
    assert resolve_key(None, {"KILN_SIGNING_KEY": str(key)}, repo=repo).path == key
    with pytest.raises(ConfigError, match="no signing key") as info:
        resolve_key(None, {}, repo=repo)
    assert info.value.hint is not None and "KILN_SIGNING_KEY" in info.value.hint


def test_a_key_inside_the_repository_is_refused(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    key = tmp_path / "keys" / "k.key"
    key.write_text(PLAIN)
    with pytest.raises(ConfigError, match="inside the repository"):
        resolve_key(str(key), {}, repo=tmp_path)


def test_an_encrypted_key_needs_the_password(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    key = tmp_path / "k.key"
    key.write_text(ENCRYPTED)
    with pytest.raises(ConfigError, match="protected by a password"):
        resolve_key(str(key), {}, repo=repo)
    got = resolve_key(str(key), {"KILN_SIGNING_PASSWORD": "s3cret"}, repo=repo)
    assert got.password == "s3cret"
    assert "s3cret" not in repr(got)


class Recorder:
    def __init__(self, fail_with: str | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail_with = fail_with

    def __call__(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                 input_text: str | None = None, **kwargs: Any) -> Completed:
        self.calls.append({"argv": list(argv), "env": dict(env or {}), "input": input_text})
        if self.fail_with is not None:
            raise CommandFailed("minisign failed", output=self.fail_with)
        return Completed(argv=tuple(argv), returncode=0, stdout="", stderr="")


def test_password_goes_to_stdin_and_secrets_leave_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder()
    monkeypatch.setattr(sign, "run", rec)
    signer = MinisignSigner(SigningKey(path=tmp_path / "k.key", password="s3cret"),
                            env={"PATH": "/bin", "GITHUB_TOKEN": "ghp_x",
                                 "KILN_SIGNING_PASSWORD": "s3cret"})
    signer.sign(tmp_path / "SHA256SUMS", tmp_path / "SHA256SUMS.minisig",
                trusted_comment="ember b42 commit abc")
    call = rec.calls[0]
    assert call["argv"][:2] == ["minisign", "-S"]
    assert "-t" in call["argv"] and "ember b42 commit abc" in call["argv"]
    assert "s3cret" not in " ".join(call["argv"])
    assert call["input"] == "s3cret\n"
    assert call["env"] == {"PATH": "/bin"}


def test_wrong_password_is_a_config_error(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sign, "run", Recorder(fail_with="Wrong password for that key"))
    signer = MinisignSigner(SigningKey(path=tmp_path / "k.key", password="nope"), env={})
    with pytest.raises(ConfigError, match="wrong password") as info:
        signer.sign(tmp_path / "f", tmp_path / "f.minisig", trusted_comment="t")
    assert "nope" not in info.value.render()


def test_scrub_env() -> None:
    assert scrub_env({"A": "1", "GITHUB_TOKEN": "t", "KILN_SIGNING_PASSWORD": "p"}) == {
        "A": "1"}
