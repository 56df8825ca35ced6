"""ember cross-compiles with zig cc (-Werror) for the platforms kiln ships, and the big-endian
s390x build, run under qemu-user, gives logits bit-identical to the native little-endian build
on every committed tiny model (which covers every tensor type the references use).

Needs ``python -m ziglang`` (pip ziglang==0.17.1); the s390x run also needs Debian's qemu-user
and libc6-s390x-cross. Missing tools skip the tests with the reason. Integration: minutes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import RUNTIME, TINY, EmberBuild, build_cache_dir, run_cli

pytestmark = pytest.mark.integration

TARGETS = {
    "x86_64-windows-gnu": ("Windows", "AMD64"),
    "aarch64-macos.11.0": ("Darwin", "arm64"),
    "s390x-linux-gnu.2.17": ("Linux", "s390x"),
    "x86_64-linux-gnu.2.17": ("Linux", "x86_64"),
}
S390X_SYSROOT = Path("/usr/s390x-linux-gnu")


def _zig_available() -> bool:
    return importlib.util.find_spec("ziglang") is not None


def _wrapper(folder: Path, name: str, args: str) -> Path:
    """A one-line shell script standing for `python -m ziglang <args>` (CMake wants one program)."""
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m ziglang {args} "$@"\n')
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return p


def _cross_build(cache: Path, target: str) -> Path:
    system, proc = TARGETS[target]
    tools = cache / "zig-wrappers"
    cc = _wrapper(tools, f"cc-{target}", f"cc -target {target}")
    ar = _wrapper(tools, "ar", "ar")
    build = cache / f"zig-{target}"
    env = dict(os.environ, ZIG_GLOBAL_CACHE_DIR=str(cache / "zig-cache"))
    for cmd in (
        [
            "cmake",
            "-S",
            str(RUNTIME),
            "-B",
            str(build),
            "-G",
            "Ninja",
            f"-DCMAKE_C_COMPILER={cc}",
            f"-DCMAKE_AR={ar}",
            "-DCMAKE_RANLIB=/bin/true",
            f"-DCMAKE_SYSTEM_NAME={system}",
            f"-DCMAKE_SYSTEM_PROCESSOR={proc}",
            "-DEMBER_WERROR=ON",
            "-DCMAKE_BUILD_TYPE=Release",
        ],
        ["cmake", "--build", str(build)],
    ):
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
        assert r.returncode == 0, f"{' '.join(cmd)}:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return build


@pytest.fixture(scope="module")
def cache(request: pytest.FixtureRequest) -> Path:
    if not _zig_available():
        pytest.skip("zig is not installed (pip install ziglang==0.17.1)")
    if shutil.which("cmake") is None or shutil.which("ninja") is None:
        pytest.skip("cmake and ninja are needed")
    return build_cache_dir(request)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_cross_compiles_with_werror(cache: Path, target: str) -> None:
    build = _cross_build(cache, target)
    exe = ".exe" if "windows" in target else ""
    assert (build / f"ember-cli{exe}").exists()


def test_big_endian_s390x_matches_native(
    cache: Path, ember_build: EmberBuild, tmp_path: Path
) -> None:
    if shutil.which("qemu-s390x") is None or not S390X_SYSROOT.is_dir():
        pytest.skip(
            "qemu-s390x and libc6-s390x-cross are needed "
            "(apt-get install qemu-user libc6-s390x-cross)"
        )
    build = _cross_build(cache, "s390x-linux-gnu.2.17")
    models = sorted(TINY.glob("*.gguf"))
    assert models
    for model in models:
        args = [
            "-m",
            str(model),
            "-p",
            "The quick brown fox jumps over the lazy dog",
            "-n",
            "6",
            "--ignore-eos",
            "--json",
            "-t",
            "2",
        ]
        le_logits, be_logits = tmp_path / "le.bin", tmp_path / "be.bin"
        native = run_cli(ember_build, [*args, "--logits-out", str(le_logits)])
        assert native.returncode == 0, native.stderr.decode()
        be = subprocess.run(
            [
                "qemu-s390x",
                "-L",
                str(S390X_SYSROOT),
                str(build / "ember-cli"),
                *args,
                "--logits-out",
                str(be_logits),
            ],
            capture_output=True,
            timeout=600,
        )
        assert be.returncode == 0, be.stderr.decode()
        assert (
            json.loads(be.stdout)["generated_ids"] == json.loads(native.stdout)["generated_ids"]
        ), model.name
        assert be_logits.read_bytes() == le_logits.read_bytes(), (
            f"{model.name}: logits differ on big-endian"
        )
