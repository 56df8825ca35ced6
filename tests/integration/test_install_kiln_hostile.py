"""``kiln install`` (the command, exit codes and messages) against a mirror that misbehaves.

Two releases made by ``kiln release`` on a throwaway repository (signed with a throwaway
minisign key, so the trusted comment carries the release date) and published with ``kiln
publish file://`` are served over HTTP on 127.0.0.1 by a server that can be told to answer
416, 500, a body longer than the file, or a re-signed ``SHA256SUMS`` that lists the archive
twice; and the mirror's ``latest`` can be pointed back at the older release. Every refusal
must be a one-line error with a hint and its documented exit code, never a traceback, and
leave the installed release exactly as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_install_e2e import HERE_ID, _archive, _stand_in
from test_release_cli import Project, git, make_project

from kiln.cli import main
from kiln.release.index import parse_index

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("install-kiln-hostile")]


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    root: Path
    faults: dict[str, str]
    overrides: dict[str, bytes]

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that stops reading an overlong body closes the connection: expected.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # quiet
        return

    def do_GET(self) -> None:
        srv = self.server
        name = urllib.parse.unquote(urllib.parse.urlparse(self.path).path).lstrip("/")
        path = (srv.root / name).resolve()
        fault = srv.faults.get(Path(name).name, "")
        if fault == "416":
            self.send_response(416)
            self.send_header("Content-Range", "bytes */0")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if fault == "500":
            self.send_error(500)
            return
        if name in srv.overrides:
            data = srv.overrides[name]
        elif path.is_file() and srv.root.resolve() in path.parents:
            data = path.read_bytes()
        else:
            self.send_error(404)
            return
        if fault == "longer":
            data += b"\0" * (1 << 20)
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@dataclass
class Mirror:
    server: _Server
    project: Project
    old: str
    new: str

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/"

    @property
    def root(self) -> Path:
        return self.server.root

    def env(self, tmp: Path) -> dict[str, str]:
        home = tmp / "home"
        home.mkdir(parents=True, exist_ok=True)
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
                "LANG": "C.UTF-8", "KILN_CACHE": str(tmp / "kiln-cache"),
                "TMPDIR": str(tmp)}

    def install(self, tmp: Path, *args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        pub = self.project.key.with_suffix(".pub")
        with contextlib.redirect_stderr(err):
            code = main(["install", "--from", self.url, "--pubkey", str(pub), *args],
                        env=self.env(tmp), stdout=out)
        return code, out.getvalue(), err.getvalue()


def _release(project: Project, root: Path, server_root: Path) -> str:
    """Make and publish a release of HEAD with a stand-in ember-cli for this machine."""
    number, head = project.number, project.head
    stage = root / f"stand-in-{number}"
    _stand_in(stage)
    art = root / f"artifacts-{number}"
    _archive(stage, art / HERE_ID, number, head)
    out = root / f"release-{number}"
    code, text, _ = project.kiln(["release", "--artifacts", str(art), "--out", str(out),
                                  "--allow-missing", "*", "--no-git-tag"])
    assert code == 0, text
    code, text, _ = project.kiln(["publish", str(out), "--to", f"file://{server_root}"])
    assert code == 0, text
    return f"b{number}"


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mirror]:
    for tool in ("minisign", "git"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/apt-packages.txt)")
    root = tmp_path_factory.mktemp("install-kiln-hostile")
    server = _Server(("127.0.0.1", 0), _Handler)
    server.root, server.faults, server.overrides = root / "mirror", {}, {}
    server.root.mkdir()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        project = make_project(root / "project")
        old = _release(project, root, server.root)
        (project.repo / "runtime" / "src" / "next.c").write_text("/* next */\n")
        git(project.repo, project.env, "add", "-A")
        git(project.repo, project.env, "commit", "-q", "-m", "ember: next")
        new = _release(project, root, server.root)
        assert (server.root / "latest").read_text(encoding="utf-8") == f"{new}\n"
        yield Mirror(server=server, project=project, old=old, new=new)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def faulty(mirror: Mirror) -> Iterator[Mirror]:
    latest = (mirror.root / "latest").read_bytes()
    mirror.server.faults.clear()
    mirror.server.overrides.clear()
    yield mirror
    mirror.server.faults.clear()
    mirror.server.overrides.clear()
    (mirror.root / "latest").write_bytes(latest)


@pytest.fixture
def indexless(faulty: Mirror, tmp_path: Path) -> Iterator[Mirror]:
    """The mirror without its signed index.json (a mirror published without a key): the
    installers then go by its `latest` file."""
    keep = tmp_path / "kept-index"
    keep.mkdir()
    names = ("index.json", "index.json.minisig")
    for name in names:
        shutil.move(str(faulty.root / name), str(keep / name))
    try:
        yield faulty
    finally:
        for name in names:
            shutil.move(str(keep / name), str(faulty.root / name))


def snapshot(prefix: Path) -> dict[str, str]:
    return {str(p.relative_to(prefix)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(prefix.rglob("*")) if p.is_file()}


def leftovers(prefix: Path) -> list[str]:
    return sorted(p.name for p in prefix.parent.iterdir()
                  if p.name.startswith(f".{prefix.name}.") and not p.name.endswith(".lock"))


def installed(m: Mirror, tmp: Path) -> tuple[Path, dict[str, str]]:
    prefix = tmp / "prefix"
    code, _out, err = m.install(tmp / "first", "--prefix", str(prefix))
    assert code == 0, err
    return prefix, snapshot(prefix)


# --------------------------------------------------------------------------------------------


def test_the_install_record_holds_the_signed_release_date(faulty: Mirror,
                                                          tmp_path: Path) -> None:
    code, out, err = faulty.install(tmp_path, "--prefix", str(tmp_path / "p"), "--json")
    assert code == 0, err
    manifest = json.loads((faulty.root / faulty.new / "manifest.json").read_text())
    comment = (faulty.root / faulty.new / "SHA256SUMS.minisig").read_text().splitlines()[2]
    assert f"date {manifest['date']}" in comment  # signed by kiln release
    assert json.loads(out)["date"] == manifest["date"]
    record = json.loads((tmp_path / "p" / ".ember-install.json").read_text())
    assert record["date"] == manifest["date"] and record["tag"] == faulty.new
    assert all(a["unpacked_size"] > 0 for a in manifest["assets"])


def test_latest_pointing_back_in_time_is_refused(indexless: Mirror, tmp_path: Path) -> None:
    faulty = indexless
    prefix, before = installed(faulty, tmp_path)
    (faulty.root / "latest").write_text(f"{faulty.old}\n", encoding="utf-8")
    code, _out, err = faulty.install(tmp_path / "second", "--prefix", str(prefix))
    assert code == 11, err
    assert (f"refusing to replace ember {faulty.new} (installed in {prefix}) with the older "
            f"{faulty.old} (the mirror's 'latest' or --tag points back in time); pass "
            "--allow-downgrade to install it anyway") in err, err
    assert "Traceback" not in err
    assert snapshot(prefix) == before and leftovers(prefix) == []
    code, out, err = faulty.install(tmp_path / "third", "--prefix", str(prefix),
                                    "--allow-downgrade")
    assert code == 0, err
    assert (f"installed ember {faulty.old} ({HERE_ID}) into {prefix} (replaced {faulty.new} "
            f"{HERE_ID}, an older release: --allow-downgrade)") in out, out


FAULTS = [
    # (fault, file, exit code, message)
    ("416", "asset", 11, "HTTP 416"),
    ("500", "asset", 11, "HTTP 500"),
    ("500", "SHA256SUMS", 11, "HTTP 500"),
    ("longer", "asset", 12, "bytes its signed record says"),
    ("longer", "index.json", 12, "index.json"),
    ("longer", "SHA256SUMS", 12, "is larger than 1048576 bytes"),
    ("longer", "SHA256SUMS.minisig", 12, "is larger than 4096 bytes"),
    ("longer", "latest", 12, "is larger than 256 bytes"),
]


@pytest.mark.parametrize(("fault", "target", "code", "message"), FAULTS,
                         ids=[f"{f[0]}-{f[1]}" for f in FAULTS])
def test_a_misbehaving_server_is_a_clear_error(faulty: Mirror, tmp_path: Path, fault: str,
                                               target: str, code: int, message: str,
                                               request: pytest.FixtureRequest) -> None:
    if target == "latest":
        request.getfixturevalue("indexless")  # only a mirror without an index reads `latest`
    prefix, before = installed(faulty, tmp_path)
    asset = f"ember-{faulty.new}-bin-{HERE_ID}.tar.gz"
    faulty.server.faults[asset if target == "asset" else target] = fault
    got, out, err = faulty.install(tmp_path / "second", "--prefix", str(prefix))
    assert got == code, out + err
    assert message in err, err
    assert "hint:" in err and "Traceback" not in err
    assert snapshot(prefix) == before and leftovers(prefix) == []
    cache = tmp_path / "second" / "kiln-cache" / "downloads"
    assert not any(p.name.endswith(asset) for p in cache.glob("*")), list(cache.glob("*"))


def test_a_signed_sums_listing_the_archive_twice_is_refused(faulty: Mirror,
                                                            tmp_path: Path) -> None:
    prefix, before = installed(faulty, tmp_path)
    rel = faulty.root / faulty.new
    sums = (rel / "SHA256SUMS").read_bytes()
    line = next(ln for ln in sums.splitlines(keepends=True) if b".tar.gz" in ln)
    evil = sums + b"0" * 64 + line[64:]
    work = tmp_path / "resign"
    work.mkdir()
    (work / "SHA256SUMS").write_bytes(evil)
    subprocess.run(["minisign", "-S", "-s", str(faulty.project.key), "-m",
                    str(work / "SHA256SUMS"), "-x", str(work / "sig"), "-t",
                    f"ember {faulty.new} commit {faulty.project.head}"],
                   check=True, capture_output=True)
    faulty.server.overrides[f"{faulty.new}/SHA256SUMS"] = evil
    faulty.server.overrides[f"{faulty.new}/SHA256SUMS.minisig"] = (work / "sig").read_bytes()
    code, out, err = faulty.install(tmp_path / "second", "--prefix", str(prefix))
    assert code == 12, out + err
    assert "is listed twice" in err, err
    assert snapshot(prefix) == before and leftovers(prefix) == []


def test_a_replayed_older_mirror_index_is_a_rollback(faulty: Mirror, tmp_path: Path) -> None:
    """The mirror's index, re-signed by every publish with a higher version, decides: an
    installer that saw version N refuses N-1 served again (a rollback), and ignores a
    `latest` file that points back in time."""
    old_index = {n: (faulty.root / n).read_bytes() for n in ("index.json", "index.json.minisig")}
    code, text, _ = faulty.project.kiln(["publish", str(faulty.project.root.parent
                                                        / f"release-{faulty.new[1:]}"),
                                         "--to", f"file://{faulty.root}"])
    assert code == 0, text
    newer = parse_index((faulty.root / "index.json").read_bytes(), source="index.json")
    assert newer.version == parse_index(old_index["index.json"], source="i").version + 1
    (faulty.root / "latest").write_text(f"{faulty.old}\n", encoding="utf-8")
    code, out, err = faulty.install(tmp_path, "--dry-run")
    assert code == 0, err
    assert f"ember {faulty.new}" in out + err  # the index decides, not `latest`
    kept = {n: (faulty.root / n).read_bytes() for n in old_index}
    try:
        for name, data in old_index.items():
            (faulty.root / name).write_bytes(data)
        code, _out, err = faulty.install(tmp_path, "--dry-run")
        assert code == 12, err
        assert (f"mirror index version {newer.version - 1} is older than version "
                f"{newer.version}") in err and "rollback" in err
    finally:
        for name, data in kept.items():
            (faulty.root / name).write_bytes(data)


def test_a_latest_that_is_not_a_tag_is_refused(indexless: Mirror, tmp_path: Path) -> None:
    faulty = indexless
    (faulty.root / "latest").write_bytes(f"{faulty.new}\n\n".encode())
    code, _out, err = faulty.install(tmp_path, "--dry-run")
    assert code == 12, err
    assert "not a release tag" in err
    code, _out, err = faulty.install(tmp_path, "--tag", "../b1", "--dry-run")
    assert code == 2, err
    assert "neither 'latest' nor a release tag" in err
