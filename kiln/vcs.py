"""What kiln asks git: build number, commit, commit time, dirty state, tags."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from kiln.errors import ConfigError, KilnError
from kiln.run import run

__all__ = ["build_number", "commit_sha", "commit_time", "is_dirty", "subdirectory"]


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


def subdirectory(root: Path, env: Mapping[str, str]) -> str:
    """Where the project ``root`` sits in its git repository, '/'-separated: "" at the top
    (or outside any repository), e.g. "examples/llamacpp" for a project in a subdirectory
    (which then has tags, notes and workflows of its own)."""
    done = run(["git", "-C", str(root), "rev-parse", "--show-toplevel"], env=env, check=False,
               what="git rev-parse")
    if done.returncode != 0:
        return ""
    top, here = Path(done.stdout.strip()).resolve(), root.resolve()
    if here == top or not here.is_relative_to(top):
        return ""
    return here.relative_to(top).as_posix()
