"""``install.sh`` against hostile releases and mirrors, run with dash and with bash.

Each test makes small signed releases by hand (tar.gz or zip archives with chosen members,
``manifest.json``, ``SHA256SUMS`` signed with a throwaway minisign key whose trusted comment
names tag, commit and date), serves them over HTTP on 127.0.0.1 from a server that can
misbehave (endless bodies with or without a Content-Length) and runs the rendered script.
Every refusal must name what is wrong, exit with the documented code and leave a previous
install byte-for-byte as it was, with no staging directory or partial download behind.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.server
import io
import json
import os
import platform
import re
import shutil
import subprocess
import tarfile
import threading
import urllib.parse
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ember_project import render

from kiln.package.records import AssetRecord, Tool, Verification
from kiln.release.manifest import ReleaseAsset, ReleaseManifest

pytestmark = pytest.mark.integration

SHELLS = [s for s in ("dash", "bash") if shutil.which(s)]
TAR_ID = "here-x64"
ZIP_ID = "here-zip-x64"
COMMIT = "c" * 40
DATE = "2026-03-04T05:06:07Z"

if platform.system() != "Linux" or platform.machine() != "x86_64" \
        or platform.libc_ver()[0] != "glibc":
    pytest.skip("the test releases hold builds for Linux x86_64 with glibc",
                allow_module_level=True)
if shutil.which("minisign") is None:
    pytest.skip("minisign is not installed", allow_module_level=True)


# --------------------------------------------------------------------------------------------
# archives


def _file(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def _special(name: str, kind: bytes, *, link: str = "", mode: int = 0o644) -> tuple[
        tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, mode
    if kind == tarfile.CHRTYPE:  # the numbers of /dev/null
        info.devmajor, info.devminor = 1, 3
    return info, b""


def good_members(top: str, tag: str) -> list[tuple[tarfile.TarInfo, bytes]]:
    d = tarfile.TarInfo(top)
    d.type, d.mode = tarfile.DIRTYPE, 0o755
    b = tarfile.TarInfo(f"{top}/bin")
    b.type, b.mode = tarfile.DIRTYPE, 0o755
    return [(d, b""), (b, b""),
            _file(f"{top}/bin/ember-cli", f"#!/bin/sh\necho ember {tag}\n".encode(), 0o755),
            _file(f"{top}/README", b"ember\n")]


def make_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> int:
    """Write the archive; return the size of its regular files."""
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return sum(i.size for i, _d in members if i.isreg())


def make_zip(path: Path, members: list[tuple[str, int, bytes]]) -> int:
    """(name, unix mode with file type, data) members; returns the size of the files."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, mode, data in members:
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.external_attr = mode << 16
            info.create_system = 3
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return sum(len(d) for _n, m, d in members if (m & 0o170000) == 0o100000)


# --------------------------------------------------------------------------------------------
# releases


def record(name: str, entry_id: str, tag: str, size: int, sha: str) -> AssetRecord:
    values = dict(name=name, kind="archive", entry_id=entry_id, os="linux", arch="x86_64",
                  backend="cpu", backend_version=None, libc="glibc", libc_floor="2.17",
                  min_os=None, cpu_baseline="x86-64", cpu_dispatch=(), gpu_targets=(),
                  min_driver=None, build_number=int(tag[1:]), commit=COMMIT, size=size,
                  toolchain=(Tool(name="zig", version="0.17.1"),),
                  sha256=sha, verification=Verification(method="native", ok=True,
                                                        detail="made by the test"))
    if "unpacked_size" in {f.name for f in dataclasses.fields(AssetRecord)}:
        values["unpacked_size"] = 0
    return AssetRecord(**values)  # type: ignore[arg-type]


def manifest_of(tag: str, records: list[AssetRecord]) -> ReleaseManifest:
    return ReleaseManifest(project="ember", tag=tag, build_number=int(tag[1:]), commit=COMMIT,
                           date=DATE, base_url="",
                           assets=tuple(ReleaseAsset(record=r, url=r.name) for r in records),
                           missing=(), disabled=())


@dataclass
class Key:
    secret: Path
    public: Path

    def sign(self, sums: Path, comment: str) -> None:
        subprocess.run(["minisign", "-S", "-s", str(self.secret), "-m", str(sums), "-x",
                        str(sums) + ".minisig", "-t", comment], check=True,
                       capture_output=True)


@dataclass
class Release:
    directory: Path
    tag: str
    asset: str

    @property
    def archive(self) -> Path:
        return self.directory / self.asset


