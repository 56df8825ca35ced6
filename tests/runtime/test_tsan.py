"""One model shared by four threads, under ThreadSanitizer.

ember.h promises that a loaded model is read-only and may be used by many threads at once.
ember_model_meta_str used to grow a cache of copies inside the shared model, and the calls
that take a model wrote their error messages into it: two threads on one model raced (TSan
reported both). runtime/tests/shared_model_threads.c loads one micro model and runs four
threads, each with its own context, that read metadata, tokenize, provoke and read back errors,
create contexts and generate; built with -DEMBER_TSAN=ON it must finish with no report, and
every thread must see the results of a single thread and its own error messages.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import RUNTIME, build_cache_dir
from filelock import FileLock
from micro_gguf import write_micro_model


def _compiler() -> str:
    return os.environ.get("CC") or "cc"


def _tsan_unsupported(tmp: Path) -> str | None:
    """Why the C compiler cannot build a ThreadSanitizer program, or None when it can."""
    cc = _compiler()
    if shutil.which(cc) is None:
        return f"no C compiler ({cc})"
    src = tmp / "tsan_probe.c"
    src.write_text("int main(void) { return 0; }\n")
    r = subprocess.run(
        [cc, "-fsanitize=thread", str(src), "-o", str(tmp / "tsan_probe")],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        return f"{cc} cannot build with -fsanitize=thread: {r.stderr.strip()[-300:]}"
    return None


def _build(request: pytest.FixtureRequest, tmp: Path) -> Path:
    for tool in ("cmake", "ninja"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (needed to build ember)")
    why = _tsan_unsupported(tmp)
    if why:
        pytest.skip(f"ThreadSanitizer is not available: {why}")
    d = build_cache_dir(request) / "tsan"
    configure = [
        "cmake", "-S", str(RUNTIME), "-B", str(d), "-G", "Ninja",
        f"-DCMAKE_C_COMPILER={shutil.which(_compiler())}",
        "-DCMAKE_BUILD_TYPE=RelWithDebInfo", "-DEMBER_TSAN=ON", "-DEMBER_WERROR=ON",
        "-DEMBER_BUILD_TOOLS=OFF", "-DEMBER_BUILD_SHARED=OFF",
    ]  # fmt: skip
    with FileLock(str(d) + ".lock"):
        for step in (configure, ["cmake", "--build", str(d), "--target", "shared_model_threads"]):
            r = subprocess.run(step, capture_output=True, text=True)
            if r.returncode != 0:
                out = f"{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
                pytest.fail(f"{' '.join(step)} failed ({r.returncode}):\n{out}")
    exe = d / "shared_model_threads"
    assert exe.exists(), f"{exe} was not built"
    return exe


def _run(exe: Path, model: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TSAN_OPTIONS="halt_on_error=0:exitcode=66:second_deadlock_stack=1")
    cmd = [str(exe), str(model), "4", "3"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if "unexpected memory mapping" in r.stderr and shutil.which("setarch"):
        # older TSan runtimes cannot cope with the high mmap randomisation of recent kernels;
        # the usual remedy is to run without address randomisation
        r = subprocess.run(
            ["setarch", platform.machine(), "-R", *cmd],
            capture_output=True, text=True, env=env, timeout=600,
        )  # fmt: skip
    return r


@pytest.mark.integration
def test_one_model_four_threads_no_data_race(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    pytest.importorskip("gguf")
    exe = _build(request, tmp_path)
    model = write_micro_model(tmp_path / "micro.gguf")
    r = _run(exe, model)
    assert "ThreadSanitizer" not in r.stderr, r.stderr[-8000:]
    assert r.returncode == 0, f"exit {r.returncode}:\n{r.stdout}\n{r.stderr[-8000:]}"
    assert "ok: 4 threads x 3 rounds on one model" in r.stdout
