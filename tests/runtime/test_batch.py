"""ember_decode_batch and ember_context_truncate (the runtime's batch API that ember-server's
parallel slots and speculative decoding use), checked against ember_decode on real models by
runtime/tests/batch_check.c."""

from __future__ import annotations

import subprocess

import pytest
from conftest import find_model, model_dir

# Exact sequences and staggered requests must give one-token decoding's bits for every type
# (repacked Q4_0, K-quants, floats). Float weights also give the same greedy tokens when several
# prompts share a pass; quantized ones need not (llama.cpp's kernels depend on the batch size),
# so that check runs for the float types only.
CASES = [
    ("f32", True),
    ("f16", True),
    ("q4_0", False),
    ("q4_1", False),
    ("q4_k_m", False),
    ("q6_k", False),
]


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
