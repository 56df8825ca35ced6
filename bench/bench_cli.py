#!/usr/bin/env python3
"""Time the command line's start-up: ``kiln plan --all --json`` and ``kiln matrix validate``
against ``python -c pass`` (the interpreter's own start-up, the floor), over N runs that
alternate the three commands so that a machine's load drifting affects each alike. Prints
the median and the minimum of each and its ratio to ``python -c pass``, then the imports that
cost most in one ``python -X importtime`` run of ``kiln plan --all --json``.

Target on a quiet machine: both commands under 150 ms. The ``kiln`` commands run as
``python -m kiln`` with this interpreter (no console-script wrapper), from the repository
root, with a fixed ``--build-number`` so that no ``git`` runs.

Usage::

    python bench/bench_cli.py [-n 20] [--top 12] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_MS = 150.0


def commands(python: str) -> dict[str, list[str]]:
    return {
        "python -c pass": [python, "-c", "pass"],
        "kiln plan --all --json": [python, "-m", "kiln", "plan", "--all", "--json",
                                   "--build-number", "1"],
        "kiln matrix validate": [python, "-m", "kiln", "matrix", "validate"],
    }


def time_once(argv: Sequence[str], env: dict[str, str]) -> float:
    """Wall-clock seconds of one run; a failing command stops the bench (its time would
    measure an error path)."""
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return elapsed


def parse_importtime(stderr: str) -> list[tuple[str, int, int]]:
    """(module, self µs, cumulative µs) of each line of ``-X importtime`` output."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = [p.strip() for p in line[len("import time:"):].split("|")]
        if len(parts) != 3 or not parts[0].isdigit():
            continue  # the header line
        rows.append((parts[2].strip(), int(parts[0]), int(parts[1])))
    return rows


def top_imports(python: str, env: dict[str, str], top: int) -> list[tuple[str, int, int]]:
    """The top-level imports (not nested under another) that cost most, cumulative."""
    argv = [python, "-X", "importtime", "-m", "kiln", "plan", "--all", "--json",
            "--build-number", "1"]
    proc = subprocess.run(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, check=True)
    rows = [(name, own, cum) for name, own, cum in parse_importtime(proc.stderr)
            if not name.startswith(" ")]
    return sorted(rows, key=lambda r: r[2], reverse=True)[:top]


def summary(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    floor = statistics.median(times["python -c pass"])
    return {name: {"median_ms": statistics.median(t) * 1e3, "min_ms": min(t) * 1e3,
                   "ratio_to_python": statistics.median(t) / floor if floor else 0.0}
            for name, t in times.items()}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=20, help="runs of each command")
    ap.add_argument("--top", type=int, default=12, help="imports listed from -X importtime")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    a = ap.parse_args(argv)
    if a.runs < 1:
        ap.error("--runs must be at least 1")
    python = sys.executable
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    # An installed kiln has its bytecode compiled (pip does it); with PYTHONDONTWRITEBYTECODE
    # set, a checkout would recompile every edited module on every run (16 ms for matrix.py).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    cmds = commands(python)
    for argv_ in cmds.values():  # warm the file cache and the bytecode once, untimed
        time_once(argv_, env)
    times: dict[str, list[float]] = {name: [] for name in cmds}
    for _ in range(a.runs):
        for name, argv_ in cmds.items():
            times[name].append(time_once(argv_, env))
    result = summary(times)
    print(f"{a.runs} alternated runs each, {python}")
    print(f"{'command':<26} {'median':>9} {'min':>9} {'x python':>9}")
    for name, r in result.items():
        flag = ""
        if name.startswith("kiln"):
            flag = "  ok" if r["median_ms"] < TARGET_MS else f"  over {TARGET_MS:.0f} ms"
        print(f"{name:<26} {r['median_ms']:>7.1f}ms {r['min_ms']:>7.1f}ms "
              f"{r['ratio_to_python']:>8.2f}x{flag}")
    imports = top_imports(python, env, a.top)
    print("\ntop-level imports of kiln plan --all --json (python -X importtime, cumulative):")
    for name, own, cum in imports:
        print(f"  {cum / 1e3:>7.1f}ms  (self {own / 1e3:>6.1f}ms)  {name}")
    if a.json:
        Path(a.json).write_text(json.dumps(
            {"runs": a.runs, "commands": result,
             "imports": [{"module": n, "self_us": o, "cumulative_us": c}
                         for n, o, c in imports]}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
