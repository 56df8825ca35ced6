"""kiln.install.installer below the ranking: signatures, release resolution, download, unpack,
atomic
install and uninstall, all on local files (file paths, no network, no programs)."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import minisign  # type: ignore[import-untyped]
import pytest
from test_host import profile

from kiln.errors import ConfigError, InstallError, IntegrityError
from kiln.files import sha256_file
from kiln.install.host import probe
from kiln.install.installer import (
    Fetcher,
    _covers,
    fetch_release,
    install,
    pubkey_from,
    rank,
    read_install_record,
    resolve_release_url,
    uninstall,
    unpack,
    verify_sums_signature,
)
from kiln.package.records import AssetRecord, Tool, Verification, unpacked_size
from kiln.release.index import release_index
from kiln.release.manifest import ReleaseAsset, ReleaseManifest, format_sums

TAG = "b7"


def write_index(rel: Path, manifest: ReleaseManifest, secret: object) -> None:
    """The release's signed index.json, as ``kiln release`` writes it."""
    index = release_index(manifest, distros={"ubuntu-x64": "ubuntu"},
                          general=frozenset({"ubuntu"}), floors={}, expiry_days=36500)
    (rel / "index.json").write_text(index.text(), encoding="utf-8")
    (rel / "index.json.minisig").write_bytes(
        sign(secret, index.text().encode(), index.comment()))


def keypair() -> tuple[object, str]:
    kp = minisign.KeyPair.generate()
    return kp.secret_key, bytes(kp.public_key).decode()


def sign(secret: object, data: bytes, comment: str) -> bytes:
    return bytes(secret.sign(data, trusted_comment=comment))  # type: ignore[attr-defined]


def cli_archive(path: Path, *, top: str = "ember-b7-bin-ubuntu-x64", text: str = "v1",
                extra: tuple[tuple[str, bytes], ...] = (), project: str = "ember") -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in ((f"{top}/bin/{project}-cli", f"#!/bin/sh\necho {text}\n".encode()),
                           (f"{top}/lib/lib{project}.so.0", b"\x7fELF"), *extra):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))


def make_release(root: Path, secret: object, *, tag: str = TAG, text: str = "v1",
                 project: str = "ember",
                 extra: tuple[tuple[str, bytes], ...] = ()) -> Path:
    """A mirror root: ``latest`` and ``<tag>/`` with one ubuntu-x64 archive of ``project``."""
    rel = root / tag
    rel.mkdir(parents=True)
    name = f"{project}-{tag}-bin-ubuntu-x64.tar.gz"
    cli_archive(rel / name, top=f"{project}-{tag}-bin-ubuntu-x64", text=text, project=project,
                extra=tuple((f"{project}-{tag}-bin-ubuntu-x64/{n}", d) for n, d in extra))
    record = AssetRecord(
        name=name, kind="archive", entry_id="ubuntu-x64", os="linux", arch="x86_64",
        backend="cpu", backend_version=None, libc="glibc", libc_floor="2.17", min_os=None,
        cpu_baseline="x86-64", cpu_dispatch=("sse4.2", "avx2"), gpu_targets=(),
        min_driver=None, build_number=int(tag[1:]), commit="a" * 40,
        size=(rel / name).stat().st_size, sha256=sha256_file(rel / name),
        unpacked_size=unpacked_size(rel / name),
        toolchain=(Tool(name="zig", version="0.17.1"),),
        verification=Verification(method="native", ok=True, detail="ok"))
    manifest = ReleaseManifest(project=project, tag=tag, build_number=int(tag[1:]),
                               commit="a" * 40, date="2026-01-01T00:00:00Z",
                               base_url=str(rel) + "/",
                               assets=(ReleaseAsset(record=record, url=name),), missing=(),
                               disabled=())
    write_index(rel, manifest, secret)
    (rel / "manifest.json").write_text(manifest.text(), encoding="utf-8")
    sums = format_sums({name: record.sha256,
                        "manifest.json": sha256_file(rel / "manifest.json")})
    (rel / "SHA256SUMS").write_text(sums, encoding="utf-8")
    (rel / "SHA256SUMS.minisig").write_bytes(
        sign(secret, sums.encode(), f"{project} {tag} commit {'a' * 40}"))
    (root / "latest").write_text(tag + "\n", encoding="utf-8")
    return rel


@pytest.fixture
def mirror(tmp_path: Path) -> tuple[Path, str, object]:
    secret, pub = keypair()
    make_release(tmp_path / "mirror", secret)
    return tmp_path / "mirror", pub, secret


def do_install(mirror_root: Path, pub: str, tmp: Path, prefix: Path) -> object:
    fetcher = Fetcher()
    release = fetch_release(str(mirror_root), "latest", pubkey=pub, fetcher=fetcher)
    choice = rank(release.manifest, probe(profile("centos7-old-glibc")))
    assert choice.chosen is not None
    return install(release, choice.chosen, prefix, cache=tmp / "cache", fetcher=fetcher)


