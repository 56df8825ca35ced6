"""What kiln asks git: build number, commit, commit time, dirty state, tags."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from kiln.errors import ConfigError, KilnError
from kiln.run import run

__all__ = ["build_number", "commit_sha", "commit_time", "is_dirty"]


def _git(repo: Path, env: Mapping[str, str], *args: str) -> str:
    return run(["git", "-C", str(repo), *args], env=env, what="git").stdout.strip()


def build_number(repo: Path, env: Mapping[str, str]) -> int:
    """N of tag ``b<N>``: the number of commits reachable from HEAD (llama.cpp's scheme)."""
    try:
        return int(_git(repo, env, "rev-list", "--count", "HEAD"))
    except KilnError as exc:
        raise ConfigError(f"cannot compute the build number from git in {repo}: {exc.message}",
                          hint="run inside a git checkout with at least one commit, "
                               "or pass --build-number N") from exc


def commit_sha(repo: Path, env: Mapping[str, str]) -> str:
    return _git(repo, env, "rev-parse", "HEAD")


def commit_time(repo: Path, env: Mapping[str, str]) -> int:
    """Committer time of HEAD, used as SOURCE_DATE_EPOCH."""
    return int(_git(repo, env, "log", "-1", "--format=%ct", "HEAD"))


def is_dirty(repo: Path, env: Mapping[str, str]) -> bool:
    return bool(_git(repo, env, "status", "--porcelain", "--untracked-files=no"))