def publish(root: Path, key: Key, tag: str, *, kind: str = "tar",
            members: list[tuple[tarfile.TarInfo, bytes]] | None = None,
            zip_members: list[tuple[str, int, bytes]] | None = None,
            unpacked: int | None = None,
            sums_lines: Callable[[list[str]], list[str]] | None = None,
            comment: str | None = None, latest: bool = True) -> Release:
    """A signed release ``tag`` under the mirror ``root``; ``latest`` names it."""
    rel = root / tag
    rel.mkdir(parents=True)
    entry = TAR_ID if kind == "tar" else ZIP_ID
    top = f"ember-{tag}-bin-{entry}"
    if kind == "tar":
        asset = f"{top}.tar.gz"
        files = make_tar(rel / asset, members if members is not None
                         else good_members(top, tag))
    else:
        asset = f"{top}.zip"
        files = make_zip(rel / asset, zip_members if zip_members is not None else [
            (f"{top}/bin/ember-cli", 0o100755, f"#!/bin/sh\necho ember {tag}\n".encode())])
    data = (rel / asset).read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    rec = record(asset, entry, tag, len(data), sha)
    doc = manifest_of(tag, [rec]).to_json()
    doc["assets"][0]["unpacked_size"] = files if unpacked is None else unpacked
    (rel / "manifest.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n",
                                       encoding="utf-8")
    write_index(key, rel, doc)
    lines = [f"{hashlib.sha256((rel / n).read_bytes()).hexdigest()}  {n}"
             for n in sorted((asset, *RELEASE_FILES))]
    if sums_lines is not None:
        lines = sums_lines(lines)
    (rel / "SHA256SUMS").write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
    key.sign(rel / "SHA256SUMS", comment if comment is not None
             else f"ember {tag} commit {COMMIT} date {DATE}")
    if latest:
        (root / "latest").write_text(tag + "\n", encoding="utf-8")
    return Release(directory=rel, tag=tag, asset=asset)


def write_index(key: Key, rel: Path, doc: dict[str, Any]) -> None:
    """The release's index.json, as ``kiln release`` lays it out, made from the manifest
    ``doc`` (whatever it holds: a test may have broken it on purpose), and its signature."""
    assets = []
    for a in doc["assets"]:
        item = {"id": a["entry_id"], "file": a["name"], "kind": a["kind"], "url": a["url"],
                "size": a["size"], "sha256": a["sha256"], "backend": a["backend"],
                "backend_version": a["backend_version"], "distro": "ubuntu",
                "scope": "general", "verification": a["verification"]["method"],
                "floors": {}, "properties": [],
                "record": {k: v for k, v in a.items() if k != "url"}}
        if "unpacked_size" in a:
            item["unpacked_size"] = a["unpacked_size"]
        assets.append(item)
    index = {"schema": "kiln-index/1", "project": "ember", "kind": "release",
             "version": doc["build_number"], "expires": "2126-01-01T00:00:00Z",
             "releases": [{"tag": doc["tag"], "date": doc["date"], "commit": doc["commit"],
                           "assets": assets, "disabled": [], "missing": []}]}
    (rel / "index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n",
                                    encoding="utf-8")
    key.sign(rel / "index.json",
             f"ember release-index version {doc['build_number']} expires 2126-01-01T00:00:00Z")


RELEASE_FILES = ("manifest.json", "index.json", "index.json.minisig")


def resign(key: Key, rel: Release, doc: dict[str, Any]) -> None:
    """Write ``doc`` as the release's manifest.json (and the index made from it), then
    SHA256SUMS and its signature."""
    (rel.directory / "manifest.json").write_text(json.dumps(doc, indent=2, sort_keys=True)
                                                 + "\n", encoding="utf-8")
    write_index(key, rel.directory, doc)
    (rel.directory / "SHA256SUMS").write_text("".join(
        f"{hashlib.sha256((rel.directory / n).read_bytes()).hexdigest()}  {n}\n"
        for n in sorted((rel.asset, *RELEASE_FILES))), encoding="utf-8")
    key.sign(rel.directory / "SHA256SUMS", f"ember {rel.tag} commit {COMMIT} date {DATE}")


