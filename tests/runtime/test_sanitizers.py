"""ember built with AddressSanitizer + UndefinedBehaviorSanitizer runs the test prompts on every
committed tiny model without a report, and gives the same tokens as the release build; and the
GGUF fuzzer runs for a short while without finding a crash. Both are slow: integration."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import (
    ROOT,
    TINY,
    EmberBuild,
    build_cache_dir,
    load_reference,
    reference_files,
    run_cli,
)

PROMPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "def f(x):\n    return x * 2\n",
    "<|im_start|>user\nHi!<|im_end|>\n",
    "ünïcödé ✓ 日本語 🙂",
    "   spaces\t\ttabs\n\n",
]


def _prompts() -> list[str]:
    for ref in reference_files():
        return [p["text"] for p in load_reference(ref)["prompts"]]
    return PROMPTS


@pytest.mark.integration
@pytest.mark.parametrize("model", sorted(TINY.glob("*.gguf")), ids=lambda p: p.stem)
def test_asan_ubsan_clean_and_same_tokens(
    ember_build: EmberBuild, ember_asan_build: EmberBuild, model: Path, tmp_path: Path
) -> None:
    for i, text in enumerate(_prompts()[:4]):
        pf = tmp_path / f"p{i}.txt"
        pf.write_bytes(text.encode())
        args = ["-m", str(model), "-f", str(pf), "-n", "12", "--ignore-eos", "--json", "-t", "2"]
        san = run_cli(ember_asan_build, args)
        err = san.stderr.decode(errors="replace")
        assert san.returncode == 0 and "Sanitizer" not in err and "runtime error" not in err, err[
            -4000:
        ]
        rel = run_cli(ember_build, args)
        assert json.loads(san.stdout)["generated_ids"] == json.loads(rel.stdout)["generated_ids"]


def _poisoned(src: Path, dst: Path, tensor: str, value: float) -> None:
    """Copy ``src`` with every element of the F32 tensor ``tensor`` set to ``value``."""
    gguf = pytest.importorskip("gguf")
    shutil.copyfile(src, dst)
    reader = gguf.GGUFReader(str(dst), "r+")
    hit = [t for t in reader.tensors if t.name == tensor]
    assert hit and hit[0].tensor_type == gguf.GGMLQuantizationType.F32, tensor
    hit[0].data[...] = value
    reader.data.flush()


@pytest.mark.integration
@pytest.mark.parametrize("value", [float("inf"), float("nan")], ids=["inf", "nan"])
@pytest.mark.parametrize("model", ["q8_0", "q4_1", "q4_k_m"])
def test_inf_and_nan_weights_are_not_undefined_behaviour(
    ember_asan_build: EmberBuild, model: str, value: float, tmp_path: Path
) -> None:
    """A model whose weights hold inf or NaN turns activations into NaN; quantizing those for
    the next matmul converted NaN to int8, which is undefined in C (UBSan's
    float-cast-overflow, part of EMBER_SANITIZE). Every kernel level must stay defined: the
    output is garbage, but the run ends normally with no sanitizer report."""
    path = tmp_path / "poisoned.gguf"
    _poisoned(TINY / f"tiny-gpt2-{model}.gguf", path, "blk.0.attn_norm.weight", value)
    for kernel in ("scalar", "auto"):
        args = ["-m", str(path), "-p", "Hello there, how are you", "-n", "4", "--json",
                "-t", "2", "--temp", "0.8", "--seed", "1"]
        if kernel != "auto":
            args += ["--kernel", kernel]
        r = run_cli(ember_asan_build, args)
        err = r.stderr.decode(errors="replace")
        assert r.returncode == 0 and "Sanitizer" not in err and "runtime error" not in err, (
            f"--kernel {kernel}: {err[-4000:]}")
        assert len(json.loads(r.stdout)["generated_ids"]) == 4


@pytest.mark.integration
def test_fuzz_gguf_reader_30s(request: pytest.FixtureRequest) -> None:
    if shutil.which("clang") is None:
        pytest.skip(
            "clang with libFuzzer is not installed (apt-get install clang libclang-rt-14-dev)"
        )
    build = build_cache_dir(request) / "fuzz"
    seconds = os.environ.get("EMBER_FUZZ_SECONDS", "30")
    r = subprocess.run(
        ["sh", str(ROOT / "runtime" / "fuzz" / "run_fuzz.sh"), seconds, str(build)],
        capture_output=True,
        text=True,
        timeout=int(seconds) + 600,
    )
    assert r.returncode == 0, (
        f"fuzzer found a problem (inputs in {build}/artifacts):\n{r.stderr[-6000:]}"
    )
    assert "Done" in r.stderr
