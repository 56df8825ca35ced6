"""ember-bench -d DEPTH: pp and tg measured after DEPTH tokens are already in the KV cache (as
llama-bench -d), the depth in the JSON, and a depth beyond the model's context refused.

The tiny models hold 256 tokens of context, so the depths here are small."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from conftest import TINY, EmberBuild

MODEL = TINY / "tiny-gpt2-f32.gguf"
N_CTX_TRAIN = 256  # llama.context_length of the tiny models


def _bench(build: EmberBuild, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(build.bench), "-m", str(MODEL), "-t", "2", *args],
        capture_output=True,
        timeout=300,
        env=build.env(),
    )


def _json(r: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def test_depth_is_measured_and_reported(ember_build: EmberBuild) -> None:
    out = _json(_bench(ember_build, "-d", "32", "-p", "8", "-n", "4", "-r", "1", "--json"))
    assert out["depth"] == 32
    assert out["n_prompt"] == 8 and out["n_gen"] == 4
    assert out["pp_tok_s"] > 0 and out["tg_tok_s"] > 0
    assert out["n_ctx"] >= 32 + 8


def test_depth_in_the_text_output(ember_build: EmberBuild) -> None:
    r = _bench(ember_build, "--depth", "16", "-p", "8", "-n", "4")
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    text = r.stdout.decode()
    assert "| pp8 @ d16 |" in text and "| tg4 @ d16 |" in text


def test_depth_beyond_the_context_is_refused(ember_build: EmberBuild) -> None:
    r = _bench(ember_build, "-d", "300", "-p", "8", "-n", "4", "--json")
    assert r.returncode != 0
    assert not r.stdout.strip()
    err = r.stderr.decode(errors="replace")
    assert "300" in err and "308" in err and str(N_CTX_TRAIN) in err, err


def test_depth_that_just_fits_runs(ember_build: EmberBuild) -> None:
    out = _json(_bench(ember_build, "-d", str(N_CTX_TRAIN - 8), "-p", "8", "-n", "8", "--json"))
    assert out["depth"] == N_CTX_TRAIN - 8 and out["tg_tok_s"] > 0


def test_without_depth_the_json_says_zero(ember_build: EmberBuild) -> None:
    out = _json(_bench(ember_build, "-p", "8", "-n", "4", "--json"))
    assert out["depth"] == 0 and out["pp_tok_s"] > 0 and out["tg_tok_s"] > 0


def test_bad_depth_is_a_usage_error(ember_build: EmberBuild) -> None:
    for bad in ("-1", "x"):
        r = _bench(ember_build, "-d", bad)
        assert r.returncode == 1 and b"-d" in r.stderr
