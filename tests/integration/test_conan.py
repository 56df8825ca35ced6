"""``kiln publish DIR --to conan://...`` against a real ``conan_server`` on 127.0.0.1, then the
consumer project (tests/conan_consumer: conanfile.txt with CMakeDeps + CMakeToolchain) finds
ember on that server, links it and runs it: its SmolLM2 ids equal ember-cli's.

``conan-server==2.33.0`` lives in a virtual environment of its own (it ships its own ``conan``
packages, which would clash with the client ``conan==2.34.0``), made once and kept in pytest's
cache directory. It is started from a few lines of Python calling its server's
``run(host="127.0.0.1")``, since its ``conan_server`` script binds every interface.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from filelock import FileLock
from test_pypi_index import N_TOKENS, PROMPT
from test_pypi_index import model as model  # the fixture
from test_release_cli import Project, make_project
from test_wheel_build import make_archive, stage_for

from kiln.errors import CommandFailed
from kiln.package.wheel import console_script
from kiln.run import run

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("minisign") is None, reason="minisign is not installed"),
]
REPO = Path(__file__).resolve().parents[2]
CONSUMER = REPO / "tests" / "conan_consumer"
SERVER_REQUIREMENT = "conan-server==2.33.0"
USER, PASSWORD = "demo", "demo-password"

LAUNCH = """
import sys
from conans.server.launcher import ServerLauncher

ServerLauncher(server_dir=sys.argv[1]).server.run(host="127.0.0.1")
"""

SERVER_CONF = """[server]
jwt_secret: kiln-test-jwt-secret
jwt_expire_minutes: 120
ssl_enabled: False
port: {port}
public_port:
host_name: 127.0.0.1
authorize_timeout: 1800
disk_storage_path: ./data
disk_authorize_timeout: 1800
updown_secret: kiln-test-updown-secret

[write_permissions]
*/*@*/*: {user}

[read_permissions]
*/*@*/*: *

