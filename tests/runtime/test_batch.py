"""ember_decode_batch and ember_context_truncate (the runtime's batch API that ember-server's
parallel slots and speculative decoding use), checked against ember_decode on real models by
runtime/tests/batch_check.c."""

from __future__ import annotations

import subprocess

import pytest

from conftest import find_model, model_dir

# float weights give the same greedy tokens in a batch as alone; quantized ones need not
# (llama.cpp's kernels depend on the batch size), so only the exact checks run for them
CASES = [("f32", True), ("f16", True), ("q4_1", False), ("q4_k_m", False)]


@pytest.mark.parametrize(("variant", "same_greedy"), CASES)
def test_batch_api(ember_build, variant: str, same_greedy: bool) -> None:
    model = find_model(f"smollm2-135m-{variant}.gguf")
    if model is None:
        pytest.skip(f"smollm2-135m-{variant}.gguf is not in {model_dir()}")
    exe = ember_build.dir / "batch_check"
    argv = [str(exe), str(model)] + (["--same-greedy"] if same_greedy else [])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=ember_build.env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all checks hold" in proc.stdout
