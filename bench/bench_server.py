"""Benchmark ember-server against llama.cpp's llama-server on the same model, threads and requests.

What one run measures, each side started afresh for each measurement and the two sides
alternated (the other side first in every second repetition), medians over the repetitions:

* **single**: one client, one greedy ``/v1/completions`` of ``--n-gen`` (256) tokens with
  ``ignore_eos``: generated tokens / the request's wall time (client side, so HTTP and the
  prompt are in it), and the server's own ``timings`` figure beside it;
* **draft**: the same with a draft model: ember ``-md DRAFT --draft-max N``, llama-server
  ``-md DRAFT --spec-type draft-simple --spec-draft-n-max N``; tok/s and the share of proposed
  draft tokens accepted (``timings.draft_n_accepted / timings.draft_n``, reported by both);
* **concurrency**: ``--requests`` (64) requests of ``--conc-tokens`` (64) tokens each from 4 and
  16 concurrent clients, both servers with ``--parallel 4``: total generated tokens / wall time,
  and the p50 / p99 request latency (queueing included);
* **memory**: ``--mem-requests`` (1000) sequential short requests; the server's VmRSS
  (``/proc/PID/status``) after ``--mem-checkpoint`` (100) requests and after the last, and their
  ratio (a server that keeps something per request grows).

Every request has a prompt of its own (a request number in front) and ``cache_prompt: false``,
so neither side reuses an earlier request's KV cache (llama-server does by default; ember-server
does not). Context: ember's ``-c`` is per slot, llama-server's is split between its slots, so
llama-server gets ``-c CTX*parallel``; it also runs with ``--cache-ram 0`` (no prompt cache in
RAM) and ``-tb THREADS``. Both listen on 127.0.0.1 only, with ``--port 0``; the port is read
from the line each prints (``listening on http://127.0.0.1:PORT``), then ``/health`` is polled
until it answers 200 (llama-server opens its port before the model is loaded).

Build ember-server as released (bench/bench_cpu.py builds ember-bench the same way)::

    cmake -S runtime -B build -G Ninja -DCMAKE_BUILD_TYPE=Release && ninja -C build ember-server

and the peer, llama-server from the llama.cpp vendored in llama-cpp-python 0.3.36, native, CPU
(cached; several minutes the first time)::

    bash scripts/peer_server.sh        # prints the llama-server path

Then::

    python bench/bench_server.py --ember-server build/ember-server \\
        [--llama-server PATH] [--model f32] [--draft q4_1] [--threads 2] [--reps 3] \\
        [--quick] [--sides ember,llama] [--json FILE] [--markdown FILE]

``--llama-server`` defaults to what ``scripts/peer_server.sh`` prints (it builds once).
``--quick`` shrinks every count (a check that the whole script works, not a measurement);
``--sides llama`` measures llama-server alone (no ratios), e.g. before ember-server is built.
Models are ``smollm2-135m-<type>.gguf`` in ``--models-dir`` (``scripts/models.py fetch`` and
``quantize``), or paths. The ratios are ember / llama for throughput and acceptance, and
llama / ember for latency and RSS growth, so that above 1 is ember ahead everywhere.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
BASE_NAME = "smollm2-135m"
PROMPT = ("The history of the printing press begins in the fifteenth century, when a goldsmith "
          "from Mainz combined movable metal type, an oil-based ink and a wooden screw press")
LISTENING_RE = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")
SIDES = ("ember", "llama")
START_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 900.0

# no proxy: both servers are on 127.0.0.1, whatever HTTP_PROXY says
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --------------------------------------------------------------------------------------------
# Figures


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks."""
    if not values:
        return 0.0
    s = sorted(values)
    if len(s) == 1:
        return float(s[0])
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return float(s[lo] + (s[hi] - s[lo]) * (pos - lo))


def ratio(a: float, b: float) -> float:
    """a / b, or 0.0 when b is 0 (a side that did not run)."""
    return a / b if b > 0 else 0.0


def median_of(runs: Sequence[dict[str, float]], key: str) -> float:
    vals = [r[key] for r in runs if key in r]
    return float(statistics.median(vals)) if vals else 0.0


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