# --------------------------------------------------------------------------------------------
# a server that can misbehave


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    root: Path
    # file name -> "zeros" (an endless body, no Content-Length), "zeros-announced" (a huge
    # Content-Length, then zeros)
    faults: dict[str, str]
    log: list[str]
    agents: set[str]
    sent: dict[str, int]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        return

    def _zeros(self, name: str, announced: bool) -> None:
        self.send_response(200)
        if announced:
            self.send_header("Content-Length", str(1 << 40))
        self.end_headers()
        chunk = b"\0" * (1 << 16)
        # At most 256 MiB: enough to tell a capped client from one that reads it all.
        try:
            for _ in range(4096):
                self.wfile.write(chunk)
                self.server.sent[name] = self.server.sent.get(name, 0) + len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def do_GET(self) -> None:
        srv = self.server
        name = urllib.parse.unquote(urllib.parse.urlparse(self.path).path).lstrip("/")
        srv.log.append(name)
        srv.agents.add((self.headers.get("User-Agent") or "").split("/")[0])
        fault = srv.faults.get(name, "")
        if fault in ("zeros", "zeros-announced"):
            self._zeros(name, fault == "zeros-announced")
            return
        path = (srv.root / name).resolve()
        if not path.is_file() or srv.root.resolve() not in path.parents:
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if m and int(m.group(1)) < len(data):
            start = int(m.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@dataclass
class Mirror:
    root: Path
    server: _Server
    key: Key
    script: Path
    shell: str
    tmp: Path
    # a directory put first on PATH (a tar that is bsdtar, as on macOS)
    tools: Path | None = None
    tools_only: bool = False  # PATH is only that directory

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/"

    @property
    def prefix(self) -> Path:
        return self.tmp / "inst" / "ember"

    @property
    def cache(self) -> Path:
        return self.tmp / "cache" / "ember-install"

    def run(self, *args: str, from_url: str | None = None) -> subprocess.CompletedProcess[str]:
        path = os.environ.get("PATH", "/usr/bin:/bin")
        if self.tools is not None:
            path = str(self.tools) if self.tools_only else f"{self.tools}:{path}"
        env = {"PATH": path, "HOME": str(self.tmp / "home"),
               "LANG": "C", "XDG_CACHE_HOME": str(self.tmp / "cache"),
               "TMPDIR": str(self.tmp / "work")}
        for d in ("home", "work"):
            (self.tmp / d).mkdir(exist_ok=True)
        argv = [self.shell, str(self.script), "--from", from_url or self.url, "--prefix",
                str(self.prefix), *args]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300,
                              check=False)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Key:
    d = tmp_path_factory.mktemp("key")
    subprocess.run(["minisign", "-G", "-W", "-f", "-s", str(d / "k"), "-p", str(d / "k.pub")],
                   check=True, capture_output=True)
    return Key(secret=d / "k", public=d / "k.pub")


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory, key: Key) -> Path:
    # The table this script carries: one tar.gz and one zip build for this machine.
    records = [record(f"ember-b1-bin-{TAR_ID}.tar.gz", TAR_ID, "b1", 1, "0" * 64),
               record(f"ember-b1-bin-{ZIP_ID}.zip", ZIP_ID, "b1", 1, "0" * 64)]
    path = tmp_path_factory.mktemp("script") / "install.sh"
    path.write_text(render(manifest_of("b1", records), key.public.read_text(encoding="utf-8"),
                           "https://mirror.invalid/")["install.sh"], encoding="utf-8")
    return path


@pytest.fixture(params=SHELLS)
def mirror(request: pytest.FixtureRequest, tmp_path: Path, key: Key,
           script: Path) -> Iterator[Mirror]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.root, server.faults, server.log, server.sent = tmp_path / "mirror", {}, [], {}
    server.agents = set()
    server.root.mkdir()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield Mirror(root=server.root, server=server, key=key, script=script,
                     shell=request.param, tmp=tmp_path)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# --------------------------------------------------------------------------------------------
# helpers


def snapshot(prefix: Path) -> dict[str, tuple[int, str]]:
    out = {}
    for p in sorted(prefix.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(prefix))] = (
            st.st_mode, os.readlink(p) if p.is_symlink() else
            hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "")
    return out


