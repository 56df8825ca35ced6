#!/usr/bin/env python3
"""ember's CPU speed against llama.cpp's, on the SmolLM2-135M test models.

For every model (Q4_1, Q4_K_M, Q8_0 by default), depth (0 by default) and thread count (1 and
2 by default) the bench alternates two child processes, ``--reps`` times each:

* ``ember-bench -m MODEL -t THREADS -p 512 -n 128 -d DEPTH -r 1 --json`` (one warm-up, one
  timed run);
* a small llama.cpp runner, run by ``--peer-python`` (a Python that imports ``llama_cpp``),
  doing what llama-bench does through llama.cpp's own C API: one ``llama_decode`` of a
  512-token batch (pp), then 128 single-token decodes (tg), each from a cache that first gets
  DEPTH tokens decoded into it, untimed (as ``llama-bench -d``; nothing at depth 0), after the
  same warm-up, with the same token ids, context size (DEPTH + 512, at least 512), batch size
  and thread count as ember-bench, and the model memory-mapped as ember maps it.

It reports the median pp and tg tokens/s of each side, their ratios (ember / llama.cpp) and
the peak resident memory of each child (``wait4``'s ``ru_maxrss``). The Python interpreter and
the ``llama_cpp`` import count towards the runner's peak, so the runner also reports its
resident memory just before loading the model, and the peer's RSS used in the ratio is the
peak less that (which favours llama.cpp). Speed ratios, not absolute figures, are the point:
both sides run on the same machine in alternation, so background load hits both alike.

Exit status: 0 when the bars hold for the first model (Q4_1 by default) at depth 0 and every
thread count: tg ratio >= 1.0, pp ratio >= 0.8, ember's peak RSS <= 1.1 x llama.cpp's; 1 when
one fails; 2 on a usage or setup error. The other models and depths are reported, not judged.
A depth of 4096 makes each child run several times longer than depth 0 (the depth is decoded
four times per run: before the warm-up and the timed pp and tg).

Build ember as released (the dispatching binary, no ``-march=native``)::

    cmake -S runtime -B build -G Ninja -DCMAKE_BUILD_TYPE=Release && ninja -C build ember-bench

Build the peer (llama-cpp-python 0.3.36) with native tuning, in its own virtual environment::

    python3 -m venv peer && CMAKE_ARGS="-DGGML_NATIVE=ON" \\
        peer/bin/pip install --no-binary llama-cpp-python llama-cpp-python==0.3.36

On CPUs with AMX (Sapphire Rapids and later) add the compiler flags
``-DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'`` and the same
``-DCMAKE_CXX_FLAGS`` to CMAKE_ARGS: llama.cpp's AMX path crashes there (llama.cpp issue
#20824), and without AMX it runs its AVX-512 kernels.

Usage::

    python bench/bench_cpu.py --ember-bench build/ember-bench --peer-python peer/bin/python
        [--types q4_1,q4_k_m,q8_0] [--depth 0,4096] [--threads 1,2] [--reps 5] [--models-dir DIR]
        [--json FILE] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

N_PROMPT = 512
N_GEN = 128
N_CTX = 512  # the least context; at a depth D both sides use n_ctx_for(D)
BASE_NAME = "smollm2-135m"
BAR_TG = 1.0
BAR_PP = 0.8
BAR_RSS = 1.1

# The llama.cpp runner, run as
# ``PEER_PYTHON -c PEER_RUNNER MODEL THREADS N_PROMPT N_GEN N_CTX DEPTH``.
# It prints one JSON line. Token ids follow ember-bench's: (i * 7919 + 13) % n_vocab, the first
# DEPTH of them filling the cache before each test, the next ones timed.
PEER_RUNNER = r"""
import ctypes, json, sys, time
model_path, n_threads, n_prompt, n_gen, n_ctx, depth = sys.argv[1], *map(int, sys.argv[2:7])
def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
import llama_cpp as L
L.llama_backend_init()
base_kib = rss_kib()
mp = L.llama_model_default_params()
mp.n_gpu_layers = 0
model = L.llama_model_load_from_file(model_path.encode(), mp)
if not model:
    sys.exit("llama.cpp cannot load " + model_path)
cp = L.llama_context_default_params()
cp.n_ctx = n_ctx
n_batch = n_prompt if n_prompt else (min(depth, 512) if depth else 1)  # as ember-bench
cp.n_batch = n_batch
cp.n_ubatch = n_batch
cp.n_threads = n_threads
cp.n_threads_batch = n_threads
cp.no_perf = True
ctx = L.llama_init_from_model(model, cp)
if not ctx:
    sys.exit("llama.cpp cannot create a context")
