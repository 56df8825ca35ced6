"""scripts/gpu-check.sh without a GPU: argument handling, the dry-run plan, the refusals (no
nvidia-smi, a tampered release) and the report rendered from recorded results. One test runs
the whole check against stand-ins (a fake nvidia-smi and a release whose ember-cli and
ember-bench are small Python scripts), so the steps' plumbing is exercised too; the CUDA
kernels themselves are not (docs/gpu-check.md).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu-check.sh"


def _path_without_nvidia_smi(tmp_path: Path) -> str:
    """A PATH with the tools the script uses (bash, python3, coreutils, tar) and no nvidia-smi."""
    bin_dir = tmp_path / "nogpu-bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("bash", "env", "python3", "dirname", "basename", "tr", "grep", "wc", "sha256sum",
                 "tar", "gzip", "mkdir", "rm", "head", "timeout", "nproc", "cat"):
        found = shutil.which(tool)
        if found and not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(found)
    if not (bin_dir / "python3").exists():
        (bin_dir / "python3").symlink_to(sys.executable)
    return str(bin_dir)


def run(args: list[str], tmp_path: Path, path: str | None = None,
        **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PATH"] = path if path is not None else _path_without_nvidia_smi(tmp_path)
    env["HOME"] = str(tmp_path / "home")
    env.update(env_extra)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd=tmp_path)


def _archive(path: Path, top: str, files: dict[str, str]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))


FAKE_CLI = """#!/usr/bin/env python3
import json, struct, sys
a = sys.argv[1:]
backend = a[a.index("--backend") + 1]
logits = [float(i % 7) for i in range(16)]
if backend == "cuda":
    logits[3] += 0.01  # 0.01 / range 6 = 1.67e-3, within the Q4 bound
with open(a[a.index("--logits-out") + 1], "wb") as f:
    f.write(struct.pack("<16f", *logits))
ids = [5, 6, 7, 8] if backend == "cpu" else [5, 6, 9, 8]
print(json.dumps({"backend": backend, "device": "Fake GPU" if backend == "cuda" else "cpu",
                  "generated_ids": ids, "prompt_ids": [1]}))