def installed(m: Mirror, tag: str = "b1", *args: str) -> dict[str, tuple[int, str]]:
    """Install a good release ``tag`` first; return its snapshot."""
    publish(m.root, m.key, tag)
    done = m.run("--tag", tag, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"installed ember {tag}" in done.stdout
    return snapshot(m.prefix)


def refused(m: Mirror, before: dict[str, tuple[int, str]],
            done: subprocess.CompletedProcess[str], code: int, message: str) -> None:
    """The run ended with ``code`` and ``message``; nothing changed or stayed behind."""
    text = done.stdout + done.stderr
    assert done.returncode == code, text
    assert message in done.stderr, text
    assert "hint:" in done.stderr, text
    assert snapshot(m.prefix) == before
    # Only the install itself beside the prefix: no staging or old copy.
    assert sorted(p.name for p in m.prefix.parent.iterdir()) == ["ember"]
    if m.cache.exists():
        assert not [p.name for p in m.cache.iterdir() if p.name.endswith(".part")]
    assert not list((m.tmp / "work").iterdir())


# --------------------------------------------------------------------------------------------
# 1. archive members


def _hostile_tar(kind: str, top: str) -> list[tuple[tarfile.TarInfo, bytes]]:
    base = good_members(top, "b2")
    if kind == "device":
        return [*base, _special(f"{top}/bin/null", tarfile.CHRTYPE)]
    if kind == "setuid":
        return [*base, _file(f"{top}/bin/su", b"#!/bin/sh\n", 0o4755)]
    if kind == "setgid":
        return [*base, _file(f"{top}/bin/sg", b"#!/bin/sh\n", 0o2755)]
    if kind == "fifo":
        return [*base, _special(f"{top}/fifo", tarfile.FIFOTYPE)]
    if kind == "symlink-absolute":
        return [*base, _special(f"{top}/passwd", tarfile.SYMTYPE, link="/etc/passwd")]
    if kind == "symlink-up":
        return [*base, _special(f"{top}/bin/up", tarfile.SYMTYPE, link="../../../outside")]
    if kind == "symlink-chain":
        # Each link stays inside by its text; through sub/b (-> ../x) the second one leaves.
        x, sub = tarfile.TarInfo(f"{top}/x"), tarfile.TarInfo(f"{top}/sub")
        x.type = sub.type = tarfile.DIRTYPE
        x.mode = sub.mode = 0o755
        return [*base, (x, b""), (sub, b""),
                _special(f"{top}/sub/b", tarfile.SYMTYPE, link="../x"),
                _special(f"{top}/a", tarfile.SYMTYPE, link="sub/b/../../..")]
    if kind == "below-file":
        return [*base, _file(f"{top}/README/inside", b"x\n")]
    if kind == "hardlink":
        return [*base, _special(f"{top}/bin/hl", tarfile.LNKTYPE, link=f"{top}/README")]
    if kind == "dotdot":
        return [*base, _file(f"{top}/../../escaped", b"x\n")]
    if kind == "absolute":
        return [*base, _file("/tmp/ember-hostile-absolute", b"x\n")]
    if kind == "duplicate":
        return [*base, _file(f"{top}/README", b"second\n")]
    if kind == "through-symlink":
        return [*base, _special(f"{top}/lib", tarfile.SYMTYPE, link="bin"),
                _file(f"{top}/lib/ember-cli", b"#!/bin/sh\necho replaced\n", 0o755)]
    raise AssertionError(kind)


TAR_CASES = [
    ("device", "is a device"),
    ("setuid", "setuid, setgid or sticky"),
    ("setgid", "setuid, setgid or sticky"),
    ("fifo", "is a FIFO"),
    ("symlink-absolute", "points to the absolute path /etc/passwd"),
    ("symlink-up", "points outside the archive"),
    ("symlink-chain", "resolves outside the archive"),
    ("hardlink", "is a hard link"),
    ("dotdot", "has a .. component"),
    ("absolute", "is an absolute path"),
    ("duplicate", "is in the archive twice"),
    ("through-symlink", "would be written through the symlink"),
    ("below-file", "would be written below the file"),
]


@pytest.mark.parametrize(("kind", "message"), TAR_CASES, ids=[c[0] for c in TAR_CASES])
def test_hostile_tar_members_are_refused(mirror: Mirror, kind: str, message: str) -> None:
    before = installed(mirror)
    top = f"ember-b2-bin-{TAR_ID}"
    publish(mirror.root, mirror.key, "b2", members=_hostile_tar(kind, top))
    done = mirror.run("--tag", "b2")
    refused(mirror, before, done, 12, message)
    assert not Path("/tmp/ember-hostile-absolute").exists()
    assert not (mirror.tmp / "escaped").exists()


@pytest.fixture
def bsdtar(mirror: Mirror) -> Mirror:
    found = shutil.which("bsdtar")
    if found is None:
        pytest.skip("bsdtar is not installed (libarchive-tools)")
    tools = mirror.tmp / "bsdtar-tools"
    tools.mkdir()
    (tools / "tar").symlink_to(found)
    mirror.tools = tools
    return mirror


@pytest.mark.parametrize(("kind", "message"), TAR_CASES, ids=[c[0] for c in TAR_CASES])
def test_hostile_tar_members_are_refused_with_bsdtar(bsdtar: Mirror, kind: str,
                                                     message: str) -> None:
    # bsdtar (macOS, the BSDs) lists members in another layout than GNU tar.
    test_hostile_tar_members_are_refused(bsdtar, kind, message)


def test_a_good_tar_installs_with_bsdtar(bsdtar: Mirror) -> None:
    top = f"ember-b1-bin-{TAR_ID}"
    members = good_members(top, "b1")
    members[0][0].uname = members[0][0].gname = "bob"  # an owner name of three letters
    publish(bsdtar.root, bsdtar.key, "b1", members=members)
    done = bsdtar.run("--tag", "b1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (bsdtar.prefix / "bin" / "ember-cli").stat().st_mode & 0o7777 == 0o755


def test_modes_are_masked_and_never_the_archives_owner(mirror: Mirror) -> None:
    top = f"ember-b1-bin-{TAR_ID}"
    members = good_members(top, "b1")
    members[2][0].mode = 0o777  # bin/ember-cli, world-writable in the archive
    members[2][0].uid = members[2][0].gid = 4242
    members[3][0].mode = 0o666
    members[1][0].mode = 0o777
    publish(mirror.root, mirror.key, "b1", members=members)
    done = mirror.run("--tag", "b1")
    assert done.returncode == 0, done.stdout + done.stderr
    cli = mirror.prefix / "bin" / "ember-cli"
    assert cli.stat().st_mode & 0o7777 == 0o755
    assert (mirror.prefix / "README").stat().st_mode & 0o7777 == 0o644
    assert (mirror.prefix / "bin").stat().st_mode & 0o7777 == 0o755
    assert cli.stat().st_uid == os.getuid()


ZIP_CASES = [
    ("symlink", 0o120777, "/etc/passwd", "points to the absolute path /etc/passwd"),
    ("setuid", 0o104755, "#!/bin/sh\n", "setuid, setgid or sticky"),
    ("dotdot", 0o100644, "x", "has a .. component"),
    ("device", 0o020644, "", "is a device"),
]


@pytest.mark.parametrize(("kind", "mode", "data", "message"), ZIP_CASES,
                         ids=[c[0] for c in ZIP_CASES])
def test_hostile_zip_members_are_refused(mirror: Mirror, kind: str, mode: int, data: str,
                                         message: str) -> None:
    before = installed(mirror)
    top = f"ember-b2-bin-{ZIP_ID}"
    name = f"{top}/../../escaped" if kind == "dotdot" else f"{top}/bin/{kind}"
    publish(mirror.root, mirror.key, "b2", kind="zip", zip_members=[
        (f"{top}/bin/ember-cli", 0o100755, b"#!/bin/sh\necho b2\n"),
        (name, mode, data.encode())])
    done = mirror.run("--tag", "b2")
    refused(mirror, before, done, 12, message)
    assert not (mirror.tmp / "escaped").exists()


def test_a_good_zip_installs(mirror: Mirror) -> None:
    publish(mirror.root, mirror.key, "b1", kind="zip")
    done = mirror.run("--tag", "b1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (mirror.prefix / "bin" / "ember-cli").stat().st_mode & 0o777 == 0o755


# --------------------------------------------------------------------------------------------
# 2. download caps


def test_an_endless_archive_stops_at_its_signed_size(mirror: Mirror) -> None:
    before = installed(mirror)
    rel = publish(mirror.root, mirror.key, "b2")
    mirror.server.faults[f"b2/{rel.asset}"] = "zeros"
    done = mirror.run("--tag", "b2")
    size = rel.archive.stat().st_size
    refused(mirror, before, done, 12, f"is longer than the {size} bytes its signed record says")
    # The client stopped reading: what the server got into the socket before it noticed is
    # bounded by socket buffers, far from the 256 MiB it would send.
    assert mirror.server.sent.get(f"b2/{rel.asset}", 0) < 64 << 20


def test_an_announced_oversized_archive_is_refused(mirror: Mirror) -> None:
    before = installed(mirror)
    rel = publish(mirror.root, mirror.key, "b2")
    mirror.server.faults[f"b2/{rel.asset}"] = "zeros-announced"
    done = mirror.run("--tag", "b2")
    refused(mirror, before, done, 12, "bytes its signed record says")
    assert mirror.server.sent.get(f"b2/{rel.asset}", 0) < 64 << 20


@pytest.mark.parametrize(("name", "cap"), [("b2/SHA256SUMS", 1048576),
                                           ("b2/SHA256SUMS.minisig", 4096),
                                           ("b2/index.json", 16777216), ("latest", 256)])
def test_endless_release_files_are_capped(mirror: Mirror, name: str, cap: int) -> None:
    before = installed(mirror)
    publish(mirror.root, mirror.key, "b2")
    mirror.server.faults[name] = "zeros"
    done = mirror.run("--tag", "latest" if name == "latest" else "b2")
    refused(mirror, before, done, 12, "is larger than")
    assert str(cap) in done.stderr
    assert mirror.server.sent.get(name, 0) < 64 << 20


def test_sha256sums_is_fetched_once(mirror: Mirror) -> None:
    publish(mirror.root, mirror.key, "b1")
    done = mirror.run("--tag", "b1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert mirror.server.log.count("b1/SHA256SUMS") == 1, mirror.server.log
    assert mirror.server.log.count("b1/index.json") == 1, mirror.server.log


def test_a_partial_download_resumes_within_the_cap(mirror: Mirror) -> None:
    rel = publish(mirror.root, mirror.key, "b1")
    data = rel.archive.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    mirror.cache.mkdir(parents=True)
    (mirror.cache / f"{sha}-{rel.asset}.part").write_bytes(data[:len(data) // 2])
    done = mirror.run("--tag", "b1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (mirror.cache / f"{sha}-{rel.asset}").read_bytes() == data


def test_a_leftover_longer_than_the_signed_size_is_not_resumed(mirror: Mirror) -> None:
    rel = publish(mirror.root, mirror.key, "b1")
    data = rel.archive.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    mirror.cache.mkdir(parents=True)
    (mirror.cache / f"{sha}-{rel.asset}.part").write_bytes(data + b"\0" * 100)
    done = mirror.run("--tag", "b1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (mirror.cache / f"{sha}-{rel.asset}").read_bytes() == data


@pytest.fixture
def wget_only(mirror: Mirror) -> Mirror:
    """The mirror, with every program on PATH but curl: downloads go through wget."""
    if shutil.which("wget") is None:
        pytest.skip("wget is not installed")
    tools = mirror.tmp / "no-curl"
    tools.mkdir()
    for d in os.environ.get("PATH", "/usr/bin:/bin").split(":"):
        if not d or not Path(d).is_dir():
            continue
        for exe in Path(d).iterdir():
            if exe.name != "curl" and not (tools / exe.name).exists() \
                    and os.access(exe, os.X_OK) and exe.is_file():
                (tools / exe.name).symlink_to(exe)
    mirror.tools, mirror.tools_only = tools, True
    return mirror


def test_wget_downloads_are_capped_too(wget_only: Mirror) -> None:
    before = installed(wget_only)
    rel = publish(wget_only.root, wget_only.key, "b2")
    wget_only.server.faults[f"b2/{rel.asset}"] = "zeros"
    done = wget_only.run("--tag", "b2")
    size = rel.archive.stat().st_size
    refused(wget_only, before, done, 12, f"is longer than the {size} bytes its signed record")
    assert wget_only.server.sent.get(f"b2/{rel.asset}", 0) < 64 << 20
    wget_only.server.faults["b2/SHA256SUMS"] = "zeros"
    refused(wget_only, before, wget_only.run("--tag", "b2"), 12, "is larger than 1048576")
    assert wget_only.server.agents == {"Wget"}


# --------------------------------------------------------------------------------------------
# 3. downgrades


def test_an_older_latest_does_not_replace_a_newer_install(mirror: Mirror) -> None:
    before = installed(mirror, "b9")
    record_text = (mirror.prefix / ".ember-install.json").read_text(encoding="utf-8")
    assert json.loads(record_text)["date"] == DATE
    publish(mirror.root, mirror.key, "b3")  # latest now says b3
    done = mirror.run("--tag", "latest")
    refused(mirror, before, done, 11, "refusing to replace ember b9 with the older b3")
    assert "--allow-downgrade" in done.stderr
    done = mirror.run("--tag", "latest", "--allow-downgrade")
    assert done.returncode == 0, done.stdout + done.stderr
    got = json.loads((mirror.prefix / ".ember-install.json").read_text(encoding="utf-8"))
    assert got["tag"] == "b3" and got["date"] == DATE and got["signed"] is True


def test_the_same_tag_reinstalls_and_a_newer_one_upgrades(mirror: Mirror) -> None:
    installed(mirror, "b3")
    assert mirror.run("--tag", "b3").returncode == 0
    publish(mirror.root, mirror.key, "b10")
    done = mirror.run("--tag", "latest")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((mirror.prefix / ".ember-install.json").read_text())["tag"] == "b10"


# --------------------------------------------------------------------------------------------
# 4. tags, names and --from


def test_a_crafted_tag_runs_nothing(mirror: Mirror) -> None:
    marker = mirror.tmp / "pwned"
    # GNU sed's e flag would run the URL as a command if the tag reached a sed program.
    crafted_from = "{tag} >/dev/null 2>&1; touch " + str(marker) + " #"
    done = mirror.run("--tag", "b1/e;s/x/y", "--dry-run", "--insecure-skip-signature",
                      from_url=crafted_from)
    assert not marker.exists()
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--tag 'b1/e;s/x/y' is not a tag" in done.stderr


@pytest.mark.parametrize("tag", ["b", "b1x", "B1", "b-1", "b1234567890", "b1\n", " b1",
                                 "latest2", "b１"])
def test_malformed_tags_are_refused(mirror: Mirror, tag: str) -> None:
    done = mirror.run("--tag", tag, "--dry-run")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "is not a tag" in done.stderr
    assert mirror.server.log == []


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "mirror.example/ember", "-o/tmp/x",
                                 "http://127.0.0.1/\"x", "file:relative"])
def test_from_must_be_a_url_or_a_directory(mirror: Mirror, url: str) -> None:
    done = mirror.run("--dry-run", from_url=url)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--from" in done.stderr


def test_backend_with_odd_characters_is_refused(mirror: Mirror) -> None:
    done = mirror.run("--backend", "cpu;id", "--dry-run")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--backend 'cpu;id' is not a backend" in done.stderr


@pytest.mark.parametrize(("content", "ok"), [("b2\n", True), ("b2", True), ("b2\n\n", False),
                                             ("b2 \n", False), ("b2;id\n", False),
                                             ("b2/../b1\n", False), ("\nb2\n", False)])
def test_latest_must_hold_exactly_a_tag(mirror: Mirror, content: str, ok: bool) -> None:
    publish(mirror.root, mirror.key, "b2")
    (mirror.root / "latest").write_text(content, encoding="utf-8")
    done = mirror.run("--tag", "latest", "--dry-run")
    if ok:
        assert done.returncode == 0, done.stdout + done.stderr
    else:
        assert done.returncode == 12, done.stdout + done.stderr
        assert "does not hold a tag bN" in done.stderr


def test_a_tag_template_url_is_filled_without_sed(mirror: Mirror) -> None:
    publish(mirror.root, mirror.key, "b2")
    done = mirror.run("--tag", "b2", from_url=mirror.url + "{tag}/")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"ember b2 from {mirror.url}b2/" in done.stdout


def test_the_signed_comment_must_name_the_tag(mirror: Mirror) -> None:
    before = installed(mirror)
    publish(mirror.root, mirror.key, "b2", comment=f"ember b22 commit {COMMIT} date {DATE}")
    refused(mirror, before, mirror.run("--tag", "b2"), 12, "does not name b2")


def test_the_signed_comment_must_name_no_other_tag(mirror: Mirror) -> None:
    before = installed(mirror)
    publish(mirror.root, mirror.key, "b2", comment=f"ember b2 b7 commit {COMMIT} date {DATE}")
    refused(mirror, before, mirror.run("--tag", "b2"), 12, "names b7, not only b2")


def test_the_date_comes_from_the_manifest_when_the_comment_has_none(mirror: Mirror) -> None:
    publish(mirror.root, mirror.key, "b2", comment=f"ember b2 commit {COMMIT}")
    done = mirror.run("--tag", "b2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((mirror.prefix / ".ember-install.json").read_text())["date"] == DATE


def test_an_install_whose_release_cannot_be_read_needs_the_flag(mirror: Mirror) -> None:
    before = installed(mirror, "b3")
    record_path = mirror.prefix / ".ember-install.json"
    record_path.write_text(record_path.read_text().replace('"tag": "b3"', '"tag": "?"'))
    before = snapshot(mirror.prefix)
    publish(mirror.root, mirror.key, "b2")
    refused(mirror, before, mirror.run("--tag", "b2"), 11,
            "cannot tell which release is installed")
    done = mirror.run("--tag", "b2", "--allow-downgrade")
    assert done.returncode == 0, done.stdout + done.stderr


def test_an_index_with_two_records_of_the_archive_is_refused(mirror: Mirror) -> None:
    before = installed(mirror)
    rel = publish(mirror.root, mirror.key, "b2")
    doc = json.loads((rel.directory / "manifest.json").read_text(encoding="utf-8"))
    doc["assets"].append(dict(doc["assets"][0], unpacked_size=1 << 40))
    resign(mirror.key, rel, doc)
    refused(mirror, before, mirror.run("--tag", "b2"), 12, "has 2 records of")


# --------------------------------------------------------------------------------------------
# 5. SHA256SUMS lines


def _dup(lines: list[str]) -> list[str]:
    return [*lines, lines[0]]


def _dup_other_digest(lines: list[str]) -> list[str]:
    return [*lines, "0" * 64 + lines[0][64:]]


SUMS_CASES = [
    ("duplicate", _dup, "is listed twice"),
    ("duplicate-other-digest", _dup_other_digest, "is listed twice"),
    ("upper-case", lambda ls: [ls[0][:64].upper() + ls[0][64:], *ls[1:]],
     "not 64 lower-case hex"),
    ("slash", lambda ls: [*ls, "a" * 64 + "  sub/x"], "holds a / or"),
    ("backslash", lambda ls: [*ls, "a" * 64 + "  sub\\x"], "holds a / or"),
    ("dot", lambda ls: [*ls, "a" * 64 + "  .hidden"], "starts with a dot"),
    ("dotdot", lambda ls: [*ls, "a" * 64 + "  .."], "starts with a dot"),
    ("control", lambda ls: [*ls, "a" * 64 + "  x\ty"], "control character"),
    ("space", lambda ls: [*ls, "a" * 64 + "  x y"], "not a release file name"),
    ("shell", lambda ls: [*ls, "a" * 64 + "  $(id)"], "not a release file name"),
    ("one-space", lambda ls: [ls[0][:64] + " " + ls[0][66:], *ls[1:]], "not <sha256>"),
    ("empty", lambda ls: [], "SHA256SUMS is empty"),
]


@pytest.mark.parametrize(("kind", "edit", "message"), SUMS_CASES,
                         ids=[c[0] for c in SUMS_CASES])
def test_malformed_sha256sums_is_refused(mirror: Mirror, kind: str,
                                         edit: Callable[[list[str]], list[str]],
                                         message: str) -> None:
    before = installed(mirror)
    publish(mirror.root, mirror.key, "b2", sums_lines=edit)
    if kind == "empty":
        (mirror.root / "b2" / "SHA256SUMS").write_bytes(b"")
        mirror.key.sign(mirror.root / "b2" / "SHA256SUMS",
                        f"ember b2 commit {COMMIT} date {DATE}")
    refused(mirror, before, mirror.run("--tag", "b2"), 12, message)


# --------------------------------------------------------------------------------------------
# 6. unpacked size


def test_a_tar_that_unpacks_to_more_than_its_record_is_refused(mirror: Mirror) -> None:
    before = installed(mirror)
    top = f"ember-b2-bin-{TAR_ID}"
    members = [*good_members(top, "b2"), _file(f"{top}/zeros", b"\0" * (32 << 20))]
    publish(mirror.root, mirror.key, "b2", members=members, unpacked=4096)
    done = mirror.run("--tag", "b2")
    refused(mirror, before, done, 12, "unpacks to more than the 4096 bytes its signed record")


def test_a_tar_stream_longer_than_its_listing_is_refused(mirror: Mirror) -> None:
    # The listing is honest, but data hides after the end-of-archive blocks: the stream
    # bound catches what the listing does not show.
    before = installed(mirror)
    top = f"ember-b2-bin-{TAR_ID}"
    rel = publish(mirror.root, mirror.key, "b2", members=good_members(top, "b2"))
    raw = gzip.decompress(rel.archive.read_bytes()) + b"\0" * (8 << 20)
    rel.archive.write_bytes(gzip.compress(raw))
    doc = json.loads((rel.directory / "manifest.json").read_text(encoding="utf-8"))
    doc["assets"][0]["size"] = rel.archive.stat().st_size
    doc["assets"][0]["sha256"] = hashlib.sha256(rel.archive.read_bytes()).hexdigest()
    resign(mirror.key, rel, doc)
    done = mirror.run("--tag", "b2")
    refused(mirror, before, done, 12, "its tar stream is longer than")


def test_a_zip_that_unpacks_to_more_than_its_record_is_refused(mirror: Mirror) -> None:
    before = installed(mirror)
    top = f"ember-b2-bin-{ZIP_ID}"
    publish(mirror.root, mirror.key, "b2", kind="zip", unpacked=4096, zip_members=[
        (f"{top}/bin/ember-cli", 0o100755, b"#!/bin/sh\n"),
        (f"{top}/zeros", 0o100644, b"\0" * (32 << 20))])
    done = mirror.run("--tag", "b2")
    refused(mirror, before, done, 12, "unpacks to more than the 4096 bytes its signed record")


def test_a_release_without_unpacked_size_is_refused(mirror: Mirror) -> None:
    before = installed(mirror)
    rel = publish(mirror.root, mirror.key, "b2")
    doc = json.loads((rel.directory / "manifest.json").read_text(encoding="utf-8"))
    del doc["assets"][0]["unpacked_size"]
    resign(mirror.key, rel, doc)
    refused(mirror, before, mirror.run("--tag", "b2"), 12, "records no unpacked_size")


def test_an_index_not_matching_its_signed_sum_is_refused(mirror: Mirror) -> None:
    before = installed(mirror)
    rel = publish(mirror.root, mirror.key, "b2")
    text = (rel.directory / "index.json").read_text(encoding="utf-8")
    (rel.directory / "index.json").write_text(text.replace('"unpacked_size": ',
                                                           '"unpacked_size": 9'))
    refused(mirror, before, mirror.run("--tag", "b2"), 12,
            "index.json does not match its sha256")