def rss_mib(pid: int) -> float:
    """VmRSS of a process in MiB (Linux)."""
    with open(f"/proc/{pid}/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS")


# --------------------------------------------------------------------------------------------
# The servers


@dataclass(frozen=True, kw_only=True)
class Config:
    """What both sides are started with."""

    model: Path
    threads: int
    ctx: int
    parallel: int = 1
    draft: Path | None = None
    draft_max: int = 16


def server_argv(side: str, binary: str, cfg: Config) -> list[str]:
    """The command line of one side for ``cfg`` (see the module docstring for the mapping)."""
    if side == "ember":
        argv = [binary, "-m", str(cfg.model), "--host", "127.0.0.1", "--port", "0",
                "-t", str(cfg.threads), "-c", str(cfg.ctx), "--parallel", str(cfg.parallel)]
        if cfg.draft is not None:
            argv += ["-md", str(cfg.draft), "--draft-max", str(cfg.draft_max)]
        return argv
    argv = [binary, "-m", str(cfg.model), "--host", "127.0.0.1", "--port", "0",
            "-t", str(cfg.threads), "-tb", str(cfg.threads), "-c", str(cfg.ctx * cfg.parallel),
            "--parallel", str(cfg.parallel), "--cache-ram", "0"]
    if cfg.draft is not None:
        argv += ["-md", str(cfg.draft), "--spec-type", "draft-simple",
                 "--spec-draft-n-max", str(cfg.draft_max)]
    return argv


class Server:
    """One running server: started, ready (listening and /health 200), stopped."""

    def __init__(self, argv: Sequence[str], label: str, log: IO[bytes]) -> None:
        self.label = label
        self.log = log  # its stdout and stderr
        # a session of its own: a signal meant for this script's process group (a shell's
        # Ctrl-C) reaches the script, which then stops the server itself
        self.proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid
        self.base = ""

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode} before it "
                                   f"was ready: {self.output()[-2000:]}")
            if not self.base:
                m = LISTENING_RE.search(self.output())
                if m:
                    self.base = m.group(1)
            if self.base:
                try:
                    status, _ = http_json("GET", self.base + "/health", None, timeout=5)
                    if status == 200:
                        return self.base
                except OSError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.label} was not ready within {timeout:g}s: "
                           f"{self.output()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def http_json(method: str, url: str, body: dict[str, Any] | None, *,
              timeout: float) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, json.loads(text or b"{}")
        except json.JSONDecodeError:
            return e.code, {"error": text.decode("utf-8", "replace")}


@dataclass
class Reply:
    tokens: int
    wall_s: float
    timings: dict[str, Any] = field(default_factory=dict)


def complete(base: str, prompt: str, n: int) -> Reply:
    """One greedy completion of ``n`` tokens, timed on the client."""
    body = {"prompt": prompt, "max_tokens": n, "temperature": 0, "ignore_eos": True,
            "cache_prompt": False}
    t0 = time.perf_counter()
    status, data = http_json("POST", base + "/v1/completions", body, timeout=REQUEST_TIMEOUT_S)
    wall = time.perf_counter() - t0
    if status != 200:
        raise RuntimeError(f"POST /v1/completions answered {status}: {json.dumps(data)[:500]}")
    usage = data.get("usage") or {}
    timings = data.get("timings") or {}
    tokens = int(usage.get("completion_tokens", timings.get("predicted_n", 0)))
    return Reply(tokens=tokens, wall_s=wall, timings=timings)


def prompt_for(i: int) -> str:
    return f"Request {i}. {PROMPT}"


# --------------------------------------------------------------------------------------------
# The measurements (one side, one fresh server each)


