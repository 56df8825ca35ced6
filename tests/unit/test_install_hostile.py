"""kiln install against a hostile or broken mirror: archive members, size caps, SHA256SUMS,
tags and names, the signed date, downgrades, and HTTP answers that are not what a release
server gives (a local server on 127.0.0.1, no other network). Each refusal must be a kiln
error with its documented exit code, never a traceback, and leave the previous install as it
was."""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import os
import socket
import stat
import tarfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import minisign  # type: ignore[import-untyped]
import pytest
from test_host import profile

from kiln.errors import ConfigError, InstallError, IntegrityError, ReleaseError
from kiln.files import sha256_file
from kiln.install.host import probe
from kiln.install.installer import (
    Fetcher,
    fetch_release,
    install,
    rank,
    read_install_record,
    unpack,
)
from kiln.package.records import AssetRecord, Tool, Verification
from kiln.release.index import release_index
from kiln.release.manifest import ReleaseAsset, ReleaseManifest, format_sums

COMMIT = "a" * 40
DATE = "2026-03-04T05:06:07Z"


# --------------------------------------------------------------------------------------------
# archives


@dataclass
class M:
    """An archive member to write: ``kind`` file/dir/link/hardlink/chr/blk/fifo."""

    name: str
    data: bytes = b""
    kind: str = "file"
    mode: int = 0o644
    target: str = ""
    uid: int = 0


def tar_gz(path: Path, members: list[M]) -> Path:
    types = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "link": tarfile.SYMTYPE,
             "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE,
             "fifo": tarfile.FIFOTYPE, "sparse": tarfile.GNUTYPE_SPARSE}
    with tarfile.open(path, "w:gz", format=tarfile.GNU_FORMAT) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type, info.mode, info.linkname = types[m.kind], m.mode, m.target
            info.uid = info.gid = m.uid
            if m.kind == "file":
                info.size = len(m.data)
                tar.addfile(info, io.BytesIO(m.data))
            else:
                tar.addfile(info)
    return path


def zip_file(path: Path, members: list[M]) -> Path:
    kinds = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "link": stat.S_IFLNK,
             "chr": stat.S_IFCHR, "fifo": stat.S_IFIFO}
    with zipfile.ZipFile(path, "w") as zf:
        for m in members:
            info = zipfile.ZipInfo(m.name + ("/" if m.kind == "dir" else ""))
            info.create_system = 3
            info.external_attr = (kinds[m.kind] | m.mode) << 16
            zf.writestr(info, m.target.encode() if m.kind == "link" else m.data)
    return path


def cli_members(top: str, text: str = "v1") -> list[M]:
    return [M(f"{top}/bin/ember-cli", f"#!/bin/sh\necho {text}\n".encode(), mode=0o755),
            M(f"{top}/lib/libember.so.0", b"\x7fELF")]


