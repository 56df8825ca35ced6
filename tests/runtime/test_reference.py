"""ember against llama.cpp, token for token, on the committed reference outputs.

Each ``tests/runtime/data/references/<model>.json`` (made by scripts/make_references.py with
llama-cpp-python on the CPU, flash attention off, n_ctx 512, whole prompt in one batch, greedy,
48 tokens without stopping at end-of-generation) holds per prompt the prompt's token ids, the
generated ids and the first step's logits. For every prompt this test runs ember-cli with the
same settings and requires:

* ``prompt_ids`` equal,
* ``generated_ids`` equal, all 48 (on a mismatch the message gives the first differing step and
  the reference's top-1/top-2 margin there, which tells a near-tie from a real error),
* the first step's logits within ``LOGIT_ATOL`` of the reference's, element by element (all of
  them for the tiny vocabularies, the stored top entries for SmolLM2's).

Models: the tiny ones are committed; the SmolLM2 ones are looked up in $EMBER_TEST_MODEL_DIR
(skipped when absent) and their tests are marked ``integration``. A model file whose sha256
differs from the one the reference was made from makes its tests skip (downloaded models) or
fail (committed tiny models, where it means the reference is stale).
"""

from __future__ import annotations

import json
import struct
from functools import cache
from pathlib import Path

import pytest
from conftest import (
    TINY,
    EmberBuild,
    find_model,
    load_reference,
    model_dir,
    reference_files,
    run_cli,
    sha256_file,
)

# Logits are compared with this absolute tolerance. ember follows ggml's kernels and summation
# orders, and on x86-64 Linux with glibc (where the references were made) its first-step logits
# are bit-identical to llama.cpp's for every reference type measured; the tolerance leaves room
# for a libm whose cosf/expf differ in the last place on other platforms.
LOGIT_ATOL = 1e-3


def _cases() -> list[object]:
    params: list[object] = []
    for ref_path in reference_files():
        ref = load_reference(ref_path)
        tiny = (TINY / ref["model"]["file"]).exists() or ref["model"]["file"].startswith("tiny-")
        marks = [] if tiny else [pytest.mark.integration]
        for i, p in enumerate(ref["prompts"]):
            params.append(pytest.param(ref_path, i, id=f"{ref_path.stem}-{p['name']}", marks=marks))
    if not params:
        params.append(
            pytest.param(
                None,
                0,
                id="no-references",
                marks=pytest.mark.skip(
                    reason="no reference files in tests/runtime/data/references"
                ),
            )
        )
    return params


@cache
def _model_for(ref_path: Path) -> tuple[Path | None, str]:
    """The model file of a reference and, when unusable, why."""
    ref = load_reference(ref_path)
    name = ref["model"]["file"]
    path = find_model(name)
    if path is None:
        return None, f"model {name} not found in {TINY} or {model_dir()} (set EMBER_TEST_MODEL_DIR)"
    want = ref["model"].get("sha256")
    if want and sha256_file(path) != want:
        return (
            None,
            f"{path} has sha256 {sha256_file(path)[:16]}..., "
            f"the reference was made from {want[:16]}...",
        )
    return path, ""


def _read_logits(path: Path) -> list[float]:
    data = path.read_bytes()
    return list(struct.unpack(f"<{len(data) // 4}f", data))


@pytest.mark.parametrize(("ref_path", "index"), _cases())
def test_matches_llama_cpp(
    ember_build: EmberBuild, tmp_path: Path, ref_path: Path, index: int
) -> None:
    ref = load_reference(ref_path)
    model, why = _model_for(ref_path)
    if model is None:
        if model_is_committed(ref):
            pytest.fail(f"stale reference {ref_path.name}: {why}")
        pytest.skip(why)
    prompt = ref["prompts"][index]
    n_predict = int(ref["settings"].get("n_predict", 48))
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_bytes(prompt["text"].encode("utf-8"))
    logits_file = tmp_path / "logits.bin"
    args = [
        "-m",
        str(model),
        "-f",
        str(prompt_file),
        "-n",
        str(n_predict),
        "--ignore-eos",
        "--json",
        "-c",
        str(ref["settings"].get("n_ctx", 512)),
        "--logits-out",
        str(logits_file),
    ]
    r = run_cli(ember_build, args)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    out = json.loads(r.stdout)

    assert out["prompt_ids"] == prompt["prompt_ids"], "the prompt tokenizes differently"

    got, want = out["generated_ids"], prompt["generated_ids"]
    if got != want:
        step = next(
            (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
            min(len(got), len(want)),
        )
        margins = prompt.get("step_margins") or []
        margin = f"{margins[step]:.4g}" if step < len(margins) else "?"
        pytest.fail(
            f"generated ids differ from step {step} on "
            f"(reference top-1/top-2 margin there: {margin})\n"
            f"  ember:     {got}\n  llama.cpp: {want}"
        )

    logits = _read_logits(logits_file)
    assert len(logits) == ref["model"].get("n_vocab", len(logits))
    first = prompt["first_step"]
    if "logits" in first:  # small vocabularies: every logit
        pairs = list(enumerate(first["logits"]))
    else:  # large ones: the top entries (id, logit)
        pairs = [(int(i), float(v)) for i, v in first["top"]]
    worst_id, worst_ref = max(pairs, key=lambda p: abs(logits[p[0]] - p[1]))
    diff = abs(logits[worst_id] - worst_ref)
    assert diff <= LOGIT_ATOL, (
        f"first-step logit of token {worst_id}: ember {logits[worst_id]}, "
        f"llama.cpp {worst_ref} (|diff| {diff:.3g} > {LOGIT_ATOL})"
    )


def model_is_committed(ref: dict) -> bool:
    return (TINY / ref["model"]["file"]).exists()
