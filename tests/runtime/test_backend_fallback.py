"""GPU backends on a machine without the GPU: ember built with EMBER_CUDA=ON and EMBER_HIP=ON
(host code only, no device compiler, no driver) must run on the CPU under ``--backend auto``
with the CPU build's tokens and say so once on stderr, and must refuse ``--backend cuda``
with a clear error and a non-zero exit. A stand-in libcuda.so.1 (data/fake_driver) takes the
backend further: a driver without a device, and a device older than any embedded code.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY, EmberBuild, _configure_and_build, build_cache_dir, run_cli
from filelock import FileLock

MODEL = TINY / "tiny-gpt2-q8_0.gguf"
PROMPT = ["-p", "The quick brown fox", "-n", "12", "--json", "-t", "2"]
FAKE_DRIVER = Path(__file__).parent / "data" / "fake_driver" / "fake_cuda.c"


@pytest.fixture(scope="module")
def gpu_build(request: pytest.FixtureRequest) -> EmberBuild:
    d = build_cache_dir(request) / "gpu-hostonly"
    with FileLock(str(d) + ".lock"):
        _configure_and_build(d, ["-DEMBER_CUDA=ON", "-DEMBER_HIP=ON", "-DEMBER_BUILD_TESTS=OFF"])
    exe = ".exe" if sys.platform == "win32" else ""
    return EmberBuild(d, d / f"ember-cli{exe}", d / f"ember-bench{exe}", d / "libember.so", False)


def _no_driver_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("EMBER_BACKEND", None)
    env.update(extra or {})
    return env


def _run(build: EmberBuild, args: list[str],
         env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(build.cli), *args], capture_output=True, timeout=300, env=env)


def test_auto_falls_back_to_cpu_with_the_same_tokens(ember_build: EmberBuild,
                                                      gpu_build: EmberBuild) -> None:
    cpu = run_cli(ember_build, ["-m", str(MODEL), *PROMPT, "--backend", "cpu"])
    assert cpu.returncode == 0, cpu.stderr.decode()
    auto = _run(gpu_build, ["-m", str(MODEL), *PROMPT], _no_driver_env())
    assert auto.returncode == 0, auto.stderr.decode()
    a, c = json.loads(auto.stdout), json.loads(cpu.stdout)
    assert a["generated_ids"] == c["generated_ids"]
    assert a["backend"] == "cpu" and a["device"] == "cpu"
    err = auto.stderr.decode()
    # one line per GPU backend tried, naming why and what is used instead
    assert err.count("using cpu") == 2, err
    if sys.platform.startswith("linux"):
        assert "ember: cuda: libcuda.so.1 not found" in err


def test_cpu_backend_is_silent(gpu_build: EmberBuild) -> None:
    r = _run(gpu_build, ["-m", str(MODEL), *PROMPT, "--backend", "cpu"], _no_driver_env())
    assert r.returncode == 0
    assert b"using cpu" not in r.stderr


def test_explicit_cuda_without_driver_fails_clearly(gpu_build: EmberBuild) -> None:
    r = _run(gpu_build, ["-m", str(MODEL), *PROMPT, "--backend", "cuda"], _no_driver_env())
    assert r.returncode != 0
    assert b"backend cuda cannot run" in r.stderr
    assert r.stdout == b""


def test_backend_not_built_in(ember_build: EmberBuild) -> None:
    r = run_cli(ember_build, ["-m", str(MODEL), *PROMPT, "--backend", "cuda"])
    assert r.returncode != 0
    assert r.returncode == 1  # a usage error
    assert b"--backend: 'cuda' is not in this build (it has: auto, cpu)" in r.stderr


def test_env_selects_backend(gpu_build: EmberBuild) -> None:
    r = _run(gpu_build, ["-m", str(MODEL), *PROMPT], _no_driver_env({"EMBER_BACKEND": "cpu"}))
    assert r.returncode == 0 and b"using cpu" not in r.stderr


def test_bench_names_backend_and_device(gpu_build: EmberBuild) -> None:
    argv = [str(gpu_build.bench), "-m", str(MODEL), "-p", "8", "-n", "4", "--json",
            "--backend", "auto"]
    r = subprocess.run(argv, capture_output=True, timeout=300, env=_no_driver_env())
    assert r.returncode == 0, r.stderr.decode()
    out = json.loads(r.stdout)
    assert out["backend"] == "cpu" and out["device"] == "cpu"


@pytest.fixture(scope="module")
def fake_driver_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not sys.platform.startswith("linux"):
        pytest.skip("the stand-in driver is a Linux shared library")
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler for the stand-in driver")
    d = tmp_path_factory.mktemp("fake-cuda")
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(d / "libcuda.so.1"), str(FAKE_DRIVER)],
                   check=True)
    return d


@pytest.mark.parametrize(("mode", "why"), [
    ("nodevice", "no CUDA device (no CUDA-capable device is detected)"),
    ("kepler", "Fake Kepler (sm_35) has no kernels in this build"),
])
def test_driver_without_usable_gpu(gpu_build: EmberBuild, ember_build: EmberBuild,
                                   fake_driver_dir: Path, mode: str, why: str) -> None:
    env = _no_driver_env({"LD_LIBRARY_PATH": str(fake_driver_dir), "FAKE_CUDA_MODE": mode})
    r = _run(gpu_build, ["-m", str(MODEL), *PROMPT, "--backend", "cuda"], env)
    assert r.returncode != 0
    assert why in r.stderr.decode()
    auto = _run(gpu_build, ["-m", str(MODEL), *PROMPT], env)
    assert auto.returncode == 0, auto.stderr.decode()
    assert f"ember: cuda: {why}".encode() in auto.stderr
    cpu = run_cli(ember_build, ["-m", str(MODEL), *PROMPT, "--backend", "cpu"])
    assert json.loads(auto.stdout)["generated_ids"] == json.loads(cpu.stdout)["generated_ids"]