n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
need = depth + max(n_prompt, n_gen)
if need > n_ctx:
    sys.exit(f"n_ctx {n_ctx} < depth {depth} + max(n_prompt, n_gen) {need - depth}")
toks = (L.llama_token * need)(*[(i * 7919 + 13) % n_vocab for i in range(need)])
mem = L.llama_get_memory(ctx)
def decode(offset, n):
    ptr = ctypes.cast(ctypes.byref(toks, offset * ctypes.sizeof(L.llama_token)),
                      ctypes.POINTER(L.llama_token))
    if L.llama_decode(ctx, L.llama_batch_get_one(ptr, n)) != 0:
        sys.exit("llama_decode failed")
def fill():  # untimed: the cache holds DEPTH tokens, decoded in batches of n_batch
    L.llama_memory_clear(mem, True)
    for off in range(0, depth, n_batch):
        decode(off, min(n_batch, depth - off))
    L.llama_synchronize(ctx)
def pp():
    fill()
    t = time.perf_counter()
    decode(depth, n_prompt)
    L.llama_synchronize(ctx)
    return time.perf_counter() - t
def tg():
    fill()
    t = time.perf_counter()
    for i in range(n_gen):
        decode(depth + i, 1)
        L.llama_synchronize(ctx)
    return time.perf_counter() - t
res = {}
for rep in range(2):  # the first is the warm-up, as in ember-bench
    pp_s = pp() if n_prompt else 0.0
    tg_s = tg() if n_gen else 0.0
res["pp_tok_s"] = n_prompt / pp_s if pp_s > 0 else 0.0
res["tg_tok_s"] = n_gen / tg_s if tg_s > 0 else 0.0
res["base_rss_mb"] = base_kib / 1024.0
res["threads"] = n_threads
res["depth"] = depth
res["n_ctx"] = n_ctx
res["llama_cpp"] = getattr(L, "__version__", "?")
res["system_info"] = L.llama_print_system_info().decode()
print(json.dumps(res))
"""


@dataclass
class Run:
    """One child process: its speeds and peak RSS (MiB)."""

    pp: float
    tg: float
    rss_mb: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Cell:
    """All runs of one side for one (model, threads)."""

    runs: list[Run] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return float(statistics.median(float(getattr(r, attr)) for r in self.runs))


def n_ctx_for(depth: int) -> int:
    """The context size both sides use at a depth: ember-bench's rule, depth + max(pp, tg)."""
    return max(depth + max(N_PROMPT, N_GEN), N_CTX)


def ratio(a: float, b: float) -> float:
    """a / b, or 0.0 when b is 0 (a side that did not run)."""
    return a / b if b > 0 else 0.0


def judge(pp_ratio: float, tg_ratio: float, rss_ratio: float) -> list[str]:
    """The bars a (model, threads) cell misses, as readable strings; empty when all hold."""
    failed = []
    if tg_ratio < BAR_TG:
        failed.append(f"tg ratio {tg_ratio:.3f} < {BAR_TG}")
    if pp_ratio < BAR_PP:
        failed.append(f"pp ratio {pp_ratio:.3f} < {BAR_PP}")
    if rss_ratio > BAR_RSS:
        failed.append(f"RSS ratio {rss_ratio:.3f} > {BAR_RSS}")
    return failed


def parse_list(text: str, what: str) -> list[str]:
    """A comma-separated option value as a list, rejecting empty items."""
    items = [s.strip() for s in text.split(",")]
    if not items or any(not s for s in items):
        raise ValueError(f"{what}: '{text}' must be a comma-separated list without empty items")
    return items


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_measured(argv: list[str]) -> tuple[dict[str, Any], float]:
    """Run argv, reap it with wait4: (its last stdout line as JSON, its peak RSS in MiB)."""
    r_fd, w_fd = os.pipe()
    with tempfile.TemporaryFile() as err_file:
        pid = os.fork()
        if pid == 0:  # child
            try:
                os.close(r_fd)
                os.dup2(w_fd, 1)
                os.dup2(err_file.fileno(), 2)
                os.execvp(argv[0], argv)
            finally:
                os._exit(127)
        os.close(w_fd)
        with os.fdopen(r_fd, "r", encoding="utf-8") as fo:
            out = fo.read()
        _, status, ru = os.wait4(pid, 0)
        err_file.seek(0)
        errs = err_file.read().decode("utf-8", "replace")
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{argv[0]} exited {code}: {errs.strip()[-2000:]}")
    lines = out.strip().splitlines()
    if not lines:
        raise RuntimeError(f"{argv[0]} printed nothing: {errs.strip()[-2000:]}")
    return json.loads(lines[-1]), ru.ru_maxrss / 1024.0