def files_outside(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


# --------------------------------------------------------------------------------------------
# contract 1: unpacked_size in every record


def test_record_for_counts_the_unpacked_size(tmp_path: Path) -> None:
    from kiln.package.records import unpacked_size

    members = [M("t", kind="dir", mode=0o755), M("t/a", b"x" * 1000), M("t/b", b"y" * 24),
               M("t/l", kind="link", target="a", mode=0o777)]
    assert unpacked_size(tar_gz(tmp_path / "a.tar.gz", members)) == 1024
    assert unpacked_size(zip_file(tmp_path / "a.zip", members)) == 1024
    wheel = zip_file(tmp_path / "ember-1-py3-none-any.whl", [M("ember/__init__.py", b"z" * 7)])
    assert unpacked_size(wheel) == 7
    (tmp_path / "junk.tar.gz").write_bytes(b"not an archive")
    with pytest.raises(ReleaseError, match=r"cannot read it as a \.tar\.gz, \.zip or wheel"):
        unpacked_size(tmp_path / "junk.tar.gz")


def record_json(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "name": "ember-b1-bin-x.tar.gz", "kind": "archive", "entry_id": "x", "os": "linux",
        "arch": "x86_64", "backend": "cpu", "backend_version": None, "libc": "glibc",
        "libc_floor": "2.17", "min_os": None, "cpu_baseline": "x86-64", "cpu_dispatch": [],
        "gpu_targets": [], "min_driver": None, "build_number": 1, "commit": COMMIT,
        "toolchain": [{"name": "zig", "version": "0.17.1"}], "size": 10, "sha256": "0" * 64,
        "unpacked_size": 20,
        "verification": {"method": "native", "ok": True, "detail": ""}}
    base.update(over)
    return base


def test_record_json_carries_a_valid_unpacked_size() -> None:
    record = AssetRecord.from_json(record_json(), source="r.json")
    assert record.unpacked_size == 20 and record.to_json()["unpacked_size"] == 20
    without = record_json()
    del without["unpacked_size"]
    with pytest.raises(ReleaseError, match=r"missing: \['unpacked_size'\]"):
        AssetRecord.from_json(without, source="r.json")
    for bad in (-1, "20", 2.5, True, None):
        with pytest.raises(ReleaseError, match="'unpacked_size' must be a non-negative"):
            AssetRecord.from_json(record_json(unpacked_size=bad), source="r.json")


# --------------------------------------------------------------------------------------------
# contract 4: archive members


TOP = "ember-b7-bin-ubuntu-x64"
HOSTILE_TAR = [
    ("absolute", [M("/tmp/kiln-hostile-abs", b"x")], "has an absolute path"),
    ("dotdot", [M(f"{TOP}/../../escape", b"x")], "has a '..' component"),
    ("backslash", [M(f"{TOP}\\..\\escape", b"x")], "has a backslash"),
    ("hardlink", [M(f"{TOP}/h", kind="hardlink", target=f"{TOP}/bin/ember-cli")],
     "is a hard link"),
    ("chardev", [M(f"{TOP}/c", kind="chr")], "is a device file"),
    ("blockdev", [M(f"{TOP}/b", kind="blk")], "is a device file"),
    ("fifo", [M(f"{TOP}/f", kind="fifo")], "is a FIFO"),
    ("setuid", [M(f"{TOP}/s", b"x", mode=0o4755)], "set-user-ID"),
    ("setgid", [M(f"{TOP}/g", b"x", mode=0o2755)], "set-user-ID, set-group-ID"),
    ("sticky-dir", [M(f"{TOP}/d", kind="dir", mode=0o1777)], "sticky bits are refused"),
    ("link-absolute", [M(f"{TOP}/l", kind="link", target="/etc")],
     "symbolic link to the absolute path '/etc'"),
    ("link-outside", [M(f"{TOP}/l", kind="link", target="../../x")], "outside the archive"),
    # each link alone stays inside; followed on disk, m leaves the tree
    ("link-chain", [M(f"{TOP}/a/l", kind="link", target=".."),
                    M(f"{TOP}/m", kind="link", target="a/l/../..")],
     "resolves outside the archive"),
    ("duplicate", [M(f"{TOP}/bin/ember-cli", b"#!/bin/sh\necho evil\n", mode=0o755)],
     "is listed twice"),
    ("through-link", [M(f"{TOP}/d", kind="link", target="bin"),
                      M(f"{TOP}/d/ember-cli2", b"x")], "would be written through the symbolic"),
    ("through-link-outside", [M(f"{TOP}/e", kind="link", target="lib"),
                              M(f"{TOP}/e/../../x", b"x")], "'..' component"),
    ("below-a-file", [M(f"{TOP}/lib/libember.so.0/x", b"x")], "is below the file"),
]


@pytest.mark.parametrize(("case", "extra", "message"), HOSTILE_TAR,
                         ids=[c[0] for c in HOSTILE_TAR])
def test_unpack_refuses_hostile_tar_members(tmp_path: Path, case: str, extra: list[M],
                                            message: str) -> None:
    archive = tar_gz(tmp_path / f"{TOP}.tar.gz", [*cli_members(TOP), *extra])
    dest = tmp_path / "stage" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(IntegrityError, match="member .*" + message.replace("(", r"\(")) as exc:
        unpack(archive, dest, max_bytes=1 << 20)
    assert exc.value.exit_code == 12
    # nothing outside the staging directory, whatever was written inside it
    assert files_outside(tmp_path) == [f"{TOP}.tar.gz", "stage"]
    assert files_outside(tmp_path / "stage") == ["dest"]
    assert not Path("/tmp/kiln-hostile-abs").exists()


HOSTILE_ZIP = [
    ("link-absolute", [M("t/l", kind="link", target="/etc/passwd", mode=0o777)],
     "absolute path"),
    ("link-outside", [M("t/l", kind="link", target="../../etc", mode=0o777)],
     "outside the archive"),
    ("chardev", [M("t/c", kind="chr")], "has the file type"),
    ("fifo", [M("t/f", kind="fifo")], "has the file type"),
    ("setuid", [M("t/s", b"x", mode=0o4755)], "set-user-ID"),
    ("dotdot", [M("t/../../x", b"x")], "'..' component"),
    ("absolute", [M("/x", b"x")], "absolute path"),
    ("drive", [M("C:/x", b"x")], "':'"),
    ("duplicate", [M("t/bin/ember-cli.exe", b"MZevil")], "is listed twice"),
]


@pytest.mark.parametrize(("case", "extra", "message"), HOSTILE_ZIP,
                         ids=[c[0] for c in HOSTILE_ZIP])
def test_unpack_refuses_hostile_zip_members(tmp_path: Path, case: str, extra: list[M],
                                            message: str) -> None:
    members = [M("t/bin/ember-cli.exe", b"MZ", mode=0o755), *extra]
    with pytest.warns(UserWarning, match="Duplicate name") if case == "duplicate" else (
            contextlib.nullcontext()):
        archive = zip_file(tmp_path / "a.zip", members)
    dest = tmp_path / "stage" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(IntegrityError, match="member .*" + message):
        unpack(archive, dest, max_bytes=1 << 20)
    assert files_outside(tmp_path) == ["a.zip", "stage"]


def test_unpack_masks_modes_and_never_chowns(tmp_path: Path) -> None:
    archive = tar_gz(tmp_path / "a.tar.gz", [
        M("t", kind="dir", mode=0o700, uid=4321), M("t/x777", b"x", mode=0o777, uid=4321),
        M("t/x700", b"x", mode=0o700, uid=4321), M("t/r600", b"x", mode=0o600, uid=4321),
        M("t/r666", b"x", mode=0o666, uid=4321), M("t/l", kind="link", target="x777",
                                                  mode=0o777, uid=4321)])
    dest = tmp_path / "d"
    dest.mkdir()
    unpack(archive, dest, max_bytes=100)
    modes = {p.name: stat.S_IMODE(p.lstat().st_mode) for p in (dest / "t").iterdir()
             if not p.is_symlink()}
    assert modes == {"x777": 0o755, "x700": 0o755, "r600": 0o644, "r666": 0o644}
    assert stat.S_IMODE((dest / "t").stat().st_mode) == 0o755
    assert {p.lstat().st_uid for p in (dest / "t").iterdir()} == {os.getuid()}
    assert os.readlink(dest / "t" / "l") == "x777"


def test_unpack_stops_at_the_signed_unpacked_size(tmp_path: Path) -> None:
    archive = tar_gz(tmp_path / "bomb.tar.gz", [M("t/zeros", b"\0" * (4 << 20))])
    assert archive.stat().st_size < 64 << 10  # small on the wire, large unpacked
    dest = tmp_path / "d"
    dest.mkdir()
    with pytest.raises(IntegrityError,
                       match=r"bomb.tar.gz unpacks to more than the 1048576 bytes its signed "
                             r"record says"):
        unpack(archive, dest, max_bytes=1 << 20)
    assert not (dest / "t" / "zeros").exists()  # refused before anything was written
    z = zip_file(tmp_path / "bomb.zip", [M("t/zeros", b"\0" * (4 << 20))])
    (tmp_path / "z").mkdir()
    with pytest.raises(IntegrityError, match="unpacks to more than the 1048576 bytes"):
        unpack(z, tmp_path / "z", max_bytes=1 << 20)


def test_unpack_counts_while_writing(tmp_path: Path) -> None:
    """Content beyond what a member declares (a lying zip header) still stops at the cap:
    the count is of the bytes written, not of the sizes declared."""
    from kiln.install.installer import _Member, _write_members

    def endless() -> io.BytesIO:
        return io.BytesIO(b"\0" * (3 << 20))

    member = _Member(raw="t/lies", path="t/lies", kind="file", size=1, mode=0o644,
                     source=endless)
    with pytest.raises(IntegrityError, match="stopped at 't/lies'"):
        _write_members(tmp_path / "a.zip", tmp_path, [member], 1 << 20)
    assert (tmp_path / "t" / "lies").stat().st_size <= 1 << 20


# --------------------------------------------------------------------------------------------
# a signed mirror on disk


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


@dataclass
class Mirror:
    root: Path
    secret: object
    pub: str

    def release(self, tag: str, *, members: list[M] | None = None,
                comment: str | None = None, sums: bytes | None = None,
                unpacked: int | None = None, name: str | None = None,
                date: str = "2026-01-01T00:00:00Z", latest: bool = True) -> Path:
        """``<root>/<tag>/`` with one ubuntu-x64 archive, signed; ``latest`` names it."""
        rel = self.root / tag
        rel.mkdir(parents=True, exist_ok=True)
        top = f"ember-{tag}-bin-ubuntu-x64"
        name = name or f"{top}.tar.gz"
        path = rel / name.replace("/", "_")
        tar_gz(path, members if members is not None else cli_members(top, text=tag))
        from kiln.package.records import unpacked_size

        record = AssetRecord(
            name=name, kind="archive", entry_id="ubuntu-x64", os="linux", arch="x86_64",
            backend="cpu", backend_version=None, libc="glibc", libc_floor="2.17",
            min_os=None, cpu_baseline="x86-64", cpu_dispatch=(), gpu_targets=(),
            min_driver=None, build_number=int(tag[1:]), commit=COMMIT,
            size=path.stat().st_size, sha256=sha256_file(path),
            unpacked_size=unpacked if unpacked is not None else unpacked_size(path),
            toolchain=(Tool(name="zig", version="0.17.1"),),
            verification=Verification(method="native", ok=True, detail="ok"))
        manifest = ReleaseManifest(project="ember", tag=tag, build_number=int(tag[1:]),
                                   commit=COMMIT, date=date, base_url=f"{rel}/",
                                   assets=(ReleaseAsset(record=record, url=name),),
                                   missing=(), disabled=())
        write_index(rel, manifest, self.secret)
        (rel / "manifest.json").write_text(manifest.text(), encoding="utf-8")
        text = sums if sums is not None else format_sums(
            {name: record.sha256, "manifest.json": sha256_file(rel / "manifest.json")}
        ).encode()
        (rel / "SHA256SUMS").write_bytes(text)
        if comment is None:
            comment = f"ember {tag} commit {COMMIT} date {date}"
        (rel / "SHA256SUMS.minisig").write_bytes(sign(self.secret, text, comment))
        if latest:
            (self.root / "latest").write_text(tag + "\n", encoding="utf-8")
        return rel

    def resign(self, tag: str, sums: dict[str, str]) -> None:
        rel = self.root / tag
        text = format_sums(sums).encode()
        (rel / "SHA256SUMS").write_bytes(text)
        (rel / "SHA256SUMS.minisig").write_bytes(sign(self.secret, text, f"ember {tag}"))

    def fetch(self, tag: str = "latest", source: str | None = None,
              fetcher: Fetcher | None = None) -> object:
        return fetch_release(source or str(self.root), tag, pubkey=self.pub,
                             fetcher=fetcher or Fetcher())


@pytest.fixture
def mirror(tmp_path: Path) -> Mirror:
    secret, pub = keypair()
    return Mirror(root=tmp_path / "mirror", secret=secret, pub=pub)


def do_install(m: Mirror, prefix: Path, *, tag: str = "latest",
               allow_downgrade: bool = False) -> object:
    fetcher = Fetcher()
    release = fetch_release(str(m.root), tag, pubkey=m.pub, fetcher=fetcher)
    choice = rank(release.manifest, probe(profile("centos7-old-glibc")))
    assert choice.chosen is not None
    return install(release, choice.chosen, prefix, cache=prefix.parent / "cache",
                   fetcher=fetcher, allow_downgrade=allow_downgrade)


def snapshot(prefix: Path) -> dict[str, bytes]:
    return {str(p.relative_to(prefix)): p.read_bytes() for p in sorted(prefix.rglob("*"))
            if p.is_file()}


def leftovers(prefix: Path) -> list[str]:
    return sorted(p.name for p in prefix.parent.iterdir()
                  if p.name.startswith(f".{prefix.name}.") and not p.name.endswith(".lock"))


# --------------------------------------------------------------------------------------------
# contract 7: downgrades; contract 6: the signed date


def test_latest_pointing_back_in_time_is_refused(mirror: Mirror, tmp_path: Path) -> None:
    prefix = tmp_path / "ember"
    mirror.release("b9")
    do_install(mirror, prefix)
    before = snapshot(prefix)
    mirror.release("b3")  # latest now names b3
    with pytest.raises(InstallError, match=r"refusing to replace ember b9 \(installed in "
                                           r".*\) with the older b3 \(the mirror's 'latest' or "
                                           r"--tag points back in time\); pass "
                                           r"--allow-downgrade") as exc:
        do_install(mirror, prefix)
    assert exc.value.exit_code == 11
    assert snapshot(prefix) == before and leftovers(prefix) == []
    # an older --tag is refused the same way
    with pytest.raises(InstallError, match="older b3"):
        do_install(mirror, prefix, tag="b3")
    # the same tag may be reinstalled
    same = do_install(mirror, prefix, tag="b9")
    assert same.replaced == "b9 ubuntu-x64"  # type: ignore[attr-defined]
    # and --allow-downgrade installs the older one, saying so
    down = do_install(mirror, prefix, allow_downgrade=True)
    assert down.replaced == "b9 ubuntu-x64" and down.downgrade  # type: ignore[attr-defined]
    record = read_install_record(prefix)
    assert record is not None and record["tag"] == "b3"


def test_an_unreadable_installed_tag_is_not_taken_as_older(mirror: Mirror,
                                                           tmp_path: Path) -> None:
    prefix = tmp_path / "ember"
    mirror.release("b9")
    do_install(mirror, prefix)
    record = json.loads((prefix / ".ember-install.json").read_text())
    record["tag"] = "b9\n"
    (prefix / ".ember-install.json").write_text(json.dumps(record))
    with pytest.raises(InstallError, match=r"names the tag 'b9\\n'"):
        do_install(mirror, prefix)
    assert do_install(mirror, prefix, allow_downgrade=True)


def test_the_install_record_holds_the_signed_date(mirror: Mirror, tmp_path: Path) -> None:
    mirror.release("b9", date="2026-01-01T00:00:00Z",
                   comment=f"ember b9 commit {COMMIT} date {DATE}")
    do_install(mirror, tmp_path / "a")
    record = read_install_record(tmp_path / "a")
    assert record is not None and record["date"] == DATE  # the signed one wins
    # a comment without a date (an older kiln release): the manifest's date
    mirror.release("b10", date="2026-05-06T07:08:09Z", comment=f"ember b10 commit {COMMIT}")
    do_install(mirror, tmp_path / "b")
    record = read_install_record(tmp_path / "b")
    assert record is not None and record["date"] == "2026-05-06T07:08:09Z"
    assert "unpacked_size" in json.loads((mirror.root / "b10" / "manifest.json").read_text()
                                         )["assets"][0]


def test_a_comment_naming_two_tags_is_refused(mirror: Mirror) -> None:
    mirror.release("b9", comment=f"ember b8 b9 commit {COMMIT}")
    with pytest.raises(IntegrityError, match=r"does not name b9 alone \(it names b8, b9\)"):
        mirror.fetch()


def test_a_release_directory_signature_must_name_its_manifest_tag(mirror: Mirror) -> None:
    rel = mirror.release("b9", comment=f"ember b8 commit {COMMIT}")
    with pytest.raises(IntegrityError, match="does not name b9"):
        mirror.fetch(source=str(rel))


# --------------------------------------------------------------------------------------------
# contract 3: SHA256SUMS


def test_a_signed_sums_listing_the_archive_twice_is_refused(mirror: Mirror) -> None:
    rel = mirror.release("b9")
    text = (rel / "SHA256SUMS").read_bytes()
    first = text.splitlines(keepends=True)[0]
    evil = ("0" * 64).encode() + first[64:]  # the same name, another digest
    # the name twice, the last line wins in a lax reader: the archive it vouches for is other
    mirror.release("b9", sums=text + evil)
    with pytest.raises(IntegrityError, match=r"SHA256SUMS:3: '.*tar.gz' is listed twice"):
        mirror.fetch()
    mirror.release("b9", sums=text + first)  # even with the same digest
    with pytest.raises(IntegrityError, match="is listed twice"):
        mirror.fetch()


H = "0123456789abcdef" * 4
SUMS_CASES = [
    (b"", "is empty"),
    (f"{H.upper()}  a.tar.gz\n".encode(), "not a sha256sum line"),
    (f"{H} a.tar.gz\n".encode(), "not a sha256sum line"),
    (f"{H}  a.tar.gz\r\n".encode(), "control character"),
    (f"{H}  a.tar.gz\n\n".encode(), "not a sha256sum line"),
    (f"{H}  sub/a.tar.gz\n".encode(), "'/'"),
    (f"{H}  sub\\a.tar.gz\n".encode(), "backslash"),
    (f"{H}  a\0b\n".encode(), "NUL"),
    (f"{H}  a\x1b[2Jb\n".encode(), "control character"),
    (f"{H}  .\n".encode(), "starting with '.'"),
    (f"{H}  ..\n".encode(), "starting with '.'"),
    (f"{H}  .hidden\n".encode(), "starting with '.'"),
    (f"{H}  \n".encode(), "empty name"),
    (f"{H}  a\n{H} *a\n".encode(), "listed twice"),
    (f"{H}  two words\n".encode(), "is not a release file name"),
    (f"{H}  $(touch x)\n".encode(), "is not a release file name"),
    (f"{H}  -rf\n".encode(), "is not a release file name"),
    (f"{H}  a..b\n".encode(), "is not a release file name"),
    (b"\xff\xfe\n", "not UTF-8"),
]


@pytest.mark.parametrize(("text", "message"), SUMS_CASES)
def test_parse_sums_strict_refuses(text: bytes, message: str) -> None:
    from kiln.release.sums import parse_sums_strict

    with pytest.raises(IntegrityError, match=message):
        parse_sums_strict(text, source="SHA256SUMS")


def test_parse_sums_strict_reads_both_forms() -> None:
    from kiln.release.sums import parse_sums_strict

    assert parse_sums_strict(f"{H}  a.tar.gz\n{H} *b.zip".encode(), source="S") == {
        "a.tar.gz": H, "b.zip": H}


# --------------------------------------------------------------------------------------------
# contract 5: tags and names


@pytest.mark.parametrize("latest", [b"b3\n\n", b"b3 \n", b" b3", b"../b3\n", b"b1234567890\n",
                                    b"b3\r\n", b"B3\n", "b\u0663\n".encode()])
def test_a_latest_that_is_not_exactly_a_tag_is_refused(mirror: Mirror, latest: bytes) -> None:
    mirror.release("b3")
    (mirror.root / "latest").write_bytes(latest)
    with pytest.raises(IntegrityError, match="not a release tag") as exc:
        mirror.fetch()
    assert exc.value.exit_code == 12


def test_a_latest_without_newline_is_a_tag(mirror: Mirror) -> None:
    mirror.release("b3")
    (mirror.root / "latest").write_bytes(b"b3")
    assert mirror.fetch().tag == "b3"  # type: ignore[attr-defined]


@pytest.mark.parametrize("tag", ["../b3", "b3/..", "b3\n", "b", "b1234567890", "3"])
def test_a_bad_tag_argument_is_a_usage_error(mirror: Mirror, tag: str) -> None:
    mirror.release("b3")
    with pytest.raises(ConfigError, match="neither 'latest' nor a release tag") as exc:
        mirror.fetch(tag)
    assert exc.value.exit_code == 2


@pytest.mark.parametrize("name", ["../../evil.tar.gz", ".hidden.tar.gz", "a b.tar.gz",
                                  "-rf.tar.gz", "a..b.tar.gz"])
def test_an_asset_name_that_is_not_a_file_name_is_refused(mirror: Mirror, name: str) -> None:
    rel = mirror.release("b3", name=name)
    # SHA256SUMS lists only the manifest: the manifest's asset name is what is checked here
    mirror.resign("b3", {"manifest.json": sha256_file(rel / "manifest.json")})
    with pytest.raises(IntegrityError, match="is not a release file name"):
        mirror.fetch()


# --------------------------------------------------------------------------------------------
# contract 4 and 8 through install(): the previous install stays


def test_a_hostile_signed_archive_leaves_the_previous_install(mirror: Mirror,
                                                              tmp_path: Path) -> None:
    prefix = tmp_path / "ember"
    mirror.release("b8")
    do_install(mirror, prefix)
    before = snapshot(prefix)
    top = "ember-b9-bin-ubuntu-x64"
    mirror.release("b9", members=[*cli_members(top), M(f"{top}/dev", kind="chr")])
    with pytest.raises(IntegrityError, match="'ember-b9-bin-ubuntu-x64/dev' is a device"):
        do_install(mirror, prefix)
    assert snapshot(prefix) == before and leftovers(prefix) == []


def test_more_content_than_the_signed_unpacked_size_is_refused(mirror: Mirror,
                                                               tmp_path: Path) -> None:
    mirror.release("b9", unpacked=10)
    with pytest.raises(IntegrityError, match=r"unpacks to more than the 10 bytes its signed "
                                             r"record says"):
        do_install(mirror, tmp_path / "ember")
    assert not (tmp_path / "ember").exists() and leftovers(tmp_path / "ember") == []


def test_a_record_member_in_the_archive_is_replaced_not_followed(mirror: Mirror,
                                                                 tmp_path: Path) -> None:
    top = "ember-b9-bin-ubuntu-x64"
    mirror.release("b9", members=[*cli_members(top), M(f"{top}/target", b"keep"),
                                  M(f"{top}/.ember-install.json", kind="link",
                                    target="target")])
    do_install(mirror, tmp_path / "ember")
    assert (tmp_path / "ember" / "target").read_bytes() == b"keep"
    assert not (tmp_path / "ember" / ".ember-install.json").is_symlink()
    record = read_install_record(tmp_path / "ember")
    assert record is not None and record["files"] == ["bin/ember-cli", "lib/libember.so.0",
                                                      "target"]


# --------------------------------------------------------------------------------------------
# contract 2 and 9: HTTP


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    length: int | None = -1  # -1: the body's; None: no Content-Length (closed to end it)
    headers: dict[str, str] = field(default_factory=dict)
    cut: int | None = None  # close the connection after this many bytes of the body


Route = Callable[[str | None], Reply]


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    routes: dict[str, Route]
    log: list[tuple[str, str | None]]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # quiet
        return

    def do_GET(self) -> None:
        name = self.path.lstrip("/")
        rng = self.headers.get("Range")
        self.server.log.append((name, rng))
        route = self.server.routes.get(name)
        reply = route(rng) if route else Reply(status=404, body=b"no")
        if reply.length is None:
            self.protocol_version = "HTTP/1.0"
        self.send_response(reply.status)
        for k, v in reply.headers.items():
            self.send_header(k, v)
        if reply.length is not None:
            n = len(reply.body) if reply.length == -1 else reply.length
            self.send_header("Content-Length", str(n))
        self.end_headers()
        body = reply.body if reply.cut is None else reply.body[:reply.cut]
        self.wfile.write(body)
        self.wfile.flush()
        if reply.cut is not None or reply.length is None:
            self.connection.shutdown(socket.SHUT_WR)
            self.close_connection = True


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.routes, srv.log = {}, []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)


