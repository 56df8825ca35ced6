"""The Vulkan backend on lavapipe (Mesa's Vulkan implementation on the CPU): ember built with
EMBER_VULKAN=ON must give the CPU build's greedy tokens and, for the types whose CPU kernel it
mirrors, the CPU's logits bit for bit.

lavapipe is a CPU device, which the backend uses only when asked (EMBER_VULKAN_DEVICE=cpu); the
tests also point the Vulkan loader at lavapipe's driver manifest alone, so a machine with a GPU
runs them on lavapipe too. Skipped, with the command that installs them, where glslc, the Vulkan
headers or lavapipe are missing (Linux only).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import EmberBuild, _configure_and_build, build_cache_dir, find_model, run_cli
from filelock import FileLock

BUILD_INSTALL = "apt-get install -y glslc libvulkan-dev"
LAVAPIPE_INSTALL = "apt-get install -y mesa-vulkan-drivers libvulkan1"
# longer than the 32 tokens one attention dispatch covers, so the batch is split there
LONG_PROMPT = (
    "The history of the city begins with a small settlement on the river bank, where fishermen "
    "and traders met every spring to exchange goods. Over the centuries it grew into a busy port "
    "with markets, churches and"
)


def _lavapipe_manifest() -> Path | None:
    """lavapipe's driver manifest for this machine's architecture (a multiarch host may also
    have other architectures' manifests, which the loader cannot use here)."""
    for d in ("/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d", "/usr/local/share/vulkan/icd.d"):
        path = Path(d) / f"lvp_icd.{platform.machine()}.json"
        if path.is_file():
            return path
    return None


def _missing() -> str | None:
    if not sys.platform.startswith("linux"):
        return "the lavapipe tests run on Linux"
    if shutil.which("glslc") is None:
        return f"glslc is not installed: {BUILD_INSTALL}"
    if not Path("/usr/include/vulkan/vulkan_core.h").is_file():
        return f"the Vulkan headers are not installed: {BUILD_INSTALL}"
    if _lavapipe_manifest() is None:
        return f"lavapipe is not installed: {LAVAPIPE_INSTALL}"
    return None


def lavapipe_env(**extra: str) -> dict[str, str]:
    """The environment that makes the loader see lavapipe only and the backend accept it."""
    manifest = _lavapipe_manifest()
    assert manifest is not None
    env = dict(os.environ)
    env.pop("EMBER_BACKEND", None)
    env["VK_DRIVER_FILES"] = str(manifest)  # loader >= 1.3.207
    env["VK_ICD_FILENAMES"] = str(manifest)  # older loaders
    env["EMBER_VULKAN_DEVICE"] = "cpu"
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def vulkan_build(request: pytest.FixtureRequest) -> EmberBuild:
    why = _missing()
    if why:
        pytest.skip(why)
    d = build_cache_dir(request) / "vulkan"
    with FileLock(str(d) + ".lock"):
        _configure_and_build(d, ["-DEMBER_VULKAN=ON", "-DEMBER_BUILD_TESTS=OFF"])
    return EmberBuild(d, d / "ember-cli", d / "ember-bench", d / "libember.so", False)


def _model(name: str) -> Path:
    path = find_model(name)
    if path is None:
        pytest.skip(f"{name} not found (scripts/models.py downloads it)")
    return path


def _run(
    build: EmberBuild, args: list[str], env: dict[str, str]
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(build.cli), *args], capture_output=True, timeout=900, env=env)


def _generate(
    build: EmberBuild, model: Path, prompt: str, n: int, backend: str, logits: Path,
    env: dict[str, str] | None = None,
) -> dict:
    args = ["-m", str(model), "-p", prompt, "-n", str(n), "--temp", "0", "--json",
            "--backend", backend, "--logits-out", str(logits)]
    r = _run(build, args, env) if env is not None else run_cli(build, args)
    assert r.returncode == 0, r.stderr.decode()
    return json.loads(r.stdout)


def _compare(ember_build: EmberBuild, vulkan_build: EmberBuild, tmp_path: Path, model: Path,
             prompt: str, n: int) -> None:
    cpu = _generate(ember_build, model, prompt, n, "cpu", tmp_path / "cpu.bin")
    vk = _generate(vulkan_build, model, prompt, n, "vulkan", tmp_path / "vk.bin", lavapipe_env())
    assert vk["backend"] == "vulkan"
    assert "llvmpipe" in vk["device"], vk["device"]
    assert vk["generated_ids"] == cpu["generated_ids"]
    a = np.fromfile(tmp_path / "cpu.bin", dtype="<f4")
    b = np.fromfile(tmp_path / "vk.bin", dtype="<f4")
    assert a.shape == b.shape
    diff = np.flatnonzero(a.view("<u4") != b.view("<u4"))
    assert diff.size == 0, (
        f"{diff.size} logits differ, first at {diff[0]}: cpu {a[diff[0]]!r} vulkan {b[diff[0]]!r}"
    )