def run_ember(bench: str, model: Path, threads: int, depth: int = 0) -> Run:
    data, rss = run_measured(
        [
            bench,
            "-m",
            str(model),
            "-t",
            str(threads),
            "-p",
            str(N_PROMPT),
            "-n",
            str(N_GEN),
            "-d",
            str(depth),
            "-r",
            "1",
            "--json",
        ]
    )
    if int(data.get("depth", 0)) != depth:
        raise RuntimeError(f"{bench} reports depth {data.get('depth')}, not {depth} (too old?)")
    n_ctx = int(data.get("n_ctx", n_ctx_for(depth)))
    if n_ctx != n_ctx_for(depth):
        raise RuntimeError(f"{bench} used n_ctx {n_ctx}, the peer uses {n_ctx_for(depth)}")
    return Run(
        float(data["pp_tok_s"]), float(data["tg_tok_s"]), rss, {"kernel": data.get("kernel", "?")}
    )


def run_peer(python: str, model: Path, threads: int, depth: int = 0) -> Run:
    data, rss = run_measured(
        [
            python,
            "-c",
            PEER_RUNNER,
            str(model),
            str(threads),
            str(N_PROMPT),
            str(N_GEN),
            str(n_ctx_for(depth)),
            str(depth),
        ]
    )
    base = float(data.get("base_rss_mb", 0.0))
    return Run(
        float(data["pp_tok_s"]),
        float(data["tg_tok_s"]),
        rss - base,
        {
            "rss_total_mb": rss,
            "base_rss_mb": base,
            "llama_cpp": data.get("llama_cpp", "?"),
            "system_info": data.get("system_info", ""),
        },
    )


def row_of(model: str, threads: int, ember: Cell, peer: Cell, depth: int = 0) -> dict[str, Any]:
    """The reported figures of one (model, depth, threads)."""
    e_pp, e_tg, e_rss = ember.median("pp"), ember.median("tg"), ember.median("rss_mb")
    p_pp, p_tg, p_rss = peer.median("pp"), peer.median("tg"), peer.median("rss_mb")
    return {
        "model": model,
        "threads": threads,
        "depth": depth,
        "n_ctx": n_ctx_for(depth),
        "ember_pp_tok_s": round(e_pp, 2),
        "llama_pp_tok_s": round(p_pp, 2),
        "pp_ratio": round(ratio(e_pp, p_pp), 3),
        "ember_tg_tok_s": round(e_tg, 2),
        "llama_tg_tok_s": round(p_tg, 2),
        "tg_ratio": round(ratio(e_tg, p_tg), 3),
        "ember_rss_mb": round(e_rss, 1),
        "llama_rss_mb": round(p_rss, 1),
        "rss_ratio": round(ratio(e_rss, p_rss), 3),
        "ember_kernel": ember.runs[0].extra.get("kernel", "?") if ember.runs else "?",
        "reps": len(ember.runs),
    }


