"""``kiln publish DIR --to pypi-index+http://127.0.0.1:PORT/`` against a real pypiserver, then
``pip install --index-url http://127.0.0.1:PORT/simple ember`` in a fresh virtual environment
and SmolLM2 tokens from the installed binding equal to ember-cli's.

The server: one pypiserver application per index (CPU at ``/``, each backend variant at
``/<variant>/``) behind a small WSGI dispatcher, the layout ``kiln.publish.pypi_index`` and
docs/packages.md describe, listening on 127.0.0.1 only, with anonymous uploads (what
``pypi-server run -a . -P .`` allows) and without the fallback redirect to pypi.org.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from test_release_cli import Project, make_project
from test_wheel_build import make_archive, make_wheel, stage_for

from kiln.run import run

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("minisign") is None, reason="minisign is not installed"),
]
REPO = Path(__file__).resolve().parents[2]
MODEL_NAME = "smollm2-135m-q4_1.gguf"
PROMPT = "The capital of France is"
N_TOKENS = 16
VARIANTS = ("vulkan", "cu124")

SERVER = r"""
import sys
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pypiserver

root, variants = sys.argv[1], sys.argv[2:]


def index(directory):
    return pypiserver.app(root=directory, authenticated=[], passwords=".",
                          redirect_to_fallback=False, overwrite=False)


apps = {"": index(f"{root}/cpu")}
for v in variants:
    apps[v] = index(f"{root}/{v}")


def dispatch(environ, start_response):
    path = environ.get("PATH_INFO", "")
    first = path.lstrip("/").split("/", 1)[0]
    if first and first in apps:
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + "/" + first
        environ["PATH_INFO"] = path[len(first) + 1:] or "/"
        return apps[first](environ, start_response)
    return apps[""](environ, start_response)


class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


