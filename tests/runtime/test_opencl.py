"""The OpenCL backend on PoCL (the portable OpenCL implementation for CPUs): ember built with
EMBER_OPENCL=ON must give the CPU build's greedy tokens and, where it mirrors the CPU's
numerics, its logits bit for bit. The backend uses CPU OpenCL devices only when asked
(EMBER_OPENCL_DEVICE=cpu, or --backend opencl by name), so these tests set that; a machine
whose only OpenCL device is a CPU falls back to the CPU path under ``--backend auto``.

Skipped, with the command that installs it, where PoCL is not installed (Linux only).
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, EmberBuild, _configure_and_build, build_cache_dir, find_model, run_cli
from filelock import FileLock

POCL_INSTALL = "apt-get install -y pocl-opencl-icd ocl-icd-libopencl1"
SMOLLM = "smollm2-135m-q4_1.gguf"
# longer than the 32 tokens one attention launch covers, so the batch is split there
PROMPT = (
    "The history of the city begins with a small settlement on the river bank, where fishermen "
    "and traders met every spring to exchange goods. Over the centuries it grew into a busy port "
    "with markets, churches and"
)


def _pocl_missing() -> str | None:
    if not sys.platform.startswith("linux"):
        return "the PoCL tests run on Linux"
    try:
        ctypes.CDLL("libOpenCL.so.1")
    except OSError:
        return f"no OpenCL ICD loader (libOpenCL.so.1): {POCL_INSTALL}"
    vendors = Path(os.environ.get("OCL_ICD_VENDORS", "/etc/OpenCL/vendors"))
    if not any(vendors.glob("*pocl*.icd")):
        return f"PoCL is not installed (no {vendors}/pocl.icd): {POCL_INSTALL}"
    return None


pytestmark = pytest.mark.skipif(_pocl_missing() is not None, reason=str(_pocl_missing()))


@pytest.fixture(scope="module")
def opencl_build(request: pytest.FixtureRequest) -> EmberBuild:
    d = build_cache_dir(request) / "opencl"
    with FileLock(str(d) + ".lock"):
        _configure_and_build(d, ["-DEMBER_OPENCL=ON", "-DEMBER_BUILD_TESTS=OFF"])
    return EmberBuild(d, d / "ember-cli", d / "ember-bench", d / "libember.so", False)


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("EMBER_BACKEND", "EMBER_OPENCL_DEVICE", "EMBER_OPENCL_VARIANT",
                "EMBER_OPENCL_PORTABLE"):
        env.pop(var, None)
    env.update(extra)
    return env


def _run(build: EmberBuild, args: list[str],
         env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(build.cli), *args], capture_output=True, timeout=900, env=env)


def _generate(
    build: EmberBuild, model: Path, prompt: str, n: int, backend: str, tmp: Path, **env: str
) -> tuple[dict, np.ndarray]:
    logits = tmp / f"logits-{backend}-{env.get('EMBER_OPENCL_VARIANT', '')}-{model.stem}.bin"
    args = ["-m", str(model), "-p", prompt, "-n", str(n), "--temp", "0", "--json", "--ignore-eos",
            "--backend", backend, "--logits-out", str(logits)]
    if backend == "cpu":
        r = run_cli(build, args)
    else:
        r = _run(build, args, _env(EMBER_OPENCL_DEVICE="cpu", **env))
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return json.loads(r.stdout), np.fromfile(logits, dtype=np.float32)


def _max_diff(a: np.ndarray, b: np.ndarray) -> str:
    return f"logits differ by up to {float(np.abs(a - b).max())}"


def test_smollm2_q4_1_greedy_48_tokens_equal_the_cpu(
    ember_build: EmberBuild, opencl_build: EmberBuild, tmp_path: Path
) -> None:
    model = find_model(SMOLLM)
    if model is None:
        pytest.skip(f"{SMOLLM} not found (python scripts/models.py fetches it)")
    cpu, cpu_logits = _generate(ember_build, model, PROMPT, 48, "cpu", tmp_path)
    ocl, ocl_logits = _generate(opencl_build, model, PROMPT, 48, "opencl", tmp_path)
    assert ocl["backend"] == "opencl"
    assert "Portable Computing Language" in ocl["device"], ocl["device"]
    assert len(cpu["prompt_ids"]) > 32
    assert ocl["generated_ids"] == cpu["generated_ids"]
    # the prompt's logits (a batch through every kernel) are the CPU's bit for bit
    assert ocl_logits.tobytes() == cpu_logits.tobytes(), _max_diff(ocl_logits, cpu_logits)


@pytest.mark.parametrize(
    "wtype", ["f32", "f16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_k_m", "q5_k_m", "q6_k"]
)
def test_each_supported_type_gives_the_cpu_bits(
    ember_build: EmberBuild, opencl_build: EmberBuild, tmp_path: Path, wtype: str
) -> None:
    """Every weight type the backend takes, through each matmul kernel the CPU picks: a long
    prompt (batch kernels: sgemm, the repacked gemm, the tiled K-quant matmul) and decoding
    (single-row kernels)."""
    model = TINY / f"tiny-spm-{wtype}.gguf"
    prompt = PROMPT
    cpu, cpu_logits = _generate(ember_build, model, prompt, 12, "cpu", tmp_path)
    ocl, ocl_logits = _generate(opencl_build, model, prompt, 12, "opencl", tmp_path)
    assert ocl["generated_ids"] == cpu["generated_ids"]
    assert ocl_logits.tobytes() == cpu_logits.tobytes(), _max_diff(ocl_logits, cpu_logits)


@pytest.mark.parametrize("wtype", ["q4_1", "q4_k_m"])
def test_adreno_variant_with_portable_numerics_matches_on_pocl(
    ember_build: EmberBuild, opencl_build: EmberBuild, tmp_path: Path, wtype: str
) -> None:
    """The Adreno kernels (Qualcomm extensions behind #ifdef) compile with any OpenCL C
    compiler and compute the same numbers; built as for a GPU without fp64 and without
    correctly rounded division (EMBER_OPENCL_PORTABLE=1, as Adreno is), still the CPU's."""
    model = TINY / f"tiny-gpt2-{wtype}.gguf"
    cpu, cpu_logits = _generate(ember_build, model, PROMPT, 12, "cpu", tmp_path)
    ocl, ocl_logits = _generate(opencl_build, model, PROMPT, 12, "opencl", tmp_path,
                                EMBER_OPENCL_VARIANT="adreno", EMBER_OPENCL_PORTABLE="1")
    assert "adreno kernels, portable numerics" in ocl["device"], ocl["device"]
    assert ocl["generated_ids"] == cpu["generated_ids"]
    assert ocl_logits.tobytes() == cpu_logits.tobytes()


def test_unsupported_type_fails_with_why_and_auto_falls_back(opencl_build: EmberBuild) -> None:
    model = TINY / "tiny-spm-bf16.gguf"
    args = ["-m", str(model), "-p", "Hello", "-n", "4", "--json"]
    r = _run(opencl_build, [*args, "--backend", "opencl"], _env(EMBER_OPENCL_DEVICE="cpu"))
    assert r.returncode != 0
    err = r.stderr.decode()
    assert "bf16" in err and "not supported by the OpenCL backend" in err, err
    auto = _run(opencl_build, args, _env(EMBER_OPENCL_DEVICE="cpu"))
    assert auto.returncode == 0, auto.stderr.decode()
    assert json.loads(auto.stdout)["backend"] == "cpu"
    assert "ember: opencl: tensor type bf16" in auto.stderr.decode()


def test_cpu_devices_are_used_only_when_asked(opencl_build: EmberBuild) -> None:
    """auto declines an OpenCL CPU device (ember's CPU path is faster); --backend opencl takes
    it when there is no GPU."""
    args = ["-m", str(TINY / "tiny-gpt2-q8_0.gguf"), "-p", "Hello", "-n", "4", "--json"]
    gpu = _run(opencl_build, [*args, "--backend", "opencl"], _env(EMBER_OPENCL_DEVICE="gpu"))
    if gpu.returncode == 0:
        pytest.skip("this machine has an OpenCL GPU")
    assert "no OpenCL GPU" in gpu.stderr.decode(), gpu.stderr.decode()
    auto = _run(opencl_build, args, _env())
    assert auto.returncode == 0 and json.loads(auto.stdout)["backend"] == "cpu"
    assert "--backend opencl or EMBER_OPENCL_DEVICE=cpu runs on it" in auto.stderr.decode()
    named = _run(opencl_build, [*args, "--backend", "opencl"], _env())
    assert named.returncode == 0, named.stderr.decode()
    assert json.loads(named.stdout)["backend"] == "opencl"
    bad = _run(opencl_build, [*args, "--backend", "opencl"], _env(EMBER_OPENCL_DEVICE="fast"))
    assert bad.returncode != 0 and "EMBER_OPENCL_DEVICE='fast'" in bad.stderr.decode()


def test_bench_runs_on_opencl(opencl_build: EmberBuild) -> None:
    r = subprocess.run(
        [str(opencl_build.bench), "-m", str(TINY / "tiny-spm-q8_0.gguf"), "-p", "16", "-n", "8",
         "-r", "1", "--backend", "opencl", "--json"],
        capture_output=True, timeout=600, env=_env(EMBER_OPENCL_DEVICE="cpu"),
    )
    assert r.returncode == 0, r.stderr.decode()
    out = json.loads(r.stdout)
    assert out["backend"] == "opencl"
    assert out["pp_tok_s"] > 0 and out["tg_tok_s"] > 0