def test_q4_1_48_greedy_tokens_and_logits_equal_cpu(
    ember_build: EmberBuild, vulkan_build: EmberBuild, tmp_path: Path
) -> None:
    _compare(ember_build, vulkan_build, tmp_path, _model("smollm2-135m-q4_1.gguf"),
             "The capital of France is", 48)


@pytest.mark.parametrize("kind", ["f32", "f16", "q8_0", "q5_0", "q5_1"])
def test_other_types_equal_cpu(
    ember_build: EmberBuild, vulkan_build: EmberBuild, tmp_path: Path, kind: str
) -> None:
    _compare(ember_build, vulkan_build, tmp_path, _model(f"smollm2-135m-{kind}.gguf"),
             "Once upon a time", 8)


def test_batch_split_across_attention_dispatches(
    ember_build: EmberBuild, vulkan_build: EmberBuild, tmp_path: Path
) -> None:
    _compare(ember_build, vulkan_build, tmp_path, _model("smollm2-135m-q4_1.gguf"), LONG_PROMPT, 4)


def test_q4_0_single_token_steps_equal_cpu(
    ember_build: EmberBuild, vulkan_build: EmberBuild, tmp_path: Path
) -> None:
    # one-token steps use the repacked Q4_0 gemv on the CPU, which gives vec_dot's bits
    _compare(ember_build, vulkan_build, tmp_path, _model("smollm2-135m-q4_0.gguf"), "Hi", 8)


def test_unsupported_type_fails_clearly_and_auto_falls_back(
    ember_build: EmberBuild, vulkan_build: EmberBuild
) -> None:
    model = _model("smollm2-135m-q4_k_m.gguf")
    args = ["-m", str(model), "-p", "Hi", "-n", "4", "--json"]
    r = _run(vulkan_build, [*args, "--backend", "vulkan"], lavapipe_env())
    assert r.returncode != 0
    err = r.stderr.decode()
    assert "backend vulkan cannot run" in err, err
    assert "which the Vulkan backend does not run (it runs f32, f16" in err, err
    auto = _run(vulkan_build, args, lavapipe_env())
    assert auto.returncode == 0, auto.stderr.decode()
    assert "ember: vulkan:" in auto.stderr.decode() and "using cpu" in auto.stderr.decode()
    cpu = run_cli(ember_build, [*args, "--backend", "cpu"])
    assert json.loads(auto.stdout)["generated_ids"] == json.loads(cpu.stdout)["generated_ids"]


def test_device_selection_errors(vulkan_build: EmberBuild) -> None:
    model = _model("smollm2-135m-q4_1.gguf")
    args = ["-m", str(model), "-p", "Hi", "-n", "1", "--backend", "vulkan"]
    # lavapipe is a CPU device: "auto" declines it (ember's own CPU path is faster) ...
    auto = ["-m", str(model), "-p", "Hi", "-n", "1", "--backend", "auto", "--json"]
    r = _run(vulkan_build, auto, lavapipe_env(EMBER_VULKAN_DEVICE=""))
    assert r.returncode == 0, r.stderr.decode()
    assert json.loads(r.stdout)["backend"] == "cpu"
    assert "--backend vulkan or EMBER_VULKAN_DEVICE=cpu runs on it" in r.stderr.decode()
    # ... while asking for vulkan by name runs on it
    r = _run(vulkan_build, [*args, "--json"], lavapipe_env(EMBER_VULKAN_DEVICE=""))
    assert r.returncode == 0, r.stderr.decode()
    assert json.loads(r.stdout)["backend"] == "vulkan"
    assert "llvmpipe" in json.loads(r.stdout)["device"]
    r = _run(vulkan_build, args, lavapipe_env(EMBER_VULKAN_DEVICE="7"))
    assert r.returncode != 0 and "EMBER_VULKAN_DEVICE=7" in r.stderr.decode()
    r = _run(vulkan_build, args, lavapipe_env(EMBER_VULKAN_DEVICE="fast"))
    assert r.returncode != 0 and "is not gpu, cpu, any or a device index" in r.stderr.decode()


def test_no_driver_falls_back_to_cpu(vulkan_build: EmberBuild, tmp_path: Path) -> None:
    model = _model("smollm2-135m-q4_1.gguf")
    missing = tmp_path / "no_such_icd.json"
    env = lavapipe_env(VK_DRIVER_FILES=str(missing), VK_ICD_FILENAMES=str(missing))
    r = _run(vulkan_build, ["-m", str(model), "-p", "Hi", "-n", "2", "--json"], env)
    assert r.returncode == 0, r.stderr.decode()
    assert json.loads(r.stdout)["backend"] == "cpu"
    assert "ember: vulkan:" in r.stderr.decode()


def test_bench_runs_on_vulkan(vulkan_build: EmberBuild) -> None:
    model = _model("smollm2-135m-q4_1.gguf")
    r = subprocess.run(
        [str(vulkan_build.bench), "-m", str(model), "--backend", "vulkan", "--json",
         "-p", "8", "-n", "4"],
        capture_output=True, timeout=900, env=lavapipe_env(),
    )
    assert r.returncode == 0, r.stderr.decode()
    out = json.loads(r.stdout)
    assert out["backend"] == "vulkan", out
