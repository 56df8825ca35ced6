"""kiln's build cache: content-addressed, locked, written atomically.

Layout under the cache root (``--cache-dir``, ``$KILN_CACHE``, ``$XDG_CACHE_HOME/kiln`` or
``~/.cache/kiln``; ``$KILN_CACHE_DIR`` is the deprecated name of ``$KILN_CACHE``)::

    toolchains/         pinned toolchains (zig-0.17.1/), installed once under a lock
    zig/                zig's global cache: libc, mingw, compiler-rt compiled per target
    builds/<key>/       one finished build: stage/ (the installed tree), meta.json,
                        verify/<vkey>.json (passed verifications), COMPLETE
    work/<entry-id>/    the build directory of the entry being built (stable paths, so
                        ccache's hashes match from one build to the next)
    ccache/             ccache's object cache: an edit recompiles only what changed
    wine/               wine prefixes for running Windows builds
    authenticode/NAME/  project NAME's throwaway self-signed code-signing certificate of local
                        builds (kiln/package/authenticode.py), made once and kept
    locks/              one lock file per build key and per work directory

The key of a build hashes everything that changes its output (``key_of``): the source tree
(``source_tree_hash``), the toolchain and host tool versions, the flags and CMake options, and
the recipe files. Two kiln processes sharing a cache take the key's lock (``filelock``) before
looking or building, so one builds and the other then finds the result. A build is copied
into ``builds/.<key>.tmp-<pid>-<thread>`` and renamed to ``builds/<key>`` only when complete
(``kiln.files.install_once``), so a Ctrl-C or a kill cannot leave an entry that looks finished;
leftovers are removed the next time the key is built.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from filelock import FileLock

from kiln.errors import ConfigError
from kiln.files import atomic_write_text, file_lock, install_once
from kiln.run import run

__all__ = [
    "CACHE_ENV",
    "CACHE_SCHEMA",
    "BuildCache",
    "CacheLayout",
    "cache_root_from_env",
    "default_cache_dir",
    "key_of",
    "source_tree_hash",
]

# Bump when the layout of builds/<key>/ or what goes into a key changes.
CACHE_SCHEMA = 1
COMPLETE = "COMPLETE"

CACHE_ENV = "KILN_CACHE"
# The name ``kiln install`` read before kiln had one variable for its whole cache.
DEPRECATED_CACHE_ENV = "KILN_CACHE_DIR"
_notice_lock = threading.Lock()
_noticed = False


def cache_root_from_env(env: Mapping[str, str]) -> Path | None:
    """The cache root the environment names: ``$KILN_CACHE``, else the deprecated
    ``$KILN_CACHE_DIR`` (which prints a one-line notice on stderr, once per process, whenever
    it is set); None when neither is set."""
    if env.get(DEPRECATED_CACHE_ENV):
        _deprecation_notice(ignored=bool(env.get(CACHE_ENV)))
    for name in (CACHE_ENV, DEPRECATED_CACHE_ENV):
        if env.get(name):
            return Path(env[name]).expanduser()
    return None


def _deprecation_notice(*, ignored: bool) -> None:
    global _noticed
    with _notice_lock:
        if _noticed:
            return
        _noticed = True
    why = f"ignored, {CACHE_ENV} is set" if ignored else f"use {CACHE_ENV} instead"
    print(f"kiln: warning: {DEPRECATED_CACHE_ENV} is deprecated ({why})", file=sys.stderr)


def default_cache_dir(env: Mapping[str, str]) -> Path:
    """``$KILN_CACHE`` (or the deprecated ``$KILN_CACHE_DIR``), else ``$XDG_CACHE_HOME/kiln``,
    else ``~/.cache/kiln``."""
    root = cache_root_from_env(env)
    if root is not None:
        return root
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]) / "kiln"
    if env.get("HOME"):
        return Path(env["HOME"]) / ".cache" / "kiln"
    raise ConfigError("no cache directory: neither KILN_CACHE, XDG_CACHE_HOME nor HOME is set",
                      hint="pass --cache-dir DIR or set KILN_CACHE")


@dataclass(frozen=True, kw_only=True)
class CacheLayout:
    """Where each part of the cache lives. ``fresh`` gives a layout with empty build caches that
    still shares the installed toolchains, zig's cache, the wine prefixes and the throwaway
    code-signing certificate (so a rebuild signs with the same one)."""

    root: Path
    toolchains: Path
    zig: Path
    wine: Path
    authenticode: Path

    @classmethod
    def at(cls, root: Path) -> CacheLayout:
        root = root.absolute()
        return cls(root=root, toolchains=root / "toolchains", zig=root / "zig",
                   wine=root / "wine", authenticode=root / "authenticode")

    def fresh(self, root: Path) -> CacheLayout:
        return replace(self, root=root.absolute())

    @property
    def builds(self) -> Path:
        return self.root / "builds"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def ccache(self) -> Path:
        return self.root / "ccache"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    def host_paths(self) -> tuple[str, ...]:
        """Absolute paths of this machine that must never end up inside a built file."""
        return tuple(sorted({str(p) for p in (self.root, self.toolchains, self.zig)}))


def key_of(parts: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``parts``."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def source_tree_hash(repo: Path, subdir: str, env: Mapping[str, str]) -> str:
    """Hash of every file under ``repo/subdir`` that git does not ignore (tracked or not).

    git decides what belongs to the source (``.gitignore`` keeps ``runtime/build*`` out);
    the contents are read from the work tree, so uncommitted edits count.
    """
    listed = run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others",
                  "--exclude-standard", "--", subdir], env=env, what="git ls-files").stdout
    names = sorted({n for n in listed.split("\0") if n})
    if not names:
        raise ConfigError(f"{repo / subdir}: no source files found",
                          hint="run kiln from a checkout of the repository")
    h = hashlib.sha256()
    for name in names:
        path = repo / name
        if path.is_symlink():
            h.update(f"{name}\0link\0{os.readlink(path)}\0".encode())
        elif path.is_file():
            mode = "x" if os.access(path, os.X_OK) else "-"
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            h.update(f"{name}\0{mode}\0{digest}\0".encode())
        # a tracked file deleted in the work tree is simply absent from the source
    return h.hexdigest()


class BuildCache:
    """The ``builds/`` part of a layout, with its locks."""

    def __init__(self, layout: CacheLayout) -> None:
        self.layout = layout
        for d in (layout.builds, layout.work, layout.locks):
            d.mkdir(parents=True, exist_ok=True)

    def _lock_path(self, key: str) -> Path:
        return self.layout.locks / f"build-{key}.lock"

    def lock(self, key: str) -> FileLock:
        # the object ``store`` takes again (re-entrant) through ``install_once``
        return file_lock(self._lock_path(key))

    def work_lock(self, entry_id: str) -> FileLock:
        return file_lock(self.layout.locks / f"work-{entry_id}.lock")

    def work_dir(self, entry_id: str) -> Path:
        return self.layout.work / entry_id

    def entry_dir(self, key: str) -> Path:
        return self.layout.builds / key

    def lookup(self, key: str) -> Path | None:
        """The cached stage of ``key``, or None. Call with the key's lock held."""
        d = self.entry_dir(key)
        if (d / COMPLETE).is_file() and (d / "stage").is_dir():
            return d / "stage"
        return None

    def store(self, key: str, stage: Path, meta: Mapping[str, Any]) -> Path:
        """Copy ``stage`` into the cache atomically; return the cached stage. Lock held (the
        caller found no entry under it: a complete entry already there would be kept)."""
        final = self.entry_dir(key)
        # what killed runs of older kilns left (they named it .tmp-<key>-<pid>-<thread>)
        for stale in self.layout.builds.glob(f".tmp-{key}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if (final / COMPLETE).is_file() and self.lookup(key) is None:
            # COMPLETE without its stage (half deleted): not an entry, so replace it
            (final / COMPLETE).unlink()

        def fill(tmp: Path) -> str:
            shutil.copytree(stage, tmp / "stage", symlinks=True)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n",
                                           encoding="utf-8")
            return ""

        install_once(final, lock=self._lock_path(key), fill=fill, marker=COMPLETE)
        return final / "stage"

    def read_verify(self, key: str, vkey: str) -> dict[str, Any] | None:
        path = self.entry_dir(key) / "verify" / f"{vkey}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def write_verify(self, key: str, vkey: str, data: Mapping[str, Any]) -> None:
        d = self.entry_dir(key) / "verify"
        d.mkdir(exist_ok=True)
        atomic_write_text(d / f"{vkey}.json", json.dumps(data, indent=2, sort_keys=True) + "\n")