def url(srv: _Server, name: str) -> str:
    host, port = srv.server_address[:2]
    return f"http://{host}:{port}/{name}"


FAST = Fetcher(timeout=5, retries=1, backoff=0)


def test_416_without_a_partial_file_is_a_clear_error(server: _Server, tmp_path: Path) -> None:
    server.routes["a.tar.gz"] = lambda rng: Reply(status=416, body=b"",
                                                  headers={"Content-Range": "bytes */0"})
    with pytest.raises(InstallError, match=r"a.tar.gz: HTTP 416") as exc:
        FAST.download(url(server, "a.tar.gz"), tmp_path / "a.part", size=100)
    assert exc.value.exit_code == 11
    assert not (tmp_path / "a.part").exists()


def test_416_for_a_stale_partial_starts_over_once(server: _Server, tmp_path: Path) -> None:
    body = b"x" * 100

    def route(rng: str | None) -> Reply:
        return Reply(status=416) if rng else Reply(body=body)

    server.routes["a.tar.gz"] = route
    (tmp_path / "a.part").write_bytes(b"y" * 40)
    FAST.download(url(server, "a.tar.gz"), tmp_path / "a.part", size=100)
    assert (tmp_path / "a.part").read_bytes() == body
    assert [r for _n, r in server.log] == ["bytes=40-", None]
    # a server that answers 416 even without a range: an error, not a loop
    server.routes["a.tar.gz"] = lambda rng: Reply(status=416)
    (tmp_path / "b.part").write_bytes(b"y" * 40)
    with pytest.raises(InstallError, match="HTTP 416"):
        FAST.download(url(server, "a.tar.gz"), tmp_path / "b.part", size=100)


