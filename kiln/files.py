"""File helpers shared by kiln's caches, releases and installers.

- ``atomic_write_text`` / ``atomic_write_bytes``: a temporary file beside the target, fsync'ed,
  then renamed over it, so a reader sees the old content or the new, never a part.
- ``fsync_dir``: make a rename inside a directory durable.
- ``sha256_file``: the digest of a file, read in 1 MiB chunks.
- ``install_once``: fill a directory exactly once, however many threads and processes ask at
  the same time (the toolchains in ``<cache>/toolchains`` and the build cache's entries).

Locks are ``filelock.FileLock`` (a well-kept library: ``flock`` on POSIX, ``msvcrt`` locking on
Windows, with per-thread hold counts). They are taken with ``is_singleton=True``: every lock of
one path in a process is then one object, so a caller that already holds the lock (the build
cache stores an entry under its key's lock) re-enters it instead of dead-locking on itself,
while other threads and other processes still wait.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

__all__ = [
    "COMPLETE",
    "atomic_write_bytes",
    "atomic_write_text",
    "file_lock",
    "fsync_dir",
    "install_once",
    "sha256_file",
]

# The marker ``install_once`` writes last: a directory without it is not installed.
COMPLETE = ".kiln-complete"


def _unique() -> str:
    """A suffix no other thread or process uses at the same time."""
    return f"{os.getpid()}-{threading.get_ident()}"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory, fsync'ed,
    then renamed over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{_unique()}")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    """``atomic_write_bytes`` for text: UTF-8, written in text mode (the platform's newlines,
    as ``Path.write_text`` does)."""
    tmp = path.with_name(f".{path.name}.tmp-{_unique()}")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def fsync_dir(path: Path) -> None:
    """fsync the directory ``path``, so that the renames made in it survive a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    """The lower-case hex sha256 of the file at ``path``."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_lock(path: Path) -> FileLock:
    """The process-wide lock object of ``path`` (re-entrant in the thread that holds it)."""
    return FileLock(str(path), is_singleton=True)


def install_once(dest: Path, *, lock: Path, fill: Callable[[Path], str | None],
                 marker: str = COMPLETE,
                 adopt: Callable[[Path], str | None] | None = None) -> Path:
    """Install something into ``dest`` exactly once, under the file lock ``lock``; return
    ``dest``.

    ``dest`` is installed when ``dest/marker`` is a file. Otherwise, with the lock held and
    ``dest`` checked again (another thread or process may have installed it while this one
    waited): the temporary directories ``.<dest name>.tmp-*`` that killed installs left
    beside ``dest`` are removed, ``fill`` fills a fresh empty one, the marker is written into
    it with the text ``fill`` returns (empty for None), and it is renamed to ``dest`` (a
    ``dest`` without marker is renamed aside first, then removed). The temporary directory is
    removed whatever happens, so a ``fill`` that raises leaves neither ``dest`` nor a
    temporary directory behind.

    ``adopt``, when given, is asked under the lock, before ``fill``, whether ``dest`` already
    holds a complete install made some other way (by hand): if it returns a text, that text
    becomes the marker written into ``dest`` as it is, and nothing is filled.
    """
    if (dest / marker).is_file():
        return dest
    lock.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(lock):
        if (dest / marker).is_file():  # installed by another thread or process meanwhile
            return dest
        if adopt is not None and dest.is_dir():
            text = adopt(dest)
            if text is not None:
                atomic_write_text(dest / marker, text)
                return dest
        parent = dest.parent
        parent.mkdir(parents=True, exist_ok=True)
        prefix = f".{dest.name}.tmp-"
        # Whatever a killed install left behind belongs to nobody now: we hold the lock.
        for stale in parent.glob(glob.escape(prefix) + "*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = parent / f"{prefix}{_unique()}"
        # named like a temporary directory, so that a kill between the two renames below
        # leaves something the next install removes
        aside = parent / f"{prefix}{_unique()}-old"
        try:
            tmp.mkdir()
            text = fill(tmp)
            (tmp / marker).write_text(text or "", encoding="utf-8")
            if dest.exists():  # an install without its marker (killed, or half deleted)
                dest.rename(aside)
            tmp.rename(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(aside, ignore_errors=True)
    return dest
