"""kiln under any locale: program output is read as UTF-8 whatever the caller's locale.

A fresh machine's ``kiln release`` once failed with ``UnicodeDecodeError('ascii', ...)`` on
pip's progress bar (``━``) while fetching the OpenVINO runtime: the output of a program was
decoded with the locale's codec. These tests run kiln in a child process under ``env -i``
with ``LC_ALL=C`` (and ``PYTHONUTF8=0``, so Python's own UTF-8 mode cannot hide the fault),
with ``LANG`` unset, and with ``LANG=C.UTF-8``: the program runner, the toolchain fetch (pip
download from an index on 127.0.0.1, whose progress bar is not ASCII) and a whole
``kiln release`` with a non-ASCII commit subject.
"""

from __future__ import annotations

import functools
import http.server
import io
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_release_cli import LOCAL, base_env, git, make_key, make_repo

REPO = Path(__file__).resolve().parents[2]

# name -> the environment on top of `env -i` (plus PATH and HOME)
LOCALES = {
    "LC_ALL=C": {"LC_ALL": "C", "PYTHONUTF8": "0"},
    "LANG unset": {"PYTHONUTF8": "0"},
    "LANG=C.UTF-8": {"LANG": "C.UTF-8"},
}
BAR = "\u2501\u2501\u2501 caf\u00e9 \u6771\u4eac"  # what pip's progress bar and a commit may print


def _clean_env(extra: dict[str, str], home: Path) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
    env.update(extra)
    return env


def _py(code: str, env: dict[str, str],
        cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=cwd,
                          capture_output=True, timeout=600, check=False)


@pytest.mark.parametrize("locale_name", sorted(LOCALES))
def test_run_decodes_program_output_as_utf8(tmp_path: Path, locale_name: str) -> None:
    env = _clean_env(LOCALES[locale_name], tmp_path)
    env["PYTHONPATH"] = str(REPO)
    child = f"import sys; sys.stdout.buffer.write({BAR.encode()!r} + b'\\xff\\n')"
    proc = _py(f"""
        import sys
        from pathlib import Path
        from kiln.errors import CommandFailed
        from kiln.run import run
        child = [sys.executable, "-c", {child!r}]
        out = run(child, env={{"PATH": "/usr/bin:/bin"}}).stdout
        assert out == {BAR!a} + "\\ufffd\\n", repr(out)
        log = Path({str(tmp_path / "x.log")!r})
        run(child, env={{"PATH": "/usr/bin:/bin"}}, log_file=log)
        failing = [sys.executable, "-c", {child!r} + "; sys.exit(3)"]
        try:
            run(failing, env={{"PATH": "/usr/bin:/bin"}})
        except CommandFailed as exc:
            assert {BAR!a} in exc.output, repr(exc.output)
            print(exc.render())  # the message itself must print under this locale
        else:
            raise AssertionError("no CommandFailed")
        print("ok")
    """, env)
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
    assert proc.stdout.decode().rstrip().endswith("ok")


# --------------------------------------------------------------------------------------------
# the OpenVINO toolchain fetch: `pip download` from a PEP 503 index on 127.0.0.1


def _fake_openvino_wheel(directory: Path) -> Path:
    """A wheel with the pinned name and the layout kiln unpacks, large enough (2 MiB) for pip
    to draw its progress bar."""
    from kiln.build.toolchains.openvino import OPENVINO_PINS, PLATFORM_TAGS, WHEEL_PYTHON
    ver = OPENVINO_PINS["2026.2"]
    py = "cp" + WHEEL_PYTHON.replace(".", "")
    name = f"openvino-{ver}-{py}-{py}-{PLATFORM_TAGS['linux']}.whl"
    dist = f"openvino-{ver}.dist-info"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("openvino/libs/libopenvino_c.so.2621", os.urandom(2 << 20))
        zf.writestr("openvino/include/openvino/c/openvino.h", "/* test */\n")
        zf.writestr(f"{dist}/METADATA",
                    f"Metadata-Version: 2.1\nName: openvino\nVersion: {ver}\n")
        zf.writestr(f"{dist}/WHEEL",
                    f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\n"
                    f"Tag: {py}-{py}-{PLATFORM_TAGS['linux']}\n")
        zf.writestr(f"{dist}/RECORD", "")
    path = directory / "simple" / "openvino" / name
    path.parent.mkdir(parents=True)
    path.write_bytes(buf.getvalue())
    (path.parent / "index.html").write_text(f'<a href="{name}">{name}</a>\n')
    (directory / "simple" / "index.html").write_text('<a href="openvino/">openvino</a>\n')
    return path


@pytest.fixture()
def index_url(tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "index"
    _fake_openvino_wheel(root)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.integration
@pytest.mark.parametrize("locale_name", sorted(LOCALES))
def test_toolchain_fetch_under_any_locale(tmp_path: Path, index_url: str,
                                          locale_name: str) -> None:
    env = _clean_env(LOCALES[locale_name], tmp_path)
    env["PYTHONPATH"] = str(REPO)
    # pip itself runs in UTF-8 mode (as it does under a plain C locale), so it draws its bar in
    # UTF-8 whatever kiln's own locale is: the case that failed.
    proc = _py(f"""
        from pathlib import Path
        from kiln.build.toolchains.base import ToolchainPaths
        from kiln.build.toolchains.openvino import install_openvino, runtime_library
        paths = ToolchainPaths(root=Path({str(tmp_path / "cache")!r}),
                               zig_cache=Path({str(tmp_path / "zig")!r}))
        pip_env = {{"PATH": "/usr/bin:/bin", "HOME": {str(tmp_path)!r},
                    "PIP_INDEX_URL": {index_url!r}, "PIP_PROGRESS_BAR": "on",
                    "PIP_NO_CACHE_DIR": "1", "LC_ALL": "C"}}
        root = install_openvino(paths, "2026.2", "linux", env=pip_env)
        print(runtime_library(root, "linux").name)
    """, env)
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 0, err
    assert "UnicodeDecodeError" not in err
    assert proc.stdout.decode().strip().endswith("libopenvino_c.so.2621")


# --------------------------------------------------------------------------------------------
# a whole `kiln release` (from built artifacts) with a non-ASCII commit subject


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("minisign") is None, reason="minisign is not installed")
@pytest.mark.parametrize("locale_name", sorted(LOCALES))
def test_release_under_any_locale(tmp_path: Path, locale_name: str) -> None:
    from test_release_cli import Project

    genv = base_env(tmp_path / "home")
    repo = make_repo(tmp_path, genv)
    (repo / "runtime" / "src" / "sampler.c").write_text("/* top-p */\n")
    git(repo, genv, "add", "-A")
    git(repo, genv, "commit", "-q", "-m", f"sampler: {BAR} (#56)")
    project = Project(root=tmp_path, repo=repo, env=genv, key=make_key(tmp_path / "keys"))
    artifacts = project.artifacts(LOCAL)
    env = _clean_env(LOCALES[locale_name], tmp_path / "home")
    env.update({k: v for k, v in genv.items() if k.startswith("GIT_")})
    kiln = [sys.executable, "-m", "kiln"]
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [*kiln, "release", "--out", str(tmp_path / "release"), "--artifacts", str(artifacts),
         "--signing-key", str(project.key), "--no-git-tag", "--allow-missing", "*"],
        env=env, cwd=repo, capture_output=True, timeout=600, check=False)
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 0, err
    notes = (tmp_path / "release" / "RELEASE_NOTES.md").read_text(encoding="utf-8")
    assert BAR in notes
