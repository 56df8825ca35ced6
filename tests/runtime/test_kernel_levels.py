"""ember's SIMD kernel levels on CPUs this machine is not: runtime/tests/test_kernels.c built as a
static binary with zig cc and run under qemu user-mode emulation with old and new CPU models.

What it proves:
  * ember-cli built for x86-64 (baseline, static musl) generates the reference tokens on CPUs
    without AVX (Core 2: scalar, Nehalem: sse42) and on Haswell (avx2), and built for AArch64
    generates them on a Cortex-A53 (neon) and a Cortex-A76 (dotprod), on the committed tiny
    models of every tensor type and on SmolLM2-135M Q4_1 when it is present;
  * natively, ember-cli forced to each level this CPU runs (--kernel / EMBER_KERNEL) generates
    the reference tokens (the greedy-equality test of every kernel path);
  * one x86-64 binary picks its level at run time: ``scalar`` on a Core 2 (no SSE4.1),
    ``sse42`` on Nehalem and Sandy Bridge (AVX but no AVX2/FMA), ``avx2`` on Haswell;
    no AVX instruction runs where the CPU lacks it (qemu raises SIGILL and the test fails);
  * the AArch64 binary picks ``neon`` on a Cortex-A53 and ``dotprod`` on a Cortex-A76;
  * every level that runs gives the scalar reference's bits (the C test compares them);
  * EMBER_KERNEL forces a level, and a level the CPU lacks is refused, not run;
  * the scalar reference itself gives the same results on x86-64 and AArch64 (a digest).

Needs ``qemu-x86_64`` / ``qemu-aarch64`` (Debian/Ubuntu: ``apt-get install qemu-user``) and zig
(``pip install ziglang==0.17.1``); skipped with that hint when they are missing. Slow: integration.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY, EmberBuild, build_cache_dir, run_cli
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[2]
REFS = ROOT / "tests" / "runtime" / "data" / "references"
SRC = ROOT / "runtime" / "src" / "cpu"  # the kernels and their headers
SOURCES = [
    SRC / "quants.c",
    SRC / "quants_x86.c",
    SRC / "quants_arm.c",
    SRC / "kernels.c",
    SRC / "cpu_features.c",
    ROOT / "runtime" / "tests" / "test_kernels.c",
]
CFLAGS = ["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off", f"-I{SRC}"]
TIMEOUT = 900

pytestmark = pytest.mark.integration


def _zig() -> list[str]:
    if importlib.util.find_spec("ziglang") is None:
        pytest.skip("zig is not installed: pip install ziglang==0.17.1")
    return [sys.executable, "-m", "ziglang", "cc"]


def _qemu(arch: str) -> str:
    exe = shutil.which(f"qemu-{arch}")
    if exe is None:
        pytest.skip(f"qemu-{arch} is not installed: apt-get install qemu-user")
    return exe


@pytest.fixture(scope="module")
def binaries(request: pytest.FixtureRequest) -> dict[str, Path]:
    """test_kernels, static, for x86-64 and AArch64 (musl: no loader needed under qemu).

    Every xdist worker runs this module fixture: the compiles run one at a time under a lock
    (two zig processes filling the same cache entry at once is what this avoids), each into a
    temporary file renamed over the last one, so a worker still running the old binary keeps
    its copy."""
    zig = _zig()
    out = build_cache_dir(request) / "kernel-levels"
    out.mkdir(parents=True, exist_ok=True)
    built = {}
    for arch in ("x86_64", "aarch64"):
        exe = out / f"test_kernels-{arch}"
        tmp = out / f".test_kernels-{arch}.{os.getpid()}"
        # -mcpu=baseline: the release build's CPU (no AVX outside the kernels' own attributes)
        cmd = [
            *zig,
            "-target",
            f"{arch}-linux-musl",
            "-mcpu=baseline",
            "-static",
            *CFLAGS,
            *map(str, SOURCES),
            "-lm",
            "-o",
            str(tmp),
        ]
        with FileLock(str(out) + ".lock"):
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
            assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout}\n{r.stderr}"
            os.replace(tmp, exe)
        built[arch] = exe
    return built


def _run(qemu: str, cpu: str, exe: Path, kernel: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "EMBER_KERNEL"}
    if kernel is not None:
        env["EMBER_KERNEL"] = kernel
    r = subprocess.run(
        [qemu, "-cpu", cpu, str(exe)], capture_output=True, text=True, env=env, timeout=TIMEOUT
    )
    assert r.returncode == 0, (
        f"test_kernels under qemu -cpu {cpu} failed ({r.returncode}):\n"
        f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    )
    return r.stdout


def _levels(stdout: str) -> dict[str, str]:
    """level name -> 'bit-exact' | 'skipped' | 'MISMATCH'"""
    pattern = r"^level (\w+)\s+(bit-exact|skipped|MISMATCH)"
    return {m.group(1): m.group(2) for m in re.finditer(pattern, stdout, re.M)}


def _best(stdout: str) -> str:
    m = re.search(r"^best: (\w+)$", stdout, re.M)
    assert m, stdout
    return m.group(1)


def _digest(stdout: str) -> str:
    m = re.search(r"^reference digest: ([0-9a-f]+)$", stdout, re.M)
    assert m, stdout
    return m.group(1)


X86_CPUS = [
    # (qemu CPU model, level picked, levels that must run bit-exact)
    ("core2duo", "scalar", ["scalar"]),
    ("Nehalem", "sse42", ["scalar", "sse42"]),
    ("SandyBridge", "sse42", ["scalar", "sse42"]),  # AVX without AVX2/FMA: not enough for avx2
    ("Haswell", "avx2", ["scalar", "sse42", "avx2"]),
]
ARM_CPUS = [
    ("cortex-a53", "neon", ["scalar", "neon"]),
    ("cortex-a76", "dotprod", ["scalar", "neon", "dotprod"]),
]


@pytest.mark.parametrize(("cpu", "best", "exact"), X86_CPUS, ids=[c[0] for c in X86_CPUS])
def test_x86_dispatch_under_qemu(
    binaries: dict[str, Path], cpu: str, best: str, exact: list[str]
) -> None:
    out = _run(_qemu("x86_64"), cpu, binaries["x86_64"])
    levels = _levels(out)
    assert _best(out) == best, out
    assert all(levels.get(name) == "bit-exact" for name in exact), out
    assert all(state == "skipped" for name, state in levels.items() if name not in exact), out
    assert "ok:" in out


@pytest.mark.parametrize(("cpu", "best", "exact"), ARM_CPUS, ids=[c[0] for c in ARM_CPUS])
def test_arm_dispatch_under_qemu(
    binaries: dict[str, Path], cpu: str, best: str, exact: list[str]
) -> None:
    out = _run(_qemu("aarch64"), cpu, binaries["aarch64"])
    levels = _levels(out)
    assert _best(out) == best, out
    assert all(levels.get(name) == "bit-exact" for name in exact), out
    assert all(state == "skipped" for name, state in levels.items() if name not in exact), out


@pytest.mark.parametrize(
    ("kernel", "picked"),
    [("sse42", "sse42"), ("scalar", "scalar"), ("avx2", "(none: not available here)")],
)
def test_ember_kernel_env_is_honoured(binaries: dict[str, Path], kernel: str, picked: str) -> None:
    """EMBER_KERNEL forces a level; a level the CPU lacks (avx2 on Nehalem) is refused."""
    out = _run(_qemu("x86_64"), "Nehalem", binaries["x86_64"], kernel=kernel)
    assert f"EMBER_KERNEL={kernel} -> {picked}" in out, out


def test_reference_is_the_same_on_x86_and_arm(binaries: dict[str, Path]) -> None:
    x86 = _run(_qemu("x86_64"), "Nehalem", binaries["x86_64"])
    arm = _run(_qemu("aarch64"), "cortex-a76", binaries["aarch64"])
    assert _digest(x86) == _digest(arm)


# ---- whole-model token equality -----------------------------------------------------------

CLI_TARGETS = {
    "x86_64": ("x86_64-linux-musl", "x86_64"),
    "aarch64": ("aarch64-linux-musl", "aarch64"),
}
# (architecture, qemu CPU model, the level ember picks there)
CLI_CPUS = [
    ("x86_64", "core2duo", "scalar"),
    ("x86_64", "Nehalem", "sse42"),
    ("x86_64", "Haswell", "avx2"),
    ("aarch64", "cortex-a53", "neon"),
    ("aarch64", "cortex-a76", "dotprod"),
]
N_TOKENS = 12  # generated tokens compared per case (the references hold 48)


def _wrapper(folder: Path, name: str, args: str) -> Path:
    """A shell script standing for `python -m ziglang <args>` (CMake wants one program)."""
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    text = f'#!/bin/sh\nexec "{sys.executable}" -m ziglang {args} "$@"\n'
    if not p.is_file() or p.read_text() != text:
        # atomically: another pytest worker may be running the old file right now
        tmp = folder / f".{name}.{os.getpid()}"
        tmp.write_text(text)
        tmp.chmod(0o755)
        os.replace(tmp, p)
    return p


@pytest.fixture(scope="module")
def cli_builds(request: pytest.FixtureRequest) -> dict[str, Path]:
    """ember-cli, static musl, baseline CPU, for x86-64 and AArch64 (a CMake Release build)."""
    _zig()
    if shutil.which("cmake") is None or shutil.which("ninja") is None:
        pytest.skip("cmake and ninja are needed (apt-get install cmake ninja-build)")
    cache = build_cache_dir(request)
    env = dict(os.environ, ZIG_GLOBAL_CACHE_DIR=str(cache / "zig-cache"))
    out = {}
    for arch, (target, proc) in CLI_TARGETS.items():
        tools = cache / "zig-wrappers-levels"
        cc = _wrapper(tools, f"cc-{target}", f"cc -target {target} -mcpu=baseline")
        ar = _wrapper(tools, "ar", "ar")
        build = cache / f"levels-{target}"
        # every xdist worker runs this module fixture: one builds, the others wait and reuse
        with FileLock(str(build) + ".lock"):
            for cmd in (
                [
                    "cmake",
                    "-S",
                    str(ROOT / "runtime"),
                    "-B",
                    str(build),
                    "-G",
                    "Ninja",
                    f"-DCMAKE_C_COMPILER={cc}",
                    f"-DCMAKE_AR={ar}",
                    "-DCMAKE_RANLIB=/bin/true",
                    "-DCMAKE_SYSTEM_NAME=Linux",
                    f"-DCMAKE_SYSTEM_PROCESSOR={proc}",
                    "-DEMBER_WERROR=ON",
                    "-DCMAKE_BUILD_TYPE=Release",
                    # one static executable: runs under qemu-user without a musl loader
                    "-DEMBER_BUILD_SHARED=OFF",
                    "-DEMBER_BUILD_TESTS=OFF",
                    "-DCMAKE_EXE_LINKER_FLAGS=-static",
                ],
                ["cmake", "--build", str(build), "--target", "ember-cli"],
            ):
                r = subprocess.run(cmd, capture_output=True, text=True, env=env,
                                   timeout=TIMEOUT)
                assert r.returncode == 0, (f"{' '.join(cmd)}:\n{r.stdout[-4000:]}\n"
                                           f"{r.stderr[-4000:]}")
        out[arch] = build / "ember-cli"
    return out


def _token_cases() -> list[tuple[Path, Path]]:
    """(model, reference) pairs: the committed tiny models, and SmolLM2 Q4_1 when cached."""
    cases = []
    for ref in sorted(REFS.glob("tiny-spm-*.json")):
        model = TINY / (ref.stem + ".gguf")
        if model.is_file():
            cases.append((model, ref))
    cache = Path(
        os.environ.get("EMBER_TEST_MODEL_DIR", Path.home() / ".cache" / "ember" / "models")
    )
    big = cache / "smollm2-135m-q4_1.gguf"
    if big.is_file():
        cases.append((big, REFS / "smollm2-135m-q4_1.json"))
    return cases


def _cli_args(model: Path, ref: Path, tmp: Path) -> tuple[list[str], list[int], list[int]]:
    """ember-cli arguments for the reference's first prompt, its prompt ids and the first
    N_TOKENS generated ids."""
    data = json.loads(ref.read_text(encoding="utf-8"))
    prompt = data["prompts"][0]
    prompt_file = tmp / f"{ref.stem}.txt"
    prompt_file.write_bytes(prompt["text"].encode("utf-8"))
    args = [
        "-m",
        str(model),
        "-f",
        str(prompt_file),
        "-n",
        str(N_TOKENS),
        "--ignore-eos",
        "--json",
        "-c",
        str(data["settings"].get("n_ctx", 512)),
        "-t",
        "2",
    ]
    return args, prompt["prompt_ids"], prompt["generated_ids"][:N_TOKENS]


@pytest.mark.parametrize(("arch", "cpu", "level"), CLI_CPUS, ids=[c[1] for c in CLI_CPUS])
def test_cli_tokens_under_qemu(
    cli_builds: dict[str, Path], tmp_path: Path, arch: str, cpu: str, level: str
) -> None:
    """The cross-built ember-cli picks the CPU's level and generates the reference tokens."""
    qemu = _qemu(arch)
    cases = _token_cases()
    assert cases, f"no tiny models in {TINY}"
    env = {k: v for k, v in os.environ.items() if k != "EMBER_KERNEL"}
    for model, ref in cases:
        args, prompt_ids, want = _cli_args(model, ref, tmp_path)
        r = subprocess.run(
            [qemu, "-cpu", cpu, str(cli_builds[arch]), *args],
            capture_output=True,
            env=env,
            timeout=TIMEOUT,
        )
        assert r.returncode == 0, (
            f"{model.name} on {cpu}: {r.stderr.decode(errors='replace')[-3000:]}"
        )
        out = json.loads(r.stdout)
        assert out["kernel"] == level, (
            f"{model.name} on {cpu}: picked {out['kernel']}, want {level}"
        )
        assert out["prompt_ids"] == prompt_ids, (
            f"{model.name} on {cpu}: prompt tokenizes differently"
        )
        assert out["generated_ids"] == want, (
            f"{model.name} on {cpu} ({level}): generated {out['generated_ids']}, reference {want}"
        )


