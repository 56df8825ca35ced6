"""The SYCL backend's CMake side. Without a SYCL compiler (no registry ships one), configuring
with EMBER_SYCL=ON must stop at once with a sentence naming what to install, and
EMBER_SYCL_F16 alone is refused. Where oneAPI DPC++ is on PATH (its CI container), the backend
builds with -Werror in both precisions, and a context with backend "auto" runs: on the SYCL
GPU when there is one, else on the CPU after one line saying why."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kiln.build.toolchains.oneapi import CONTAINER, ONEAPI_VERSION

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ROOT / "runtime"
ONEAPI_HINT = (f"icpx is not on PATH: run in {CONTAINER}, or install oneAPI DPC++ "
               f"{ONEAPI_VERSION} and source /opt/intel/oneapi/setvars.sh")

pytestmark = pytest.mark.integration


def _tools() -> None:
    for tool, pkg in (("cmake", "cmake"), ("ninja", "ninja-build")):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed: apt-get install -y {pkg}")


def _configure(build: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["cmake", "-G", "Ninja", "-S", str(RUNTIME), "-B", str(build),
                           "-DEMBER_BUILD_TESTS=OFF", *options],
                          capture_output=True, text=True, check=False, timeout=300)


def test_sycl_without_a_sycl_compiler_is_refused_at_configure(tmp_path: Path) -> None:
    _tools()
    cxx = shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler: apt-get install -y g++")
    done = _configure(tmp_path / "b", "-DEMBER_SYCL=ON", f"-DCMAKE_CXX_COMPILER={cxx}")
    assert done.returncode != 0
    text = " ".join((done.stdout + done.stderr).split())
    assert "EMBER_SYCL needs a SYCL compiler" in text
    assert "cannot compile <sycl/sycl.hpp> with -fsycl" in text
    assert "-DCMAKE_CXX_COMPILER=icpx" in text


def test_sycl_f16_alone_is_refused(tmp_path: Path) -> None:
    _tools()
    done = _configure(tmp_path / "b", "-DEMBER_SYCL_F16=ON")
    assert done.returncode != 0
    assert "configure with -DEMBER_SYCL=ON too" in " ".join((done.stdout + done.stderr).split())


@pytest.mark.parametrize("f16", ["OFF", "ON"])
def test_sycl_backend_builds_and_runs_with_oneapi(tmp_path: Path, f16: str) -> None:
    _tools()
    if shutil.which("icpx") is None or shutil.which("icx") is None:
        pytest.skip(ONEAPI_HINT)
    build = tmp_path / "b"
    done = _configure(build, "-DCMAKE_C_COMPILER=icx", "-DCMAKE_CXX_COMPILER=icpx",
                      "-DEMBER_SYCL=ON", f"-DEMBER_SYCL_F16={f16}", "-DEMBER_WERROR=ON")
    assert done.returncode == 0, done.stdout + done.stderr
    done = subprocess.run(["cmake", "--build", str(build), "--parallel", "2"],
                          capture_output=True, text=True, check=False, timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr
    cli = build / "ember-cli"
    assert "sycl" in subprocess.run([str(cli), "--help"], capture_output=True, text=True,
                                    check=False).stdout
    models = Path(os.environ.get("EMBER_TEST_MODEL_DIR") or os.environ.get("EMBER_MODELS")
                  or Path.home() / ".cache" / "ember" / "models")
    model = models / "smollm2-135m-q4_1.gguf"
    if not model.is_file():
        pytest.skip(f"{model} is missing: python scripts/models.py fetch")
    run = subprocess.run([str(cli), "-m", str(model), "-p", "The capital of France is", "-n",
                          "8", "--temp", "0", "--json"], capture_output=True, text=True,
                         check=False, timeout=600)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    if out["backend"] == "cpu":
        assert "ember: sycl: " in run.stderr and "; using cpu" in run.stderr
    else:
        assert out["backend"] == "sycl" and out["device"].endswith("fp16)" if f16 == "ON"
                                                                    else "fp32)")
    assert len(out["generated_ids"]) == 8