# --------------------------------------------------------------------------------------------


def test_signature_checks(tmp_path: Path) -> None:
    secret, pub = keypair()
    data = b"abc  file\n"
    sig = sign(secret, data, "ember b7 commit x")
    assert verify_sums_signature(data, sig, pub, tag="b7") == "ember b7 commit x"
    with pytest.raises(IntegrityError, match="does not verify SHA256SUMS"):
        verify_sums_signature(data + b"x", sig, pub, tag="b7")
    _other, other_pub = keypair()
    with pytest.raises(IntegrityError, match="with the pinned public key"):
        verify_sums_signature(data, sig, other_pub, tag="b7")
    with pytest.raises(IntegrityError, match="does not name b8"):
        verify_sums_signature(data, sig, pub, tag="b8")
    with pytest.raises(IntegrityError, match="not a minisign signature"):
        verify_sums_signature(data, b"garbage", pub, tag=None)
    with pytest.raises(ConfigError, match="public key"):
        verify_sums_signature(data, sig, "RWnotakey", tag=None)


def test_pubkey_from_key_or_file(tmp_path: Path) -> None:
    _s, pub = keypair()
    line = pub.splitlines()[-1]
    assert pubkey_from(line) == line
    f = tmp_path / "minisign.pub"
    f.write_text(pub, encoding="utf-8")
    assert pubkey_from(str(f)) == pub
    with pytest.raises(ConfigError, match="neither a minisign key"):
        pubkey_from(str(tmp_path / "nope.pub"))


def test_resolve_latest_tag_and_template(mirror: tuple[Path, str, object]) -> None:
    root, _pub, _s = mirror
    f = Fetcher()
    assert resolve_release_url(str(root), "latest", f) == (str(root / TAG), TAG)
    assert resolve_release_url(str(root), TAG, f) == (str(root / TAG), TAG)
    assert resolve_release_url(str(root / TAG), TAG, f) == (str(root / TAG), TAG)
    assert resolve_release_url("https://h/{tag}/", "b9", f) == ("https://h/b9/", "b9")
    with pytest.raises(ConfigError, match="--tag latest cannot be resolved"):
        resolve_release_url("https://h/{tag}/", "latest", f)


def test_manifest_must_match_signed_sums(mirror: tuple[Path, str, object]) -> None:
    root, pub, _s = mirror
    m = root / TAG / "manifest.json"
    m.write_text(m.read_text(encoding="utf-8").replace('"ember"', '"evil"'), encoding="utf-8")
    with pytest.raises(IntegrityError, match=r"manifest\.json does not match"):
        fetch_release(str(root), "latest", pubkey=pub, fetcher=Fetcher())


def test_no_key_is_an_error_unless_insecure(mirror: tuple[Path, str, object]) -> None:
    root, _pub, _s = mirror
    with pytest.raises(ConfigError, match="no minisign public key"):
        fetch_release(str(root), "latest", pubkey=None, fetcher=Fetcher())
    rel = fetch_release(str(root), "latest", pubkey=None, fetcher=Fetcher(),
                        insecure_skip_signature=True)
    assert not rel.signed


def test_install_replace_uninstall(mirror: tuple[Path, str, object], tmp_path: Path) -> None:
    root, pub, secret = mirror
    prefix = tmp_path / "ember"
    first = do_install(root, pub, tmp_path, prefix)
    assert (prefix / "bin" / "ember-cli").read_text().endswith("echo v1\n")
    record = read_install_record(prefix)
    assert record is not None and record["entry_id"] == "ubuntu-x64" and record["signed"]
    assert "bin/ember-cli" in record["files"]
    assert first.replaced is None  # type: ignore[attr-defined]
    make_release(tmp_path / "mirror2", secret, tag="b8", text="v2")
    second = do_install(tmp_path / "mirror2", pub, tmp_path, prefix)
    assert second.replaced == "b7 ubuntu-x64"  # type: ignore[attr-defined]
    assert (prefix / "bin" / "ember-cli").read_text().endswith("echo v2\n")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".ember")) == [
        ".ember.lock"]
    removed = uninstall(prefix)
    assert removed["tag"] == "b8" and not prefix.exists()


def test_tampered_archive_leaves_previous_install(mirror: tuple[Path, str, object],
                                                  tmp_path: Path) -> None:
    root, pub, _s = mirror
    prefix = tmp_path / "ember"
    do_install(root, pub, tmp_path, prefix)
    before = sorted((p.name, p.read_bytes()) for p in prefix.rglob("*") if p.is_file())
    archive = root / TAG / f"ember-{TAG}-bin-ubuntu-x64.tar.gz"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 1
    archive.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="does not match"):
        do_install(root, pub, tmp_path / "fresh", prefix)
    assert sorted((p.name, p.read_bytes()) for p in prefix.rglob("*") if p.is_file()) == before


