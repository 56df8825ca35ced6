"""``kiln publish DIR --to pypi-index+...`` against plain pypiservers: each one the real
``pypi-server run -i 127.0.0.1 -p PORT -a . -P . DIR`` command, which serves one index at its
root and takes uploads only there.

- One plain server named as the root of an index family has no ``ROOT/vulkan/``: the publish
  fails with exit 10, names the missing index and the ``{variant}`` template to pass, and
  uploads nothing to the CPU index; publishing again with the template finishes the release.
- A ``{variant}`` template with one plain server per index behind a path-routing proxy (the
  set-up docs/packages.md describes): every wheel lands on its own server, and a re-run uploads
  nothing.
"""

from __future__ import annotations

import http.client
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from test_pypi_index import release_with_wheels
from test_release_cli import make_project
from test_wheel_build import stage_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("minisign") is None, reason="minisign is not installed"),
]
CPU_WHEEL = "ember-0.0.{n}-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
VULKAN_WHEEL = "ember-0.0.{n}+vulkan-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PlainServers:
    """Plain ``pypi-server run`` processes, one per directory, stopped at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, directory: Path) -> int:
        directory.mkdir(parents=True, exist_ok=True)
        port = _free_port()
        proc = subprocess.Popen([sys.executable, "-m", "pypiserver", "run", "-i", "127.0.0.1",
                                 "-p", str(port), "-a", ".", "-P", ".", str(directory)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.procs.append(proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                assert proc.stderr is not None
                pytest.fail(f"pypi-server did not start: {proc.stderr.read()[-2000:]!r}")
            try:
                if requests.get(f"http://127.0.0.1:{port}/simple/", timeout=2).ok:
                    return port
            except requests.ConnectionError:
                time.sleep(0.2)
        pytest.fail(f"pypi-server on port {port} did not answer within 60 s")

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def stage_cache(request: pytest.FixtureRequest) -> Path:
    return Path(request.config.cache.mkdir("kiln-wheel-stages"))


@pytest.fixture
def plain() -> Iterator[PlainServers]:
    pytest.importorskip("pypiserver")
    servers = PlainServers()
    try:
        yield servers
    finally:
        servers.stop()


def path_proxy(routes: dict[str, int]) -> tuple[ThreadingHTTPServer, int]:
    """A reverse proxy on 127.0.0.1: ``/<name>/rest`` goes to ``127.0.0.1:<routes[name]>/rest``
    (what nginx's ``location /<name>/ { proxy_pass http://127.0.0.1:PORT/; }`` does)."""

    class Handler(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            name, _, rest = self.path.lstrip("/").partition("/")
            port = routes.get(name)
            if port is None:
                self.send_error(404)
                return
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("host", "connection")}
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request(self.command, "/" + rest, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            conn.close()

        do_GET = do_POST = _forward

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, int(server.server_address[1])


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def test_one_plain_server_as_a_family_root_names_the_missing_index_and_the_template(
        tmp_path: Path, plain: PlainServers, stage_cache: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    stage = stage_for("ubuntu-x64", stage_cache)
    project = make_project(tmp_path)
    release = release_with_wheels(project, stage, tmp_path)
    n = project.number
    cpu_dir = tmp_path / "cpu-packages"
    port = plain.start(cpu_dir)
    root = f"http://127.0.0.1:{port}"

    code, _, err = project.kiln(["publish", str(release), "--to", f"pypi-index+{root}/"],
                                capsys)
    assert code == 10, err
    assert f"{root}/vulkan/ (HTTP 405 to an upload)" in err, err
    assert VULKAN_WHEEL.format(n=n) in err
    assert f"--to 'pypi-index+{root}/{{variant}}/'" in err, err
    assert "the CPU wheels were not uploaded" in err
    # Nothing reached the one index a plain `pip install ember` reads.
    assert names(cpu_dir) == []

    # The same plain server as the CPU index, a second one for Vulkan, behind one proxy:
    # publishing again with the template the error named finishes the release.
    vulkan_dir = tmp_path / "vulkan-packages"
    proxy, proxy_port = path_proxy({"cpu": port, "vulkan": plain.start(vulkan_dir)})
    try:
        code, out, err = project.kiln(
            ["publish", str(release), "--to",
             f"pypi-index+http://127.0.0.1:{proxy_port}/{{variant}}/"], capsys)
    finally:
        proxy.shutdown()
    assert code == 0, err
    assert "2 uploaded" in out, out
    assert names(cpu_dir) == [CPU_WHEEL.format(n=n)]
    assert names(vulkan_dir) == [VULKAN_WHEEL.format(n=n)]


def test_a_template_puts_each_variant_on_its_own_plain_server(
        tmp_path: Path, plain: PlainServers, stage_cache: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    stage = stage_for("ubuntu-x64", stage_cache)
    project = make_project(tmp_path)
    release = release_with_wheels(project, stage, tmp_path)
    n = project.number
    cpu_dir, vulkan_dir = tmp_path / "cpu", tmp_path / "vulkan"
    proxy, proxy_port = path_proxy({"cpu": plain.start(cpu_dir),
                                    "vulkan": plain.start(vulkan_dir)})
    to = f"pypi-index+http://127.0.0.1:{proxy_port}/{{variant}}/"
    try:
        code, out, err = project.kiln(["publish", str(release), "--to", to], capsys)
        assert code == 0 and "2 uploaded" in out, out + err
        assert names(cpu_dir) == [CPU_WHEEL.format(n=n)]
        assert names(vulkan_dir) == [VULKAN_WHEEL.format(n=n)]
        page = requests.get(f"http://127.0.0.1:{proxy_port}/vulkan/simple/ember/", timeout=30)
        assert VULKAN_WHEEL.format(n=n) in page.text

        before = {p: p.read_bytes() for p in tmp_path.glob("*/*.whl")}
        code, out, err = project.kiln(["publish", str(release), "--to", to], capsys)
        assert code == 0 and "already published" in out, out + err
        assert {p: p.read_bytes() for p in tmp_path.glob("*/*.whl")} == before
    finally:
        proxy.shutdown()


def test_a_template_whose_variant_index_is_down_names_it(
        tmp_path: Path, plain: PlainServers, stage_cache: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The Vulkan index's server is not running: the error names it, the CPU index is left
    alone."""
    stage = stage_for("ubuntu-x64", stage_cache)
    project = make_project(tmp_path)
    release = release_with_wheels(project, stage, tmp_path)
    cpu_dir = tmp_path / "cpu"
    proxy, proxy_port = path_proxy({"cpu": plain.start(cpu_dir)})
    try:
        code, _, err = project.kiln(
            ["publish", str(release), "--to",
             f"pypi-index+http://127.0.0.1:{proxy_port}/{{variant}}/"], capsys)
    finally:
        proxy.shutdown()
    assert code == 10, err
    assert f"http://127.0.0.1:{proxy_port}/vulkan/ (HTTP 404 to an upload)" in err, err
    assert names(cpu_dir) == []