def measure_single(base: str, n_gen: int, _pid: int) -> dict[str, float]:
    complete(base, prompt_for(0), 8)  # warm-up, untimed
    r = complete(base, prompt_for(1), n_gen)
    out = {"tokens": float(r.tokens), "tok_s": ratio(r.tokens, r.wall_s),
           "wall_s": r.wall_s}
    pn, pms = r.timings.get("predicted_n"), r.timings.get("predicted_ms")
    if pn and pms:
        out["server_tok_s"] = float(pn) / (float(pms) / 1000.0)
    dn, da = r.timings.get("draft_n"), r.timings.get("draft_n_accepted")
    if dn and da is not None:  # ember-server reports draft_n 0 without a draft
        out["draft_n"] = float(dn)
        out["draft_accepted"] = float(da)
        out["acceptance"] = ratio(float(da), float(dn))
    return out


def measure_concurrency(base: str, clients: int, n_requests: int, n_tokens: int,
                        _pid: int) -> dict[str, float]:
    complete(base, prompt_for(0), 8)
    latencies: list[float] = []
    tokens = 0
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=clients) as pool:
        futures = [pool.submit(complete, base, prompt_for(i + 1), n_tokens)
                   for i in range(n_requests)]
        for f in concurrent.futures.as_completed(futures):
            r = f.result()
            latencies.append(r.wall_s)
            tokens += r.tokens
    wall = time.perf_counter() - t0
    return {"tokens": float(tokens), "wall_s": wall, "tok_s": ratio(tokens, wall),
            "p50_s": percentile(latencies, 50), "p99_s": percentile(latencies, 99)}


def concurrency_run(clients: int, n_requests: int,
                    n_tokens: int) -> Callable[[str, int], dict[str, float]]:
    return lambda base, pid: measure_concurrency(base, clients, n_requests, n_tokens, pid)


def measure_memory(base: str, n_requests: int, checkpoint: int, n_tokens: int,
                   pid: int) -> dict[str, float]:
    out: dict[str, float] = {"rss_start_mib": rss_mib(pid)}
    for i in range(n_requests):
        complete(base, prompt_for(i), n_tokens)
        if i + 1 == checkpoint:
            out["rss_checkpoint_mib"] = rss_mib(pid)
    out["rss_end_mib"] = rss_mib(pid)
    out["growth"] = ratio(out["rss_end_mib"], out.get("rss_checkpoint_mib", 0.0))
    return out


def run_side(side: str, binary: str, cfg: Config,
             measure: Callable[[str, int], dict[str, float]]) -> dict[str, float]:
    label = f"{side} ({Path(binary).name})"
    with tempfile.TemporaryFile() as log, Server(server_argv(side, binary, cfg), label, log) as srv:
        base = srv.wait_ready()
        try:
            return measure(base, srv.pid)
        except (RuntimeError, OSError) as e:
            state = ("still running" if srv.proc.poll() is None
                     else f"exited with {srv.proc.returncode}")
            tail = srv.output().strip().splitlines()[-5:]
            raise RuntimeError(f"{label} ({state}): {e}; its last lines: "
                               + " | ".join(tail)) from e


def alternate(sides: Sequence[str], binaries: dict[str, str], cfg: Config, reps: int,
              measure: Callable[[str, int], dict[str, float]],
              what: str) -> dict[str, list[dict[str, float]]]:
    """``reps`` runs of ``measure`` per side, sides alternated, the first side rotating."""
    runs: dict[str, list[dict[str, float]]] = {s: [] for s in sides}
    for rep in range(reps):
        order = list(sides) if rep % 2 == 0 else list(reversed(sides))
        for side in order:
            got = run_side(side, binaries[side], cfg, measure)
            runs[side].append(got)
            shown = ", ".join(f"{k} {v:.3g}" for k, v in got.items())
            print(f"  {what} rep {rep + 1}/{reps} {side}: {shown}", flush=True)
    return runs


# --------------------------------------------------------------------------------------------
# Report


def summarize(runs: dict[str, list[dict[str, float]]], keys: Sequence[str]) -> dict[str, Any]:
    return {side: {k: median_of(rs, k) for k in keys if any(k in r for r in rs)}
            for side, rs in runs.items()}


