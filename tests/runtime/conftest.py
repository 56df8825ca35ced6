"""Fixtures of ember's runtime tests: a CMake + Ninja build of runtime/ made once per session.

The build goes into pytest's cache directory (``.pytest_cache/d/ember-build/<variant>``,
ignored by git), so a second session only re-runs Ninja. ``EMBER_BUILD_DIR`` points the tests
at an existing build instead (it must contain ember-cli, ember-server and the shared library).

Model files: the tiny models are committed under ``tests/runtime/data/tiny``; the SmolLM2
variants are looked up in ``$EMBER_TEST_MODEL_DIR`` (or ``$EMBER_MODELS``, default
``~/.cache/ember/models``) and
the tests that need them are skipped, with the path in the reason, when they are absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ROOT / "runtime"
DATA = ROOT / "tests" / "runtime" / "data"
TINY = DATA / "tiny"
REFERENCES = DATA / "references"


@dataclass(frozen=True)
class EmberBuild:
    """Paths of one build of runtime/."""

    dir: Path
    cli: Path
    bench: Path
    library: Path
    sanitized: bool
    server: Path | None = None  # ember-server (docs/server.md); None where a test builds none

    def require_server(self) -> Path:
        """ember-server of this build, or the test fails: every build of runtime/ makes it."""
        if self.server is None or not self.server.exists():
            pytest.fail(f"ember-server was not built in {self.dir}")
        return self.server

    def env(self) -> dict[str, str]:
        """Environment for running the tools (sanitizer options when sanitized)."""
        env = dict(os.environ)
        if self.sanitized:
            env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0:exitcode=86"
            env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1:exitcode=87"
        return env


def _exe(build_dir: Path, name: str) -> Path:
    return build_dir / (name + (".exe" if sys.platform == "win32" else ""))


def _shared_library(build_dir: Path) -> Path:
    names = {"win32": ["ember.dll"], "darwin": ["libember.dylib"]}.get(
        sys.platform, ["libember.so"]
    )
    for name in names:
        if (build_dir / name).exists():
            return build_dir / name
    return build_dir / names[0]


def _configure_and_build(
    build_dir: Path, extra: list[str], env: dict[str, str] | None = None
) -> None:
    for tool in ("cmake", "ninja"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (needed to build ember)")
    build_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        "cmake",
        "-S",
        str(RUNTIME),
        "-B",
        str(build_dir),
        "-G",
        "Ninja",
        "-DEMBER_WERROR=ON",
        "-DCMAKE_BUILD_TYPE=Release",
        *extra,
    ]
    for step in (cmd, ["cmake", "--build", str(build_dir)]):
        r = subprocess.run(step, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            pytest.fail(
                f"{' '.join(step)} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
            )


def build_cache_dir(request: pytest.FixtureRequest) -> Path:
    """Where builds are kept between sessions: pytest's cache, or the temp dir without it."""
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("ember-build"))
    d = Path(tempfile.gettempdir()) / "ember-build"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _build(
    request: pytest.FixtureRequest, variant: str, extra: list[str], sanitized: bool
) -> EmberBuild:
    override = os.environ.get("EMBER_BUILD_DIR")
    if override and not sanitized:
        d = Path(override)
    else:
        d = build_cache_dir(request) / variant
        # pytest-xdist workers share the build directory: one configures and builds while the
        # others wait, then find it up to date.
        with FileLock(str(d) + ".lock"):
            _configure_and_build(d, extra)
    b = EmberBuild(
        d,
        _exe(d, "ember-cli"),
        _exe(d, "ember-bench"),
        _shared_library(d),
        sanitized,
        _exe(d, "ember-server"),
    )
    if not b.cli.exists():
        pytest.fail(f"{b.cli} was not built")
    return b


@pytest.fixture(scope="session")
def ember_build(request: pytest.FixtureRequest) -> EmberBuild:
    """Release build of runtime/ (library, tools, C tests)."""
    return _build(request, "release", [], sanitized=False)


@pytest.fixture(scope="session")
def ember_asan_build(request: pytest.FixtureRequest) -> EmberBuild:
    """Build with AddressSanitizer + UndefinedBehaviorSanitizer."""
    return _build(
        request,
        "asan",
        ["-DEMBER_SANITIZE=ON", "-DCMAKE_BUILD_TYPE=RelWithDebInfo"],
        sanitized=True,
    )


def model_dir() -> Path:
    """$EMBER_TEST_MODEL_DIR, else $EMBER_MODELS (scripts/models.py's name), else the default."""
    for var in ("EMBER_TEST_MODEL_DIR", "EMBER_MODELS"):
        if os.environ.get(var):
            return Path(os.environ[var])
    return Path.home() / ".cache" / "ember" / "models"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find_model(name: str) -> Path | None:
    """A model file by name: the committed tiny models, else $EMBER_TEST_MODEL_DIR."""
    for folder in (TINY, model_dir()):
        if (folder / name).is_file():
            return folder / name
    return None


def reference_files() -> list[Path]:
    return sorted(REFERENCES.glob("*.json")) if REFERENCES.is_dir() else []


def load_reference(path: Path) -> dict:
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def run_cli(
    build: EmberBuild, args: list[str], *, input: bytes | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(build.cli), *args], input=input, capture_output=True, timeout=timeout, env=build.env()
    )