[users]
{user}: {password}
"""


def _conan() -> str:
    try:
        return console_script("conan", os.environ)
    except Exception:
        pytest.skip("conan is not installed (pip install conan==2.34.0)")


def _base_env(home: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
            "LANG": "C.UTF-8", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "NO_COLOR": "1"}


@pytest.fixture(scope="session")
def server_python(request: pytest.FixtureRequest) -> Path:
    """The Python of a virtual environment holding conan-server (made once, cached)."""
    root = Path(request.config.cache.mkdir("kiln-conan-server-venv"))
    python = root / "venv" / "bin" / "python"
    # each xdist worker runs session fixtures: one makes the venv, the others wait for it
    with FileLock(str(root) + ".lock"):
        if (root / "complete").is_file() and python.is_file():
            return python
        shutil.rmtree(root / "venv", ignore_errors=True)
        env = _base_env(root)
        try:
            run([sys.executable, "-m", "venv", root / "venv"], env=env, timeout=300)
            run([python, "-m", "pip", "install", "--quiet", SERVER_REQUIREMENT], env=env,
                timeout=600)
        except CommandFailed as exc:
            pytest.skip(f"cannot install {SERVER_REQUIREMENT} into its own venv: {exc.message}")
        (root / "complete").write_text("ok\n")
    return python


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class ConanServer:
    url: str
    data: Path


@pytest.fixture
def conan_server(tmp_path: Path, server_python: Path) -> Iterator[ConanServer]:
    folder = tmp_path / "conan-server"
    folder.mkdir()
    port = _free_port()
    (folder / "server.conf").write_text(SERVER_CONF.format(port=port, user=USER,
                                                           password=PASSWORD))
    log = (tmp_path / "conan-server.log").open("w")
    proc = subprocess.Popen([str(server_python), "-c", LAUNCH, str(folder)], stdout=log,
                            stderr=subprocess.STDOUT, env=_base_env(tmp_path))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/v2/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("conan_server did not start: "
                            + (tmp_path / "conan-server.log").read_text()[-2000:])
            time.sleep(0.2)
        yield ConanServer(url=url, data=folder / "data")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="session")
def stage_cache(request: pytest.FixtureRequest) -> Path:
    return Path(request.config.cache.mkdir("kiln-wheel-stages"))


def conan_release(project: Project, tmp: Path, stages: dict[str, Path],
                  name: str = "release") -> Path:
    art = tmp / f"{name}-artifacts"
    art.mkdir()
    for entry_id, stage in stages.items():
        make_archive(entry_id, stage, art, number=project.number, commit=project.head)
    out = tmp / name
    code, _, _ = project.kiln(["release", "--artifacts", str(art), "--out", str(out),
                               "--allow-missing", "*", "--no-git-tag"])
    assert code == 0
    return out


def server_files(data: Path) -> dict[str, bytes]:
    return {str(p.relative_to(data)): p.read_bytes() for p in sorted(data.rglob("*"))
            if p.is_file()}


def publish_env(project: Project, home: Path) -> dict[str, str]:
    env = dict(project.env)
    env.update({"CONAN_HOME": str(home), "CONAN_LOGIN_USERNAME_KILN": USER,
                "CONAN_PASSWORD_KILN": PASSWORD, "CONAN_LOGIN_USERNAME_CORP": USER,
                "CONAN_PASSWORD_CORP": PASSWORD})
    return env


def test_publish_twice_then_a_consumer_builds_links_and_runs(
        tmp_path: Path, conan_server: ConanServer, stage_cache: Path, model: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    conan = _conan()
    x64 = stage_for("ubuntu-x64", stage_cache)
    win = stage_for("win-cpu-x64", stage_cache)
    project = make_project(tmp_path)
    # openeuler-x64 shares os, arch and backend with ubuntu-x64: the older glibc floor wins.
    release = conan_release(project, tmp_path, {"ubuntu-x64": x64, "openeuler-x64": x64,
                                                "win-cpu-x64": win})
    user_home = tmp_path / "user-conan-home"
    env = publish_env(project, user_home)

    code, out, err = project.kiln(["publish", str(release), "--to",
                                   f"conan://{conan_server.url}"], capsys, env=env)
    assert code == 0, err
    assert "2 uploaded" in out
    assert "openeuler-x64: same os, arch and backend as ubuntu-x64" in out
    stored = server_files(conan_server.data)
    assert stored

    # Again, through a remote of the user's Conan configuration: a no-op.
    cenv = {**_base_env(tmp_path), "CONAN_HOME": str(user_home)}
    run([conan, "remote", "add", "corp", conan_server.url], env=cenv)
    code, out, err = project.kiln(["publish", str(release), "--to", "conan://corp"], capsys,
                                  env=env)
    assert code == 0, err
    assert "already published" in out
    assert server_files(conan_server.data) == stored
    assert not [d for d in user_home.glob("p/*") if d.is_dir()], \
        "kiln exported into the user's Conan cache"

    # A consumer: conan install from the server, CMake with Conan's toolchain, run it.
    consumer = tmp_path / "consumer"
    shutil.copytree(CONSUMER, consumer)
    chome = tmp_path / "consumer-conan-home"
    cenv = {**_base_env(tmp_path), "CONAN_HOME": str(chome)}
    run([conan, "profile", "detect"], env=cenv)
    run([conan, "remote", "remove", "*"], env=cenv)
    run([conan, "remote", "add", "local", conan_server.url], env=cenv)
    run([conan, "install", consumer, "-r", "local", "-s", "build_type=Release",
         "--build=never", "-c", "tools.cmake.cmaketoolchain:generator=Ninja"], env=cenv,
        timeout=600)
    build = consumer / "build" / "Release"
    toolchain = build / "generators" / "conan_toolchain.cmake"
    assert toolchain.is_file()
    run(["cmake", "-S", consumer, "-B", build, "-G", "Ninja",
         f"-DCMAKE_TOOLCHAIN_FILE={toolchain}", "-DCMAKE_BUILD_TYPE=Release"], env=cenv,
        timeout=600)
    run(["cmake", "--build", build], env=cenv, timeout=600)
    exe = build / "ember_consumer"
    version = json.loads(run([exe], env=cenv).stdout)["version"]
    cli = json.loads(run([x64 / "bin" / "ember-cli", "-m", model, "-p", PROMPT, "-n",
                          str(N_TOKENS), "--json", "--ignore-eos"], env=cenv,
                         timeout=600).stdout)
    assert version == cli["version"]
    got = json.loads(run([exe, model, PROMPT, str(N_TOKENS)], env=cenv, timeout=600).stdout)
    assert got["prompt_ids"] == cli["prompt_ids"]
    assert got["generated_ids"] == cli["generated_ids"]
    assert len(got["generated_ids"]) == N_TOKENS


def test_other_binaries_under_a_published_version_are_refused(
        tmp_path: Path, conan_server: ConanServer, stage_cache: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    _conan()
    x64 = stage_for("ubuntu-x64", stage_cache)
    first = make_project(tmp_path / "first")
    release = conan_release(first, tmp_path, {"ubuntu-x64": x64})
    env = publish_env(first, tmp_path / "conan-home")
    to = f"conan://{conan_server.url}"
    assert first.kiln(["publish", str(release), "--to", to], capsys, env=env)[0] == 0
    stored = server_files(conan_server.data)

    # Another project at the same build number, whose tools differ: same version, same
    # package id, other package revision.
    changed = tmp_path / "changed-stage"
    shutil.copytree(x64, changed, symlinks=True)
    (changed / "bin" / "ember-extra").write_text("#!/bin/sh\n")
    second = make_project(tmp_path / "second")
    assert second.number == first.number
    other = conan_release(second, tmp_path, {"ubuntu-x64": changed}, name="other")
    code, _, err = second.kiln(["publish", str(other), "--to", to], capsys, env=env)
    assert code == 10 and "never changed" in err
    assert server_files(conan_server.data) == stored