def ratio_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, ember, llama, ratio) rows; the ratio is oriented so that > 1 is ember ahead."""
    rows: list[tuple[str, str, str, str]] = []

    def add(name: str, e: float | None, ll: float | None, fmt: str, higher_better: bool) -> None:
        es = "-" if e is None else format(e, fmt)
        ls = "-" if ll is None else format(ll, fmt)
        if e is None or ll is None:
            r = "-"
        else:
            r = f"{ratio(e, ll) if higher_better else ratio(ll, e):.2f}"
        rows.append((name, es, ls, r))

    def get(section: dict[str, Any], side: str, key: str) -> float | None:
        v = section.get(side, {}).get(key)
        return None if v is None else float(v)

    s = results.get("single", {})
    if s:
        add("tok/s, 1 client", get(s, "ember", "tok_s"), get(s, "llama", "tok_s"), ".1f", True)
    d = results.get("draft", {})
    if d:
        add("tok/s, 1 client, draft", get(d, "ember", "tok_s"), get(d, "llama", "tok_s"),
            ".1f", True)
        add("draft accepted/proposed", get(d, "ember", "acceptance"),
            get(d, "llama", "acceptance"), ".3f", True)
    for level in results.get("concurrency", []):
        c = level["clients"]
        add(f"tok/s total, {c} clients", get(level, "ember", "tok_s"),
            get(level, "llama", "tok_s"), ".1f", True)
        add(f"p50 latency s, {c} clients", get(level, "ember", "p50_s"),
            get(level, "llama", "p50_s"), ".2f", False)
        add(f"p99 latency s, {c} clients", get(level, "ember", "p99_s"),
            get(level, "llama", "p99_s"), ".2f", False)
    m = results.get("memory", {})
    if m:
        cp, n = m.get("checkpoint"), m.get("requests")
        add(f"RSS MiB after {cp}", get(m, "ember", "rss_checkpoint_mib"),
            get(m, "llama", "rss_checkpoint_mib"), ".1f", False)
        add(f"RSS MiB after {n}", get(m, "ember", "rss_end_mib"),
            get(m, "llama", "rss_end_mib"), ".1f", False)
        add(f"RSS {n}/{cp}", get(m, "ember", "growth"), get(m, "llama", "growth"), ".3f",
            False)
    return rows


def uneven_work(results: dict[str, Any]) -> list[str]:
    """Where the two sides generated different numbers of tokens (a server that stops at an
    end-of-generation token despite ``ignore_eos``): their tok/s then measure other work."""
    notes = []
    sections = [(name, results.get(name, {})) for name in ("single", "draft")]
    sections += [(f"{c['clients']} clients", c) for c in results.get("concurrency", [])]
    for name, sec in sections:
        e, ll = sec.get("ember", {}).get("tokens"), sec.get("llama", {}).get("tokens")
        if e is not None and ll is not None and e != ll:
            notes.append(f"{name}: ember-server generated {e:g} tokens, llama-server {ll:g}")
    return notes


def table(rows: Sequence[tuple[str, str, str, str]]) -> str:
    lines = ["| figure | ember-server | llama-server | ratio (>1: ember ahead) |",
             "|---|---:|---:|---:|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Arguments


def resolve_model(text: str, models_dir: Path) -> Path:
    """A model type (``q4_1``: ``models_dir/smollm2-135m-q4_1.gguf``) or a path."""
    p = Path(text)
    if p.suffix == ".gguf" or os.sep in text:
        return p
    return models_dir / f"{BASE_NAME}-{text}.gguf"


def parse_sides(text: str) -> list[str]:
    sides = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in sides if s not in SIDES]
    if not sides or bad or len(set(sides)) != len(sides):
        raise ValueError(f"--sides: '{text}' must name ember and/or llama, each once")
    return sides


def peer_server_path() -> str:
    """What scripts/peer_server.sh prints (it builds llama-server once, then it is cached)."""
    done = subprocess.run(["bash", str(ROOT / "scripts" / "peer_server.sh")],
                          stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"scripts/peer_server.sh failed with {done.returncode}")
    return done.stdout.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--ember-server", default=str(ROOT / "build" / "ember-server"),
                    help="the ember-server binary (Release build; default build/ember-server)")
    ap.add_argument("--llama-server", help="llama.cpp's llama-server (default: what "
                    "scripts/peer_server.sh prints; it builds it once)")
    ap.add_argument("--sides", default="ember,llama", help="ember,llama (default) or one")
    ap.add_argument("--model", default="f32", help="target: a type or a .gguf path (f32)")
    ap.add_argument("--draft", default="q4_1", help="draft: a type or a .gguf path (q4_1); "
                    "'none' skips the draft measurement")
    ap.add_argument("--draft-max", type=int, default=16, help="draft tokens per step (16)")
    ap.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1),
                    help="threads of both servers (default min(4, CPUs))")
    ap.add_argument("--ctx", type=int, default=1024, help="context per slot (1024)")
    ap.add_argument("--n-gen", type=int, default=256, help="tokens of the 1-client runs (256)")
    ap.add_argument("--clients", default="4,16", help="concurrent clients (4,16)")
    ap.add_argument("--parallel", type=int, default=4, help="slots of both servers in the "
                    "concurrency runs (4)")
    ap.add_argument("--requests", type=int, default=64, help="requests per concurrency run (64)")
    ap.add_argument("--conc-tokens", type=int, default=64,
                    help="tokens per request in the concurrency runs (64)")
    ap.add_argument("--mem-requests", type=int, default=1000,
                    help="sequential requests of the memory run (1000)")
    ap.add_argument("--mem-checkpoint", type=int, default=100,
                    help="RSS read after this many requests too (100)")
    ap.add_argument("--mem-tokens", type=int, default=8, help="tokens per memory request (8)")
    ap.add_argument("--reps", type=int, default=3, help="alternated runs per side (3)")
    ap.add_argument("--quick", action="store_true",
                    help="small counts: 1 rep, 32 tokens, 16 requests of 16 tokens, 50 memory "
                         "requests (checkpoint 10); checks the script, measures nothing")
    ap.add_argument("--skip", default="", help="comma list of single,draft,concurrency,memory "
                    "to leave out")
    ap.add_argument("--models-dir", default=os.environ.get(
        "EMBER_MODELS", str(Path.home() / ".cache/ember/models")),
        help="where smollm2-135m-<type>.gguf are ($EMBER_MODELS or ~/.cache/ember/models)")
    ap.add_argument("--json", help="write the results as JSON here")
    ap.add_argument("--markdown", help="write the table (with date and CPU) as markdown here")
    args = ap.parse_args(argv)

    if args.quick:
        args.reps, args.n_gen, args.requests, args.conc_tokens = 1, 32, 16, 16
        args.mem_requests, args.mem_checkpoint = 50, 10
    try:
        sides = parse_sides(args.sides)
        clients = [int(c) for c in args.clients.split(",") if c.strip()]
        skip = {s.strip() for s in args.skip.split(",") if s.strip()}
        unknown = skip - {"single", "draft", "concurrency", "memory"}
        if unknown:
            raise ValueError(f"--skip: unknown {', '.join(sorted(unknown))}")
        for name in ("reps", "n_gen", "requests", "conc_tokens", "mem_requests", "threads",
                     "ctx", "parallel", "draft_max"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        if not 0 < args.mem_checkpoint < args.mem_requests:
            raise ValueError("--mem-checkpoint must be between 0 and --mem-requests")
    except ValueError as e:
        print(f"bench_server: {e}", file=sys.stderr)
        return 2

    binaries: dict[str, str] = {}
    if "ember" in sides:
        if not os.access(args.ember_server, os.X_OK):
            print(f"bench_server: --ember-server {args.ember_server} is not an executable; "
                  "build it with 'cmake -S runtime -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "
                  "&& ninja -C build ember-server', or measure llama-server alone with "
                  "--sides llama", file=sys.stderr)
            return 2
        binaries["ember"] = args.ember_server
    if "llama" in sides:
        try:
            binaries["llama"] = args.llama_server or peer_server_path()
        except RuntimeError as e:
            print(f"bench_server: {e}", file=sys.stderr)
            return 2
        if not os.access(binaries["llama"], os.X_OK):
            print(f"bench_server: --llama-server {binaries['llama']} is not an executable "
                  "(bash scripts/peer_server.sh builds it)", file=sys.stderr)
            return 2
    models_dir = Path(args.models_dir)
    model = resolve_model(args.model, models_dir)
    draft = None if args.draft == "none" else resolve_model(args.draft, models_dir)
    for p in (model, draft):
        if p is not None and not p.is_file():
            print(f"bench_server: {p} is missing; fetch and derive the SmolLM2 files with "
                  "'python scripts/models.py fetch && python scripts/models.py quantize'",
                  file=sys.stderr)
            return 2

    base = Config(model=model, threads=args.threads, ctx=args.ctx)
    results: dict[str, Any] = {}
    try:
        if "single" not in skip:
            print(f"single: 1 client, {args.n_gen} tokens", flush=True)
            runs = alternate(sides, binaries, base, args.reps,
                             lambda b, pid: measure_single(b, args.n_gen, pid), "single")
            results["single"] = summarize(runs, ["tok_s", "server_tok_s", "tokens"])
        if draft is not None and "draft" not in skip:
            print(f"draft: 1 client, {args.n_gen} tokens, draft {draft.name}", flush=True)
            cfg = Config(model=model, threads=args.threads, ctx=args.ctx, draft=draft,
                         draft_max=args.draft_max)
            runs = alternate(sides, binaries, cfg, args.reps,
                             lambda b, pid: measure_single(b, args.n_gen, pid), "draft")
            results["draft"] = summarize(runs, ["tok_s", "server_tok_s", "tokens", "draft_n",
                                                "draft_accepted", "acceptance"])
        if "concurrency" not in skip:
            cfg = Config(model=model, threads=args.threads, ctx=args.ctx,
                         parallel=args.parallel)
            results["concurrency"] = []
            for c in clients:
                print(f"concurrency: {c} clients, {args.requests} requests of "
                      f"{args.conc_tokens} tokens, --parallel {args.parallel}", flush=True)
                runs = alternate(sides, binaries, cfg, args.reps,
                                 concurrency_run(c, args.requests, args.conc_tokens),
                                 f"{c} clients")
                results["concurrency"].append(
                    {"clients": c, **summarize(runs, ["tok_s", "p50_s", "p99_s", "tokens"])})
        if "memory" not in skip:
            print(f"memory: {args.mem_requests} sequential requests of {args.mem_tokens} "
                  "tokens", flush=True)
            runs = alternate(sides, binaries, base, 1,
                             lambda b, pid: measure_memory(b, args.mem_requests,
                                                           args.mem_checkpoint,
                                                           args.mem_tokens, pid), "memory")
            results["memory"] = {"requests": args.mem_requests,
                                 "checkpoint": args.mem_checkpoint,
                                 **summarize(runs, ["rss_start_mib", "rss_checkpoint_mib",
                                                    "rss_end_mib", "growth"])}
    except (RuntimeError, OSError) as e:
        print(f"bench_server: {e}", file=sys.stderr)
        return 1

    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cpu = cpu_model()
    header = (f"{date}, {cpu}, {os.cpu_count()} logical CPUs; {args.threads} threads; "
              f"model {model.name}, draft {draft.name if draft else 'none'}; medians of "
              f"{args.reps} alternated runs{' (--quick)' if args.quick else ''}")
    rows = ratio_rows(results)
    notes = uneven_work(results)
    text = header + "\n\n" + table(rows) + "".join(f"\n\nnote: {n}" for n in notes)
    print()
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "date": date, "cpu": cpu, "logical_cpus": os.cpu_count(), "threads": args.threads,
            "model": model.name, "draft": draft.name if draft else None,
            "draft_max": args.draft_max, "ctx": args.ctx, "parallel": args.parallel,
            "n_gen": args.n_gen, "requests": args.requests, "conc_tokens": args.conc_tokens,
            "reps": args.reps, "quick": args.quick, "sides": sides,
            "binaries": {k: Path(v).name for k, v in binaries.items()},
            "results": results, "notes": notes,
            "ratios": [{"figure": a, "ember": b, "llama": c, "ratio": d} for a, b, c, d in rows],
        }, indent=2) + "\n", encoding="utf-8")
    if args.markdown:
        Path(args.markdown).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
