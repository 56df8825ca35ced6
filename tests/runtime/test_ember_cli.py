"""ember-cli and ember-bench: their JSON, their exit statuses on bad input, and results that do
not depend on the thread count. Runs on the committed tiny models in well under a minute."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import TINY, EmberBuild, run_cli

MODEL = TINY / "tiny-gpt2-f32.gguf"
SPM = TINY / "tiny-spm-f32.gguf"


def _json(r: subprocess.CompletedProcess[bytes]) -> dict:
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return json.loads(r.stdout)


def test_json_has_the_documented_fields(ember_build: EmberBuild) -> None:
    out = _json(
        run_cli(
            ember_build,
            ["-m", str(MODEL), "-p", "Hello world", "-n", "5", "--json", "--ignore-eos"],
        )
    )
    for key in (
        "prompt_ids",
        "generated_ids",
        "text",
        "backend",
        "kernel",
        "load_ms",
        "prompt_ms",
        "gen_ms",
        "prompt_tok_s",
        "gen_tok_s",
    ):
        assert key in out, key
    assert len(out["generated_ids"]) == 5
    assert out["backend"] == "cpu"
    assert isinstance(out["kernel"], str) and out["kernel"]
    assert all(isinstance(i, int) for i in out["prompt_ids"])


def test_prompt_from_file_equals_prompt_argument(ember_build: EmberBuild, tmp_path: Path) -> None:
    f = tmp_path / "p.txt"
    f.write_text("The quick brown fox", encoding="utf-8")
    a = _json(run_cli(ember_build, ["-m", str(MODEL), "-f", str(f), "-n", "4", "--json"]))
    b = _json(
        run_cli(ember_build, ["-m", str(MODEL), "-p", "The quick brown fox", "-n", "4", "--json"])
    )
    assert a["prompt_ids"] == b["prompt_ids"] and a["generated_ids"] == b["generated_ids"]


@pytest.mark.parametrize("model", [MODEL, SPM], ids=["gpt2", "spm"])
def test_results_do_not_depend_on_threads(
    ember_build: EmberBuild, tmp_path: Path, model: Path
) -> None:
    runs = []
    for t in (1, 2, 3):
        lg = tmp_path / f"l{t}.bin"
        out = _json(
            run_cli(
                ember_build,
                [
                    "-m",
                    str(model),
                    "-p",
                    "Once upon a time, in a land far away",
                    "-n",
                    "16",
                    "--json",
                    "--ignore-eos",
                    "-t",
                    str(t),
                    "--logits-out",
                    str(lg),
                ],
            )
        )
        runs.append((out["generated_ids"], lg.read_bytes()))
    assert runs[0] == runs[1] == runs[2]


@pytest.mark.parametrize("model", sorted(TINY.glob("*.gguf")), ids=lambda p: p.stem)
def test_every_kernel_level_gives_the_same_bits(
    ember_build: EmberBuild, tmp_path: Path, model: Path
) -> None:
    """The SIMD levels are speed only: the scalar level and the best one agree bit for bit."""
    base = [
        "-m",
        str(model),
        "-p",
        "The quick brown fox jumps over the lazy dog",
        "-n",
        "6",
        "--json",
        "--ignore-eos",
        "-t",
        "2",
    ]
    best = _json(run_cli(ember_build, [*base, "--logits-out", str(tmp_path / "a.bin")]))
    scalar = _json(
        run_cli(ember_build, [*base, "--kernel", "scalar", "--logits-out", str(tmp_path / "b.bin")])
    )
    assert scalar["kernel"] == "scalar"
    assert best["generated_ids"] == scalar["generated_ids"]
    assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes()


def test_logits_out_holds_n_vocab_floats(ember_build: EmberBuild, tmp_path: Path) -> None:
    lg = tmp_path / "l.bin"
    _json(
        run_cli(
            ember_build,
            ["-m", str(MODEL), "-p", "Hi", "-n", "1", "--json", "--logits-out", str(lg)],
        )
    )
    assert lg.stat().st_size == 640 * 4


def test_sampling_is_reproducible_with_a_seed(ember_build: EmberBuild) -> None:
    args = [
        "-m",
        str(MODEL),
        "-p",
        "Hello",
        "-n",
        "12",
        "--json",
        "--ignore-eos",
        "--temp",
        "0.9",
        "--top-k",
        "20",
        "--top-p",
        "0.9",
        "--min-p",
        "0.01",
        "--repeat-penalty",
        "1.1",
    ]
    a = _json(run_cli(ember_build, [*args, "--seed", "42"]))
    b = _json(run_cli(ember_build, [*args, "--seed", "42"]))
    c = _json(run_cli(ember_build, [*args, "--seed", "43"]))
    assert a["generated_ids"] == b["generated_ids"]
    assert a["generated_ids"] != c["generated_ids"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-m", "/nonexistent/model.gguf", "-p", "x"], "cannot open"),
        (["-m", str(MODEL)], "no prompt"),
        (["-p", "x"], "no model"),
        (["-m", str(MODEL), "-p", "x", "--bogus"], "--bogus"),
        (["-m", str(MODEL), "-p", "x", "-n", "ten"], "-n"),
        (["-m", str(MODEL), "-p", "x", "-n", "-3"], "-n"),
        (["-m", str(MODEL), "-p", "x", "-t", "0"], "-t"),
        (["-m", str(MODEL), "-p", "x", "--temp", "nan"], "--temp"),
        (["-m", str(MODEL), "-p", "x", "--top-p", "2"], "--top-p"),
        (["-m", str(MODEL), "-p", "x", "--seed", "-1"], "--seed"),
        (["-m", str(MODEL), "-p", "x", "--backend", "cuda"], "--backend"),
        (["-m", str(MODEL), "-f", "/nonexistent/prompt.txt"], "prompt file"),
        (["-m", str(MODEL), "-p", "x", "-n", "5000"], "context"),
        (["-m", str(TINY), "-p", "x"], "not a regular file"),
        (["-m", str(MODEL), "-p"], "lacks its value"),
        (["-m", str(MODEL), "-p", "x", "--kernel", "avx9000"], "kernel level"),
    ],
)
def test_bad_input_exits_nonzero_with_a_message(
    ember_build: EmberBuild, args: list[str], needle: str
) -> None:
    r = run_cli(ember_build, args)
    assert r.returncode > 0, "must fail with an exit status, not succeed or die from a signal"
    assert needle in r.stderr.decode(errors="replace")


def test_help_and_version(ember_build: EmberBuild) -> None:
    assert run_cli(ember_build, ["--help"]).returncode == 0
    v = run_cli(ember_build, ["--version"])
    assert v.returncode == 0 and b"ember-cli" in v.stdout


def test_bench_json(ember_build: EmberBuild) -> None:
    r = subprocess.run(
        [str(ember_build.bench), "-m", str(MODEL), "-t", "2", "-p", "64", "-n", "16", "--json"],
        capture_output=True,
        timeout=300,
    )
    out = _json(r)
    assert set(out) >= {"pp_tok_s", "tg_tok_s", "peak_rss_mb", "threads", "kernel"}
    assert out["pp_tok_s"] > 0 and out["tg_tok_s"] > 0 and out["peak_rss_mb"] > 0
    assert out["threads"] == 2 and isinstance(out["kernel"], str)


@pytest.mark.parametrize(
    "args", [["-m", "/nonexistent.gguf"], ["-m", str(MODEL), "-t", "x"], ["--nope"], []]
)
def test_bench_bad_input(ember_build: EmberBuild, args: list[str]) -> None:
    r = subprocess.run([str(ember_build.bench), *args], capture_output=True, timeout=60)
    assert r.returncode > 0 and r.stderr


def test_c_unit_tests_pass(ember_build: EmberBuild) -> None:
    """runtime/tests/test_*.c, registered with CTest by runtime/CMakeLists.txt."""
    import shutil

    if shutil.which("ctest") is None:
        pytest.skip("ctest is not installed")
    r = subprocess.run(
        ["ctest", "--output-on-failure"],
        cwd=ember_build.dir,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