@pytest.mark.parametrize("length", [-1, None], ids=["content-length", "close-delimited"])
def test_a_body_longer_than_the_signed_size_is_refused(server: _Server, tmp_path: Path,
                                                       length: int | None) -> None:
    server.routes["a.tar.gz"] = lambda rng: Reply(body=b"x" * 300_000, length=length)
    with pytest.raises(IntegrityError, match=r"a.tar.gz is longer than the 1000 bytes its "
                                             r"signed record says") as exc:
        FAST.download(url(server, "a.tar.gz"), tmp_path / "a.part", size=1000)
    assert exc.value.exit_code == 12
    assert not (tmp_path / "a.part").exists()


def test_a_local_file_longer_than_the_signed_size_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.tar.gz").write_bytes(b"x" * 5000)
    with pytest.raises(IntegrityError, match="is longer than the 1000 bytes its signed"):
        Fetcher().download(str(tmp_path / "a.tar.gz"), tmp_path / "a.part", size=1000)
    assert not (tmp_path / "a.part").exists()


def test_a_range_answer_for_other_bytes_is_refused(server: _Server, tmp_path: Path) -> None:
    server.routes["a.tar.gz"] = lambda rng: Reply(
        status=206, body=b"x" * 60, headers={"Content-Range": "bytes 0-59/100"})
    (tmp_path / "a.part").write_bytes(b"y" * 40)
    with pytest.raises(InstallError, match="asked for the bytes from 40"):
        FAST.download(url(server, "a.tar.gz"), tmp_path / "a.part", size=100)