def test_truncated_archive_is_an_integrity_error(mirror: tuple[Path, str, object],
                                                 tmp_path: Path) -> None:
    root, pub, _s = mirror
    archive = root / TAG / f"ember-{TAG}-bin-ubuntu-x64.tar.gz"
    archive.write_bytes(archive.read_bytes()[:100])
    with pytest.raises(IntegrityError, match="truncated"):
        do_install(root, pub, tmp_path, tmp_path / "ember")
    assert not (tmp_path / "ember").exists()


def test_foreign_prefix_is_refused(mirror: tuple[Path, str, object], tmp_path: Path) -> None:
    root, pub, _s = mirror
    prefix = tmp_path / "usr"
    prefix.mkdir()
    (prefix / "bin").mkdir()
    with pytest.raises(InstallError, match="not made by kiln install"):
        do_install(root, pub, tmp_path, prefix)
    with pytest.raises(InstallError, match="nothing installed by kiln"):
        uninstall(prefix)
    assert (prefix / "bin").is_dir()


def test_unpack_refuses_members_outside(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar.gz"
    cli_archive(evil, extra=(("../escape", b"x"),))
    (tmp_path / "out").mkdir()
    # A refusal names the member and is exit 12 (IntegrityError), as any hostile content.
    with pytest.raises(IntegrityError, match=r"member '\.\./escape' has a '\.\.' component"):
        unpack(evil, tmp_path / "out", max_bytes=1 << 20)
    assert not (tmp_path / "escape").exists()
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("../../escape.txt", "x")
    (tmp_path / "out2").mkdir()
    with pytest.raises(IntegrityError, match="outside the install directory"):
        unpack(z, tmp_path / "out2", max_bytes=1 << 20)


def test_unpack_strips_a_single_top_directory(tmp_path: Path) -> None:
    a = tmp_path / "a.tar.gz"
    cli_archive(a, top="ember-b1-bin-x")
    (tmp_path / "o").mkdir()
    assert unpack(a, tmp_path / "o", max_bytes=1 << 20) == tmp_path / "o" / "ember-b1-bin-x"
    z = tmp_path / "flat.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("bin/ember-cli.exe", "MZ")
        zf.writestr("bin/ember.dll", "MZ")
    (tmp_path / "z").mkdir()
    assert unpack(z, tmp_path / "z", max_bytes=1 << 20) == tmp_path / "z"


def test_archive_without_cli_is_refused(mirror: tuple[Path, str, object],
                                        tmp_path: Path) -> None:
    root, pub, secret = mirror
    rel = root / TAG
    name = f"ember-{TAG}-bin-ubuntu-x64.tar.gz"
    with tarfile.open(rel / name, "w:gz") as tar:
        info = tarfile.TarInfo("README")
        tar.addfile(info, io.BytesIO(b""))
    data = json.loads((rel / "manifest.json").read_text())
    data["assets"][0]["size"] = (rel / name).stat().st_size
    data["assets"][0]["sha256"] = sha256_file(rel / name)
    (rel / "manifest.json").write_text(json.dumps(data), encoding="utf-8")
    write_index(rel, ReleaseManifest.from_json(data, source="m"), secret)
    sums = format_sums({name: sha256_file(rel / name),
                        "manifest.json": sha256_file(rel / "manifest.json")})
    (rel / "SHA256SUMS").write_text(sums, encoding="utf-8")
    (rel / "SHA256SUMS.minisig").write_bytes(sign(secret, sums.encode(), f"ember {TAG}"))
    with pytest.raises(InstallError, match=r"holds no programs \(looked for a bin/ directory"):
        do_install(root, pub, tmp_path, tmp_path / "ember")
    assert not (tmp_path / "ember").exists()


@pytest.mark.parametrize(("cap", "targets", "ok"), [
    ("8.9", ("sm_75", "sm_80", "sm_86"), True),    # sm_86 cubin runs on 8.9
    ("6.1", ("sm_75", "sm_120", "compute_120"), False),
    ("6.1", ("sm_50", "sm_60"), True),
    ("12.0", ("sm_90", "compute_90"), True),       # PTX for 9.0 JITs on 12.0
    ("9.0", ("sm_100", "compute_100"), False),
    ("10.0", ("sm_100a",), True),
])
def test_cuda_device_code_coverage(cap: str, targets: tuple[str, ...], ok: bool) -> None:
    assert _covers(cap, targets) is ok


def test_malformed_manifest_is_an_install_error() -> None:
    from kiln.install.installer import parse_manifest

    with pytest.raises(InstallError, match="cannot be read"):
        parse_manifest({"schema": 99}, source="m.json")


def test_record_copy_is_frozen() -> None:
    m = ReleaseManifest(project="e", tag="b1", build_number=1, commit="", date="",
                        base_url="", assets=(), missing=(), disabled=())
    assert replace(m, tag="b2").tag == "b2"