def _native_levels(build: EmberBuild) -> list[str]:
    """The kernel levels ember-cli accepts on this machine (it refuses the others)."""
    model = TINY / "tiny-spm-q4_1.gguf"
    levels = []
    for name in ("scalar", "sse42", "avx2", "avxvnni", "avx512", "neon", "dotprod"):
        r = run_cli(build, ["-m", str(model), "-p", "a", "-n", "1", "--json", "--kernel", name])
        if r.returncode == 0:
            levels.append(name)
    return levels


def test_every_native_level_gives_the_reference_tokens(
    ember_build: EmberBuild, tmp_path: Path
) -> None:
    """Each level this CPU runs, forced by --kernel, generates the reference tokens on every
    case: the greedy-equality check of every kernel path."""
    levels = _native_levels(ember_build)
    assert "scalar" in levels, levels
    cases = _token_cases()
    for level in levels:
        for model, ref in cases:
            args, prompt_ids, want = _cli_args(model, ref, tmp_path)
            r = run_cli(ember_build, [*args, "--kernel", level])
            assert r.returncode == 0, r.stderr.decode(errors="replace")
            out = json.loads(r.stdout)
            assert out["kernel"] == level
            assert out["prompt_ids"] == prompt_ids, f"{model.name} ({level}): prompt differs"
            assert out["generated_ids"] == want, (
                f"{model.name} ({level}): generated {out['generated_ids']}, reference {want}"
            )