httpd = make_server("127.0.0.1", 0, dispatch, server_class=Server, handler_class=Quiet)
print(httpd.server_port, flush=True)
httpd.serve_forever()
"""


@dataclass(frozen=True)
class IndexServer:
    url: str
    root: Path


@pytest.fixture
def index_server(tmp_path: Path) -> Iterator[IndexServer]:
    pytest.importorskip("pypiserver")
    root = tmp_path / "index"
    for name in ("cpu", *VARIANTS):
        (root / name).mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(root), *VARIANTS],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline().strip() if ready else ""
        if not line.isdigit():
            _, err = proc.communicate(timeout=10)
            pytest.fail(f"the index server did not start: {err[-2000:]}")
        url = f"http://127.0.0.1:{int(line)}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/simple/", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        yield IndexServer(url=url, root=root)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def stage_cache(request: pytest.FixtureRequest) -> Path:
    return Path(request.config.cache.mkdir("kiln-wheel-stages"))


@pytest.fixture(scope="session")
def model() -> Path:
    """SmolLM2-135M Q4_1: $EMBER_TEST_MODEL_DIR (default ~/.cache/ember/models), fetched with
    scripts/models.py when it is not there yet."""
    folder = Path(os.environ.get("EMBER_TEST_MODEL_DIR")
                  or Path.home() / ".cache" / "ember" / "models")
    path = folder / MODEL_NAME
    if not path.is_file():
        done = subprocess.run([sys.executable, str(REPO / "scripts" / "models.py"), "fetch",
                               "--cache", str(folder)], capture_output=True, text=True,
                              timeout=600, check=False)
        if done.returncode != 0 or not path.is_file():
            pytest.skip(f"{path} is missing and `scripts/models.py fetch` could not get it: "
                        f"{(done.stdout + done.stderr).strip()[-300:]}")
    return path


def release_with_wheels(project: Project, stage: Path, tmp: Path,
                        entries: tuple[str, ...] = ("ubuntu-x64", "ubuntu-vulkan-x64")) -> Path:
    """A signed release holding an archive and a wheel for each entry. The Vulkan entry reuses
    the CPU tree: what is under test is where its wheel goes, not what it computes."""
    art = tmp / "artifacts"
    art.mkdir()
    for entry_id in entries:
        make_archive(entry_id, stage, art, number=project.number, commit=project.head)
        make_wheel(entry_id, stage, art, number=project.number, commit=project.head)
    out = tmp / "release"
    code, _, _ = project.kiln(["release", "--artifacts", str(art), "--out", str(out),
                               "--allow-missing", "*", "--no-git-tag"])
    assert code == 0
    return out


def venv_env(home: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_CACHE_DIR": "1",
            "PIP_CONFIG_FILE": os.devnull, "LANG": "C.UTF-8"}


def fresh_venv(where: Path) -> Path:
    run([sys.executable, "-m", "venv", where], env=venv_env(where.parent), timeout=300)
    return where / "bin" / "python"


def pip_install(python: Path, index: str, env: dict[str, str]) -> str:
    run([python, "-m", "pip", "install", "--index-url", index, "ember"], env=env,
        timeout=300)
    return run([python, "-c", "import importlib.metadata as m; print(m.version('ember'))"],
               env=env).stdout.strip()


GENERATE = """
import json, sys, ember
m = ember.Model(sys.argv[1])
g = m.generate(sys.argv[2], int(sys.argv[3]), temperature=0, ignore_eos=True)
print(json.dumps({"prompt_ids": g.prompt_ids, "ids": g.ids, "library": str(ember.library_path())}))
"""


def test_publish_then_pip_install_generates_like_ember_cli(
        tmp_path: Path, index_server: IndexServer, stage_cache: Path, model: Path) -> None:
    stage = stage_for("ubuntu-x64", stage_cache)
    project = make_project(tmp_path)
    release = release_with_wheels(project, stage, tmp_path)
    to = f"pypi-index+{index_server.url}/"

    code, out, _ = project.kiln(["publish", str(release), "--to", to])
    assert code == 0 and "2 uploaded" in out, out
    n = project.number
    assert sorted(p.name for p in (index_server.root / "cpu").iterdir()) == [
        f"ember-0.0.{n}-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"]
    assert sorted(p.name for p in (index_server.root / "vulkan").iterdir()) == [
        f"ember-0.0.{n}+vulkan-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"]

    # The same release again: nothing is uploaded, nothing changes.
    before = {p: p.read_bytes() for p in index_server.root.rglob("*.whl")}
    code, out, _ = project.kiln(["publish", str(release), "--to", to])
    assert code == 0 and "already published" in out, out
    assert {p: p.read_bytes() for p in index_server.root.rglob("*.whl")} == before

    env = venv_env(tmp_path)
    python = fresh_venv(tmp_path / "venv")
    assert pip_install(python, f"{index_server.url}/simple", env) == f"0.0.{n}"
    got = json.loads(run([python, "-c", GENERATE, model, PROMPT, str(N_TOKENS)],
                         env=env, timeout=600).stdout)
    assert got["library"].startswith(str(tmp_path / "venv"))
    cli = json.loads(run([stage / "bin" / "ember-cli", "-m", model, "-p", PROMPT, "-n",
                          str(N_TOKENS), "--json", "--ignore-eos"], env=env,
                         timeout=600).stdout)
    assert got["prompt_ids"] == cli["prompt_ids"]
    assert got["ids"] == cli["generated_ids"] and len(got["ids"]) == N_TOKENS

    vulkan = fresh_venv(tmp_path / "venv-vulkan")
    assert pip_install(vulkan, f"{index_server.url}/vulkan/simple", env) == f"0.0.{n}+vulkan"


def test_a_different_file_of_the_same_name_is_refused(
        tmp_path: Path, index_server: IndexServer, stage_cache: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    stage = stage_for("ubuntu-x64", stage_cache)
    project = make_project(tmp_path)
    release = release_with_wheels(project, stage, tmp_path, entries=("ubuntu-x64",))
    wheel = next(release.glob("*.whl"))
    # Someone uploaded another file under the release's wheel name.
    requests.post(f"{index_server.url}/", data={":action": "file_upload"},
                  files={"content": (wheel.name, b"not the release's wheel")},
                  timeout=30).raise_for_status()
    code, _, err = project.kiln(["publish", str(release), "--to",
                                 f"pypi-index+{index_server.url}/"], capsys)
    assert code == 10 and "another sha256" in err
    assert (index_server.root / "cpu" / wheel.name).read_bytes() == b"not the release's wheel"


def test_an_index_that_is_not_there_is_a_publish_error(
        tmp_path: Path, stage_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stage = stage_for("ubuntu-x64", stage_cache)
    project = make_project(tmp_path)
    release = release_with_wheels(project, stage, tmp_path, entries=("ubuntu-x64",))
    code, _, err = project.kiln(["publish", str(release), "--to",
                                 "pypi-index+http://127.0.0.1:9/"], capsys)
    assert code == 10 and "index server is running" in err