@pytest.mark.parametrize("status", [403, 404, 416, 500, 503, 301])
def test_http_errors_on_a_release_file_are_clear(server: _Server, status: int) -> None:
    server.routes["r/SHA256SUMS"] = lambda rng: Reply(status=status, body=b"nope")
    with pytest.raises(InstallError, match=f"SHA256SUMS: HTTP {status}") as exc:
        fetch_release(url(server, "r/"), "latest", pubkey=None, fetcher=FAST,
                      insecure_skip_signature=True)
    assert exc.value.exit_code == 11


def test_a_connection_closed_mid_body_is_a_transport_error(server: _Server) -> None:
    server.routes["r/SHA256SUMS"] = lambda rng: Reply(body=b"x" * 1000, cut=100)
    with pytest.raises(InstallError, match="broke off") as exc:
        fetch_release(url(server, "r/"), "latest", pubkey=None, fetcher=FAST,
                      insecure_skip_signature=True)
    assert exc.value.exit_code == 11


CAPS = [("latest", 256), ("r/SHA256SUMS", 1 << 20), ("r/SHA256SUMS.minisig", 4 << 10),
        ("r/manifest.json", 4 << 20)]


@pytest.mark.parametrize(("name", "cap"), CAPS, ids=[c[0] for c in CAPS])
@pytest.mark.parametrize("length", [-1, None], ids=["content-length", "close-delimited"])
def test_small_release_files_are_capped(server: _Server, tmp_path: Path, name: str, cap: int,
                                        length: int | None) -> None:
    secret, pub = keypair()
    sums = f"{H}  manifest.json\n".encode()
    good = {"latest": b"b1\n", "r/SHA256SUMS": sums,
            "r/SHA256SUMS.minisig": sign(secret, sums, "ember b1"),
            "r/manifest.json": b"{}"}
    for n, data in good.items():
        server.routes[n] = (lambda d: lambda rng: Reply(body=d))(data)
    # too long, yet what a lax reader would take: the start is the real file
    big = good[name] + b" " * cap
    server.routes[name] = lambda rng: Reply(body=big, length=length)
    root = url(server, "" if name == "latest" else "r/")
    with pytest.raises(IntegrityError, match=f"is larger than {cap} bytes") as exc:
        fetch_release(root, "latest", pubkey=pub, fetcher=FAST)
    assert exc.value.exit_code == 12