"""
FAKE_BENCH = """#!/usr/bin/env python3
import json
print(json.dumps({"pp_tok_s": 9000.0, "tg_tok_s": 400.0, "backend": "cuda"}))
"""


def _release(tmp_path: Path, versions: tuple[str, ...] = ("12.4", "13.3")) -> Path:
    rel = tmp_path / "release"
    rel.mkdir()
    lines = []
    for v in versions:
        name = f"ember-b7-bin-ubuntu-cuda-{v}-x64.tar.gz"
        _archive(rel / name, name[: -len(".tar.gz")],
                 {"bin/ember-cli": FAKE_CLI, "bin/ember-bench": FAKE_BENCH})
        lines.append(f"{hashlib.sha256((rel / name).read_bytes()).hexdigest()}  {name}\n")
    (rel / "SHA256SUMS").write_text("".join(lines))
    return rel


def test_help_lists_the_options(tmp_path: Path) -> None:
    r = run(["--help"], tmp_path)
    assert r.returncode == 0, r.stderr
    for opt in ("--release DIR", "--model FILE", "--cuda", "--peer DIR", "--no-peer", "--out DIR",
                "--timeout SECONDS", "--dry-run", "--report-only", "-h, --help"):
        assert opt in r.stdout, opt


@pytest.mark.parametrize("args, message", [
    (["--frobnicate"], "unknown option '--frobnicate'"),
    (["--cuda", "11.8"], "--cuda: '11.8' is not one of: 12.4, 13.3"),
    (["--cuda", "12.4,"], "not one of"),
    (["--cuda", ""], "--cuda needs a value"),
    (["--timeout", "ten"], "--timeout: 'ten' is not a whole number"),
    (["--timeout", "0"], "--timeout: '0'"),
    (["--model"], "--model needs a value"),
    (["--peer", "x", "--no-peer"], "exclude each other"),
    (["--release", "/nonexistent-dir"], "is not a directory"),
])
def test_bad_arguments_exit_2_with_usage(tmp_path: Path, args: list[str], message: str) -> None:
    r = run([*args, "--dry-run"], tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr
    assert "usage: scripts/gpu-check.sh" in r.stderr
    assert r.stdout == ""


def test_dry_run_prints_the_plan_with_kiln_build(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = run(["--dry-run", "--out", str(out), "--model", "/models/m-q4_0.gguf",
             "--model", "/models/m-f16.gguf"], tmp_path)
    assert r.returncode == 0, r.stderr
    plan = r.stdout
    assert "nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader" in plan
    assert "kiln build --out" in plan
    assert "ubuntu-cuda-12.4-x64 ubuntu-cuda-13.3-x64" in plan
    for be in ("cuda", "cpu"):
        assert f"--temp 0 --ignore-eos --json --backend {be} --logits-out" in plan
    assert "-m /models/m-q4_0.gguf -p 512 -n 128 --backend cuda --json" in plan
    assert "m-q4_0.gguf: compare tokens and logits (bound 1e-2" in plan
    assert "m-f16.gguf: compare tokens and logits (bound 1e-3" in plan
    assert "llama-cpp-python==0.3.36" in plan and "-DGGML_CUDA=ON" in plan
    assert "llama-bench -m /models/m-q4_0.gguf -p 512 -n 128 -ngl 99 -o json" in plan
    assert f"{out}/report.md" in plan
    assert not out.exists(), "a dry run writes nothing"


def test_dry_run_one_cuda_no_peer(tmp_path: Path) -> None:
    r = run(["--dry-run", "--cuda", "13.3", "--no-peer"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "ubuntu-cuda-13.3-x64" in r.stdout and "12.4" not in r.stdout
    assert "peer: disabled (--no-peer)" in r.stdout
    assert "pip download" not in r.stdout


def test_dry_run_with_release_unpacks_verified_archives(tmp_path: Path) -> None:
    rel = _release(tmp_path)
    r = run(["--dry-run", "--release", str(rel), "--peer", str(tmp_path / "peer")], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "kiln build" not in r.stdout
    for v in ("12.4", "13.3"):
        assert f"tar -xzf {rel}/ember-b7-bin-ubuntu-cuda-{v}-x64.tar.gz" in r.stdout
    assert f"peer: llama-bench from {tmp_path / 'peer'}" in r.stdout


def test_release_with_tampered_sums_is_refused(tmp_path: Path) -> None:
    rel = _release(tmp_path)
    sums = rel / "SHA256SUMS"
    text = sums.read_text()
    sums.write_text(("0" if text[0] != "0" else "1") + text[1:])
    for extra in (["--dry-run"], []):
        r = run(["--release", str(rel), *extra], tmp_path)
        assert r.returncode == 4, (r.stdout, r.stderr)
        assert "does not match SHA256SUMS; refusing it" in r.stderr
        assert "ember-b7-bin-ubuntu-cuda-12.4-x64.tar.gz" in r.stderr


def test_release_without_the_archive_is_refused(tmp_path: Path) -> None:
    rel = _release(tmp_path, versions=("12.4",))
    r = run(["--release", str(rel), "--dry-run"], tmp_path)
    assert r.returncode == 4
    assert "lists no single ubuntu-cuda-13.3-x64 archive" in r.stderr
    assert run(["--release", str(rel), "--dry-run", "--cuda", "12.4"], tmp_path).returncode == 0


def test_no_gpu_exits_3_naming_nvidia_smi(tmp_path: Path) -> None:
    r = run(["--out", str(tmp_path / "out")], tmp_path)
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "nvidia-smi" in r.stderr and "not on PATH" in r.stderr


def test_nvidia_smi_listing_no_gpu_exits_3(tmp_path: Path) -> None:
    path = _path_without_nvidia_smi(tmp_path)
    smi = Path(path) / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'No devices were found' >&2\nexit 6\n")
    smi.chmod(0o755)
    r = run(["--out", str(tmp_path / "out")], tmp_path, path=path)
    assert r.returncode == 3
    assert "listed none" in r.stderr


RESULTS = [
    {"kind": "gpu", "name": "NVIDIA H100 80GB HBM3", "driver": "570.86", "compute_cap": "9.0"},
    {"kind": "compare", "cuda": "12.4", "model": "smollm2-135m-q4_1.gguf", "status": "ok",
     "tokens_equal": True, "n_tokens": 48, "first_divergence": None, "max_logit_diff": 0.0031,
     "bound": 0.01},
    {"kind": "bench", "cuda": "12.4", "model": "smollm2-135m-q4_1.gguf", "status": "ok",
     "pp_tok_s": 12000.0, "tg_tok_s": 450.0},
    {"kind": "compare", "cuda": "13.3", "model": "smollm2-135m-q4_1.gguf", "status": "ok",
     "tokens_equal": False, "n_tokens": 48, "first_divergence": 17, "max_logit_diff": 0.025,
     "bound": 0.01},
    {"kind": "bench", "cuda": "13.3", "model": "smollm2-135m-q4_1.gguf", "status": "ok",
     "pp_tok_s": 15000.0, "tg_tok_s": 500.0},
    {"kind": "peer", "status": "built", "version": "0.3.36"},
    {"kind": "peer_bench", "model": "smollm2-135m-q4_1.gguf", "status": "ok",
     "pp_tok_s": 20000.0, "tg_tok_s": 400.0},
    {"kind": "skipped", "step": "CUDA 13.3 smollm2-135m-q8_0.gguf ember-bench",
     "reason": "time budget of 600 s spent"},
]


def _write_results(path: Path, recs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def test_report_only_renders_table_and_json(tmp_path: Path) -> None:
    results = _write_results(tmp_path / "results.jsonl", RESULTS)
    out = tmp_path / "out"
    r = run(["--report-only", str(results), "--out", str(out)], tmp_path)
    assert r.returncode == 1, r.stderr  # 13.3 diverges: the verdict is FAIL
    lines = r.stdout.splitlines()
    assert "GPU: NVIDIA H100 80GB HBM3, driver 570.86, compute capability 9.0" in lines
    assert "peer: llama.cpp CUDA (llama-cpp-python 0.3.36 sdist)" in lines
    assert ("| 12.4 | smollm2-135m-q4_1.gguf | equal (48) | 3.10e-03 | 1e-02 | within | "
            "12000.0 | 450.0 | 20000.0 | 400.0 | 0.60 | 1.12 |") in lines
    assert ("| 13.3 | smollm2-135m-q4_1.gguf | first divergence at step 17 | 2.50e-02 | 1e-02 | "
            "OVER | 15000.0 | 500.0 | 20000.0 | 400.0 | 0.75 | 1.25 |") in lines
    assert ("skipped: CUDA 13.3 smollm2-135m-q8_0.gguf ember-bench (time budget of 600 s spent)"
            in lines)
    assert lines[-1] == "verdict: FAIL"
    assert (out / "report.md").read_text() == r.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["pass"] is False
    assert report["gpu"]["compute_cap"] == "9.0"
    assert [row["pass"] for row in report["rows"]] == [True, False]
    assert report["rows"][0]["pp_ratio"] == pytest.approx(0.6)
    assert report["rows"][1]["compare"]["first_divergence"] == 17
    assert len(report["skipped"]) == 1


def test_report_only_pass_and_peer_not_built(tmp_path: Path) -> None:
    recs = [r for r in RESULTS[:3]] + [
        {"kind": "peer", "status": "not built", "reason": "no CUDA toolkit: nvcc not on PATH"}]
    results = _write_results(tmp_path / "results.jsonl", recs)
    r = run(["--report-only", str(results), "--out", str(tmp_path / "out")], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "peer: not built (no CUDA toolkit: nvcc not on PATH)" in r.stdout
    assert ("| 12.4 | smollm2-135m-q4_1.gguf | equal (48) | 3.10e-03 | 1e-02 | within | "
            "12000.0 | 450.0 | - | - | - | - |") in r.stdout
    assert r.stdout.splitlines()[-1] == "verdict: PASS"


def test_report_only_failed_step_and_bad_file(tmp_path: Path) -> None:
    recs = [{"kind": "compare", "cuda": "12.4", "model": "m.gguf", "status": "failed",
             "reason": "ember-cli --backend cuda failed"}]
    results = _write_results(tmp_path / "results.jsonl", recs)
    r = run(["--report-only", str(results), "--out", str(tmp_path / "out")], tmp_path)
    assert r.returncode == 1
    assert "| 12.4 | m.gguf | failed (ember-cli --backend cuda failed) |" in r.stdout
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    r = run(["--report-only", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "o2")],
            tmp_path)
    assert r.returncode != 0 and "bad.jsonl:1: not a JSON line" in r.stderr
    r = run(["--report-only", str(tmp_path / "missing.jsonl")], tmp_path)
    assert r.returncode == 2


def test_full_run_against_stand_ins(tmp_path: Path) -> None:
    """The whole run with a fake nvidia-smi and fake ember tools: the steps record what the
    report shows (a divergence at step 2, the logit ratio, the bench rates)."""
    rel = _release(tmp_path)
    path = _path_without_nvidia_smi(tmp_path)
    smi = Path(path) / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'Fake GPU, 570.86, 9.0'\n")
    smi.chmod(0o755)
    model = tmp_path / "smollm2-135m-q4_1.gguf"
    model.write_bytes(b"GGUF")
    out = tmp_path / "out"
    r = run(["--release", str(rel), "--model", str(model), "--cuda", "12.4", "--no-peer",
             "--out", str(out), "--timeout", "60"], tmp_path, path=path)
    assert r.returncode == 1, (r.stdout, r.stderr)  # the fake CUDA tokens diverge
    assert "GPU: Fake GPU, driver 570.86, compute capability 9.0" in r.stdout
    assert "peer: disabled (--no-peer)" in r.stdout
    assert ("| 12.4 | smollm2-135m-q4_1.gguf | first divergence at step 2 | 1.67e-03 | 1e-02 | "
            "within | 9000.0 | 400.0 | - | - | - | - |") in r.stdout
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [x["kind"] for x in recs] == ["gpu", "compare", "bench", "peer"]
    assert json.loads((out / "report.json").read_text())["pass"] is False


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_gpu_check_passes_shellcheck() -> None:
    done = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