def table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of the rows (depth last, so that the depth-0 columns keep their places)."""
    head = (
        f"| model | threads | ember pp{N_PROMPT} | llama.cpp pp{N_PROMPT} | pp ratio "
        f"| ember tg{N_GEN} | llama.cpp tg{N_GEN} "
        "| tg ratio | ember RSS MiB | llama.cpp RSS MiB | RSS ratio | depth |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['threads']} "
            f"| {r['ember_pp_tok_s']:.1f} | {r['llama_pp_tok_s']:.1f} "
            f"| {r['pp_ratio']:.2f} | {r['ember_tg_tok_s']:.1f} | {r['llama_tg_tok_s']:.1f} "
            f"| {r['tg_ratio']:.2f} | {r['ember_rss_mb']:.1f} | {r['llama_rss_mb']:.1f} "
            f"| {r['rss_ratio']:.2f} | {r.get('depth', 0)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--ember-bench", required=True, help="the ember-bench binary (Release build)")
    ap.add_argument(
        "--peer-python", required=True, help="a Python interpreter that imports llama_cpp"
    )
    ap.add_argument(
        "--types",
        "--models",
        dest="models",
        metavar="TYPES",
        default="q4_1,q4_k_m,q8_0",
        help="model types, first one judged (default q4_1,q4_k_m,q8_0)",
    )
    ap.add_argument(
        "--depth",
        default="0",
        help="KV-cache depths before pp and tg, e.g. 0,4096; only depth 0 is judged (default 0)",
    )
    ap.add_argument("--threads", default="1,2", help="thread counts (default 1,2)")
    ap.add_argument("--reps", type=int, default=5, help="child runs per side and cell (default 5)")
    ap.add_argument(
        "--models-dir",
        default=os.environ.get("EMBER_MODELS", str(Path.home() / ".cache/ember/models")),
        help="where smollm2-135m-<type>.gguf are ($EMBER_MODELS or ~/.cache/ember/models)",
    )
    ap.add_argument("--json", help="write the results as JSON here")
    ap.add_argument("--markdown", help="write the table (with date and CPU) as markdown here")
    args = ap.parse_args(argv)

    try:
        types = parse_list(args.models, "--models")
        threads = [int(t) for t in parse_list(args.threads, "--threads")]
        depths = [int(d) for d in parse_list(args.depth, "--depth")]
        if any(d < 0 for d in depths):
            raise ValueError(f"--depth: '{args.depth}' must not hold negative depths")
    except ValueError as e:
        print(f"bench_cpu: {e}", file=sys.stderr)
        return 2
    if args.reps < 1:
        print("bench_cpu: --reps must be >= 1", file=sys.stderr)
        return 2
    if not os.access(args.ember_bench, os.X_OK):
        print(
            f"bench_cpu: --ember-bench {args.ember_bench} is not an executable; build it with "
            "'cmake -S runtime -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "
            "&& ninja -C build ember-bench'",
            file=sys.stderr,
        )
        return 2
    check = subprocess.run(
        [args.peer_python, "-c", "import llama_cpp"], capture_output=True, text=True
    )
    if check.returncode != 0:
        print(
            f"bench_cpu: --peer-python {args.peer_python} cannot import llama_cpp "
            f"(see this script's docstring for the build): {check.stderr.strip()[-500:]}",
            file=sys.stderr,
        )
        return 2
    models = {}
    for t in types:
        path = Path(args.models_dir) / f"{BASE_NAME}-{t}.gguf"
        if not path.is_file():
            print(
                f"bench_cpu: {path} is missing; fetch and derive it with "
                "'python scripts/models.py fetch && python scripts/models.py quantize'",
                file=sys.stderr,
            )
            return 2
        models[t] = path

    rows = []
    peer_info: dict[str, Any] = {}
    cells = [(t, path, d, n) for t, path in models.items() for d in depths for n in threads]
    for t, path, d, n in cells:
        ember, peer = Cell(), Cell()
        for rep in range(args.reps):
            # alternate, starting with the other side every second repetition
            order = (0, 1) if rep % 2 == 0 else (1, 0)
            for side in order:
                try:
                    if side == 0:
                        ember.runs.append(run_ember(args.ember_bench, path, n, d))
                    else:
                        run = run_peer(args.peer_python, path, n, d)
                        peer_info = run.extra
                        peer.runs.append(run)
                except RuntimeError as e:
                    print(f"bench_cpu: {t} d={d} t={n}: {e}", file=sys.stderr)
                    return 2
        row = row_of(t, n, ember, peer, d)
        rows.append(row)
        print(
            f"{t} d={d} t={n}: pp {row['ember_pp_tok_s']:.1f} vs {row['llama_pp_tok_s']:.1f} "
            f"({row['pp_ratio']:.2f}), "
            f"tg {row['ember_tg_tok_s']:.1f} vs {row['llama_tg_tok_s']:.1f} "
            f"({row['tg_ratio']:.2f}), "
            f"RSS {row['ember_rss_mb']:.1f} vs {row['llama_rss_mb']:.1f} MiB "
            f"({row['rss_ratio']:.2f})",
            flush=True,
        )

    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cpu = cpu_model()
    header = (
        f"{date}, {cpu}, {os.cpu_count()} logical CPUs; "
        f"llama-cpp-python {peer_info.get('llama_cpp', '?')}; "
        f"medians of {args.reps} alternated runs; pp{N_PROMPT}/tg{N_GEN} tokens/s after "
        f"depth {'/'.join(str(d) for d in depths)}, "
        f"n_ctx {'/'.join(str(n_ctx_for(d)) for d in depths)}"
    )
    text = header + "\n\n" + table(rows)
    print()
    print(text)
    judged = [r for r in rows if r["model"] == types[0] and r["depth"] == 0]
    failures = [
        f"{r['model']} t={r['threads']}: {f}"
        for r in judged
        for f in judge(r["pp_ratio"], r["tg_ratio"], r["rss_ratio"])
    ]
    print()
    if failures:
        print("FAIL: " + "; ".join(failures))
    elif not judged:
        print("NOT JUDGED: the bars apply at depth 0, which --depth leaves out")
    else:
        print(
            f"PASS: {types[0]} meets tg >= {BAR_TG}, pp >= {BAR_PP}, "
            f"RSS <= {BAR_RSS} x llama.cpp at depth 0 and every thread count"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "date": date,
                    "cpu": cpu,
                    "reps": args.reps,
                    "depths": depths,
                    "peer_system_info": peer_info.get("system_info", ""),
                    "rows": rows,
                    "failures": failures,
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
    if args.markdown:
        Path(args.markdown).write_text(text + "\n", encoding="utf-8")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
