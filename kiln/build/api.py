"""Planning and building as library calls: ``plan_builds()`` (what ``kiln plan`` shows) and
``build_entries()`` (what ``kiln build`` does, without the printing).

A pipeline plans with the matrix's selectors, then builds the jobs it got::

    jobs = plan_builds(repo=repo, local=True)
    summary = build_entries(jobs, repo=repo, out=repo / "dist")
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from kiln.build.cache import CacheLayout, default_cache_dir
from kiln.build.jobs import BuildSummary, build_jobs
from kiln.build.toolchains import check_buildable
from kiln.console import Console
from kiln.matrix import Matrix, load_matrix
from kiln.plan import Job, plan
from kiln.project import load_project
from kiln.vcs import build_number as commit_count

__all__ = ["DEFAULT_PARALLEL", "build_entries", "plan_builds"]

DEFAULT_PARALLEL = 2  # as ``kiln build --jobs``: toolchains are parallel themselves


def plan_builds(selectors: Sequence[str] = (), *, repo: Path, build_number: int | None = None,
                include_disabled: bool = False, local: bool = False, ci_only: bool = False,
                matrix: Matrix | None = None,
                env: Mapping[str, str] | None = None) -> tuple[Job, ...]:
    """The jobs for the entries of ``repo``'s matrix (or ``matrix``) that ``selectors``
    pick (ids, globs, ``KEY=VALUE``; none: all enabled), as ``kiln plan`` lists them.
    ``local`` keeps the entries built on this host, ``ci_only`` those built in CI.
    ``build_number`` defaults to ``git rev-list --count HEAD`` in ``repo``. Raises
    ``SelectionError`` (exit code 3) for a selector that picks nothing."""
    matrix = matrix or load_matrix(repo / "matrix")
    if build_number is None:
        build_number = commit_count(repo, dict(os.environ) if env is None else env)
    # archives are named, and kiln's CMake options spelled, as the project's kiln.toml says
    return plan(matrix, selectors, build_number=build_number,
                include_disabled=include_disabled, local=local, ci_only=ci_only,
                names=load_project(repo).names)



def build_entries(jobs: Sequence[Job], *, repo: Path, out: Path,
                  parallel: int = DEFAULT_PARALLEL, cache_dir: Path | None = None,
                  on_ci_runner: bool = False, matrix: Matrix | None = None,
                  env: Mapping[str, str] | None = None,
                  console: Console | None = None) -> BuildSummary:
    """Build, verify and package ``jobs`` (from ``plan_builds``) into ``out``: an archive
    and a ``.json`` record per entry, logs in ``out/logs``. Entries this host cannot build are
    refused first (``SelectionError``, exit code 3) unless ``on_ci_runner`` says this is the
    entry's own CI runner. A failed build does not raise: see ``BuildSummary.ok`` and
    ``.failed``. ``cache_dir`` defaults to ``$KILN_CACHE`` or ``~/.cache/kiln``; ``env`` to
    ``os.environ`` (``SOURCE_DATE_EPOCH`` is read from it); ``console`` (progress) to
    standard error."""
    env = dict(os.environ) if env is None else env
    matrix = matrix or load_matrix(repo / "matrix")
    check_buildable([j.entry for j in jobs], repo / "recipes", on_ci_runner=on_ci_runner)
    layout = CacheLayout.at(cache_dir if cache_dir is not None else default_cache_dir(env))
    return build_jobs(jobs, repo=repo, out=out, env=env, parallel=parallel,
                      console=console or Console.from_env(env, stream=sys.stderr),
                      layout=layout, matrix=matrix, on_ci_runner=on_ci_runner)
