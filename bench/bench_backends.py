#!/usr/bin/env python3
"""Speed of ember's non-CPU backends on this machine, as ratios against ember's own CPU
backend: Vulkan on lavapipe (Mesa's software Vulkan driver), OpenCL on PoCL, OpenVINO on its
CPU plugin. All of them compute on the same CPU cores here, so the ratio says what a backend's
overhead costs, not what a real GPU would give.

It configures and builds ember once with every backend option that this host can build
(``EMBER_VULKAN``, ``EMBER_OPENCL``, ``EMBER_OPENVINO``), then runs ``ember-bench --json``
with ``--backend cpu`` and ``--backend <name>`` alternately, several repetitions each, and
prints the medians of prompt processing (pp) and token generation (tg) and the ratio
backend/cpu. A backend that does not start (no driver, no runtime) is reported as such with
ember's reason; it is never replaced by the CPU silently (ember-bench's JSON names the backend
that actually ran and the bench checks it).

With ``--peer-vulkan LLAMA_BENCH`` (the path ``scripts/peer_vulkan.sh`` prints: llama.cpp's
own Vulkan backend built from the llama-cpp-python 0.3.36 sdist), each repetition also runs
``llama-bench -ngl 99`` with the same model, threads, pp and tg on the same Vulkan device, and
the table gains that row and the ratio ember Vulkan / llama.cpp Vulkan.

Usage::

    python bench/bench_backends.py [--model smollm2-135m-q4_1] [--threads 2] [-p 128] [-n 32]
                                   [--reps 3] [--backends vulkan,opencl,openvino]
                                   [--peer-vulkan LLAMA_BENCH]
                                   [--build DIR] [--json FILE] [--markdown FILE]

The model comes from scripts/models.py's cache (``python scripts/models.py fetch``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BACKENDS = ("vulkan", "opencl", "openvino")
OPTION = {"vulkan": "EMBER_VULKAN", "opencl": "EMBER_OPENCL", "openvino": "EMBER_OPENVINO"}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def model_path(name: str) -> Path:
    sys.path.insert(0, str(REPO / "scripts"))
    import models  # scripts/models.py

    path = Path(name)
    if path.is_file():
        return path
    found = models.default_cache_dir() / f"{name}.gguf"
    if not found.is_file():
        sys.exit(f"bench_backends: no model {found}; run: python scripts/models.py fetch")
    return found


def build(build_dir: Path, backends: list[str]) -> None:
    """Configure + build ember with the backends' options; one failing option is fatal (the
    caller asked for that backend)."""
    opts = [f"-D{OPTION[b]}=ON" for b in backends]
    subprocess.run(["cmake", "-S", str(REPO / "runtime"), "-B", str(build_dir), "-G", "Ninja",
                    "-DCMAKE_BUILD_TYPE=Release", "-DEMBER_BUILD_TESTS=OFF", *opts],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build_dir), "--target", "ember-bench"], check=True,
                   stdout=subprocess.DEVNULL)


def openvino_env() -> dict[str, str]:
    """``EMBER_OPENVINO_LIB`` from the ``openvino`` package of this Python, unless it is set."""
    if os.environ.get("EMBER_OPENVINO_LIB"):
        return {}
    try:
        import openvino
    except ImportError:
        return {}
    libs = sorted((Path(openvino.__file__).parent / "libs").glob("libopenvino_c.so*"))
    return {"EMBER_OPENVINO_LIB": str(libs[0])} if libs else {}


def run_bench(exe: Path, model: Path, backend: str, args: argparse.Namespace) -> dict[str, Any]:
    argv = [str(exe), "-m", str(model), "-t", str(args.threads), "-p", str(args.prompt),
            "-n", str(args.gen), "-r", "1", "--backend", backend, "--json"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=args.timeout,
                       env={**os.environ, **openvino_env()})
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip()
                           else f"exit {r.returncode}")
    out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    if out.get("backend") != backend:
        raise RuntimeError(f"asked for {backend}, ember ran on {out.get('backend')}")
    return out


def run_peer(exe: Path, model: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One llama-bench run of llama.cpp's Vulkan backend: pp and tg tokens/s and the device.
    ``GGML_VK_VISIBLE_DEVICES=0`` makes ggml-vulkan use the first device even when it is a
    CPU-type one (lavapipe), which it otherwise leaves out."""
    argv = [str(exe), "-m", str(model), "-t", str(args.threads), "-p", str(args.prompt),
            "-n", str(args.gen), "-r", "1", "-ngl", "99", "-o", "json"]
    env = {**os.environ, "GGML_VK_VISIBLE_DEVICES": os.environ.get("GGML_VK_VISIBLE_DEVICES",
                                                                     "0")}
    r = subprocess.run(argv, capture_output=True, text=True, timeout=args.timeout, env=env)
    if r.returncode != 0:
        tail = r.stderr.strip().splitlines()
        raise RuntimeError(tail[-1] if tail else f"exit {r.returncode}")
    rows = json.loads(r.stdout)
    pp = next(x for x in rows if x["n_prompt"] > 0 and x["n_gen"] == 0)
    tg = next(x for x in rows if x["n_gen"] > 0 and x["n_prompt"] == 0)
    device = next((ln.split(":", 1)[1].strip() for ln in r.stderr.splitlines()
                   if ln.startswith("ggml_vulkan: 0 =")), pp.get("gpu_info", ""))
    if not pp.get("backends", "").lower().startswith("vulkan") and "Vulkan" not in str(
            pp.get("backends", "")):
        raise RuntimeError(f"llama-bench ran on {pp.get('backends')!r}, not Vulkan")
    return {"pp_tok_s": float(pp["avg_ts"]), "tg_tok_s": float(tg["avg_ts"]),
            "device": device, "peak_rss_mb": 0.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-q4_1")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("-p", "--prompt", type=int, default=128)
    ap.add_argument("-n", "--gen", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--build", type=Path, help="an existing build directory (else a fresh one)")
    ap.add_argument("--peer-vulkan", type=Path, metavar="LLAMA_BENCH",
                    help="llama.cpp's Vulkan llama-bench (scripts/peer_vulkan.sh) to race")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args()

    wanted = [b for b in args.backends.split(",") if b]
    unknown = [b for b in wanted if b not in OPTION]
    if unknown:
        ap.error(f"--backends: unknown {', '.join(unknown)} (known: {', '.join(BACKENDS)})")
    model = model_path(args.model)
    tmp = None
    if args.build is None:
        tmp = tempfile.mkdtemp(prefix="ember-bench-backends-")
        args.build = Path(tmp)
        build(args.build, wanted)
    exe = args.build / ("ember-bench.exe" if os.name == "nt" else "ember-bench")

    peers = ["llama.cpp-vulkan"] if args.peer_vulkan else []
    samples: dict[str, list[dict[str, Any]]] = {b: [] for b in ["cpu", *wanted, *peers]}
    failed: dict[str, str] = {}
    try:
        for rep in range(args.reps):
            for backend in ["cpu", *wanted, *peers]:
                if backend in failed:
                    continue
                try:
                    samples[backend].append(
                        run_peer(args.peer_vulkan, model, args) if backend in peers
                        else run_bench(exe, model, backend, args))
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    failed[backend] = str(exc)
                print(f"rep {rep + 1}/{args.reps} {backend}: "
                      f"{failed.get(backend) or json.dumps(samples[backend][-1])}",
                      file=sys.stderr)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    if "cpu" in failed:
        print(f"bench_backends: the CPU backend failed: {failed['cpu']}", file=sys.stderr)
        return 1

    def med(backend: str, key: str) -> float:
        return statistics.median(s[key] for s in samples[backend])

    rows = []
    cpu_pp, cpu_tg = med("cpu", "pp_tok_s"), med("cpu", "tg_tok_s")
    for backend in ["cpu", *wanted, *peers]:
        if backend in failed:
            rows.append({"backend": backend, "error": failed[backend]})
            continue
        pp, tg = med(backend, "pp_tok_s"), med(backend, "tg_tok_s")
        rows.append({"backend": backend, "device": samples[backend][0].get("device", ""),
                     "pp_tok_s": pp, "tg_tok_s": tg, "pp_ratio": pp / cpu_pp if cpu_pp else 0.0,
                     "tg_ratio": tg / cpu_tg if cpu_tg else 0.0,
                     "peak_rss_mb": med(backend, "peak_rss_mb")})
    meta = {"date": dt.date.today().isoformat(), "cpu": cpu_model(), "model": model.name,
            "threads": args.threads, "n_prompt": args.prompt, "n_gen": args.gen,
            "repetitions": args.reps}
    lines = [f"ember backends vs ember CPU, {meta['date']}, {meta['cpu']}, {meta['model']}, "
             f"{args.threads} threads, pp{args.prompt} / tg{args.gen}, median of {args.reps}",
             "",
             "| backend | device | pp tok/s | tg tok/s | pp ratio | tg ratio | peak RSS MiB |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['backend']} | did not run: {row['error']} | | | | | |")
        else:
            rss = f"{row['peak_rss_mb']:.0f}" if row["peak_rss_mb"] else "not measured"
            lines.append(f"| {row['backend']} | {row['device']} | {row['pp_tok_s']:.1f} | "
                         f"{row['tg_tok_s']:.1f} | {row['pp_ratio']:.3f} | "
                         f"{row['tg_ratio']:.3f} | {rss} |")
    vk = next((r for r in rows if r["backend"] == "vulkan" and "error" not in r), None)
    peer = next((r for r in rows if r["backend"] in peers and "error" not in r), None)
    if vk is not None and peer is not None:
        meta["vulkan_vs_llama_cpp"] = {"pp": vk["pp_tok_s"] / peer["pp_tok_s"],
                                       "tg": vk["tg_tok_s"] / peer["tg_tok_s"]}
        lines += ["", f"ember Vulkan / llama.cpp Vulkan on {peer['device'] or 'the same device'}"
                  f": pp {meta['vulkan_vs_llama_cpp']['pp']:.3f}x, "
                  f"tg {meta['vulkan_vs_llama_cpp']['tg']:.3f}x"]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
