#!/usr/bin/env python3
"""Time ``kiln build`` for the 10 CPU entries: cold, again with nothing changed, and after a
one-file edit; the last two as ratios of the cold time (target for no change: under 5%).

It works on a snapshot of the repository (runtime/, matrix/, recipes/, the tiny model, the
license) committed into a temporary git repository, so the bench never edits the checkout and
a concurrent edit of runtime/ cannot disturb it. Each phase runs ``python -m kiln build`` as a
user would, with its own ``--out``; the kiln cache is a fresh directory (cold: nothing, not
even the zig toolchain or zig's libc cache, unless ``--warm-toolchains DIR`` lends the
``toolchains/`` and ``zig/`` of an existing cache).

Usage::

    python bench/bench_build.py [--jobs 2] [--warm-toolchains ~/.cache/kiln] [--json FILE]
                                [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SELECTORS = ["macos-*", "ubuntu-x64", "ubuntu-arm64", "ubuntu-s390x", "android-arm64",
             "win-cpu-*", "openeuler-x64", "openeuler-arm64"]
SNAPSHOT = ["runtime", "matrix", "recipes", "LICENSE"]
EDITED = "runtime/src/core/sampler.c"
# A real change of the object code (not a comment, which ccache's preprocessor mode would
# see through): one more exported, unused symbol.
EDIT = "\nint ember_bench_edit_marker(void);\nint ember_bench_edit_marker(void) { return 1; }\n"
GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@invalid",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@invalid",
           "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}


def snapshot(dest: Path) -> None:
    """Copy what a build reads (ignoring build trees) and the verification model; commit."""
    from kiln.build.toolchains.recipe import load_verify_spec

    ignore = shutil.ignore_patterns("build*", "__pycache__", "*.tmp")
    models = [m for m in load_verify_spec(REPO / "recipes").run.models if (REPO / m).is_file()]
    for rel in SNAPSHOT + models[:1]:
        src = REPO / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=ignore)
        elif src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    env = {**os.environ, **GIT_ENV}
    for argv in (["git", "init", "-q"], ["git", "add", "-A"],
                 ["git", "commit", "-q", "-m", "bench snapshot"]):
        subprocess.run(argv, cwd=dest, env=env, check=True)


def kiln_build(repo: Path, out: Path, cache: Path, jobs: int, log: Path) -> float:
    env = {**os.environ, "KILN_CACHE": str(cache)}
    env.pop("GITHUB_ACTIONS", None)
    t0 = time.monotonic()
    with log.open("w") as fh:
        proc = subprocess.run([sys.executable, "-m", "kiln", "build", *SELECTORS, "--out",
                               str(out), "--jobs", str(jobs)], cwd=repo, env=env, stdout=fh,
                              stderr=subprocess.STDOUT, check=False)
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        sys.stderr.write(log.read_text())
        raise SystemExit(f"bench: kiln build failed (exit {proc.returncode}); see {log}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--jobs", type=int, default=2, help="kiln build --jobs (default 2)")
    p.add_argument("--warm-toolchains", type=Path, metavar="CACHE",
                   help="reuse toolchains/ and zig/ of this kiln cache (not a cold start)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    p.add_argument("--keep", type=Path, metavar="DIR",
                   help="work in DIR and keep it (default: a temporary directory)")
    args = p.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="kiln-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        repo, cache = work / "repo", work / "cache"
        shutil.rmtree(repo, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
        snapshot(repo)
        if args.warm_toolchains:
            for part in ("toolchains", "zig"):
                if (args.warm_toolchains / part).is_dir():
                    shutil.copytree(args.warm_toolchains / part, cache / part, symlinks=True)
        cold = kiln_build(repo, work / "out-cold", cache, args.jobs, work / "cold.log")
        print(f"cold       {cold:8.1f} s", flush=True)
        again = kiln_build(repo, work / "out-again", cache, args.jobs, work / "again.log")
        print(f"no change  {again:8.1f} s  {again / cold:6.1%} of cold", flush=True)
        with (repo / EDITED).open("a", encoding="utf-8") as fh:
            fh.write(EDIT)
        edit = kiln_build(repo, work / "out-edit", cache, args.jobs, work / "edit.log")
        print(f"one edit   {edit:8.1f} s  {edit / cold:6.1%} of cold  ({EDITED})", flush=True)
        figures = {"entries": 10, "jobs": args.jobs, "cores": os.cpu_count(),
                   "cold_s": round(cold, 1), "no_change_s": round(again, 1),
                   "no_change_ratio": round(again / cold, 4), "one_edit_s": round(edit, 1),
                   "one_edit_ratio": round(edit / cold, 4),
                   "warm_toolchains": bool(args.warm_toolchains)}
        verdict = "met" if again / cold < 0.05 else "NOT met"
        print(f"target no-change < 5% of cold: {verdict}")
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
