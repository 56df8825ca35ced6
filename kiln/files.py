"""File helpers shared by kiln's caches, releases and installers.

- ``atomic_write_text`` / ``atomic_write_bytes``: a temporary file beside the target, fsync'ed,
  then renamed over it, so a reader sees the old content or the new, never a part.
- ``fsync_dir``: make a rename inside a directory durable.
- ``sha256_file``: the digest of a file, read in 1 MiB chunks.
- ``install_once``: fill a directory exactly once, however many threads and processes ask at
  the same time (the toolchains in ``<cache>/toolchains`` and the build cache's entries).
- ``safe_unpack``: unpack a release archive that may be hostile (kiln install, the Conan
  publisher), every member checked before anything is written.

Locks are ``filelock.FileLock`` (a well-kept library: ``flock`` on POSIX, ``msvcrt`` locking on
Windows, with per-thread hold counts). They are taken with ``is_singleton=True``: every lock of
one path in a process is then one object, so a caller that already holds the lock (the build
cache stores an entry under its key's lock) re-enters it instead of dead-locking on itself,
while other threads and other processes still wait.
"""

from __future__ import annotations

import glob
import hashlib
import lzma
import os
import shutil
import stat
import tarfile
import threading
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from filelock import FileLock

from kiln.errors import IntegrityError

__all__ = [
    "COMPLETE",
    "MAX_LINK_TARGET",
    "MAX_MEMBERS",
    "UNPACK_DAMAGE",
    "ArchiveMember",
    "atomic_write_bytes",
    "atomic_write_text",
    "file_lock",
    "fsync_dir",
    "install_once",
    "is_within",
    "safe_unpack",
    "sha256_file",
    "write_archive_members",
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


def is_within(path: Path, root: Path) -> bool:
    """Whether ``path`` is ``root`` or below it, links resolved."""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


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


# --------------------------------------------------------------------------------------------
# unpacking an archive that may be hostile

# What a damaged (not hostile) archive raises while it is read. zipfile: NotImplementedError
# for an unknown compression method, RuntimeError for an encrypted member; both only in an
# archive that kiln did not write.
UNPACK_DAMAGE: tuple[type[Exception], ...] = (
    tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError,
    NotImplementedError, RuntimeError, ValueError)

# An archive with more members than this is refused before anything is written: a release
# archive holds a few dozen, and each member costs an inode even when it is empty.
MAX_MEMBERS = 100_000
# A symbolic link in a zip stores its target as the entry's data.
MAX_LINK_TARGET = 4096


@dataclass(frozen=True, kw_only=True)
class ArchiveMember:
    """One archive member, checked: ``path`` is relative, '/'-separated, normalised."""

    raw: str  # the name as the archive spells it, for messages
    path: str
    kind: str  # "file" | "dir" | "link"
    size: int  # declared size of a file's content
    mode: int  # 0o755 or 0o644, whatever the archive says
    target: str = ""  # a link's target
    source: Callable[[], IO[bytes]] | None = None  # a file's content


def _refuse(archive: Path, raw: str, why: str) -> IntegrityError:
    return IntegrityError(f"{archive.name}: member {raw[:200]!r} {why}",
                          hint="the archive is hostile or broken: do not install it")


def _member_path(archive: Path, raw: str, *, is_dir: bool) -> str | None:
    """The normalised relative path of a member name; ``None`` for the archive's root itself
    ("./" as ``tar -C dir .`` writes it). Absolute names, ``..``, NUL, backslashes and ':'
    (a drive letter on Windows, where kiln install also runs) are refused."""
    if "\0" in raw:
        raise _refuse(archive, raw, "has a NUL in its name")
    if "\\" in raw:
        raise _refuse(archive, raw, "has a backslash in its name")
    if ":" in raw:
        raise _refuse(archive, raw, "has a ':' in its name (a drive on Windows)")
    if raw.startswith("/"):
        raise _refuse(archive, raw, "has an absolute path")
    parts = raw.split("/")
    if ".." in parts:
        raise _refuse(archive, raw, "has a '..' component: it would be written outside the "
                                    "install directory")
    kept = [q for q in parts if q not in ("", ".")]
    if not kept:
        if is_dir:
            return None
        raise _refuse(archive, raw, "has an empty name")
    return "/".join(kept)


def _check_mode(archive: Path, raw: str, mode: int) -> int:
    """The mode an unpacked file gets: 0o755 when the archive gives it any execute bit, else
    0o644. Set-user-ID, set-group-ID and sticky bits are refused, not masked: no release
    archive has them."""
    if mode & 0o7000:
        raise _refuse(archive, raw, f"has mode {mode & 0o7777:o}: set-user-ID, set-group-ID "
                                    "and sticky bits are refused")
    return 0o755 if mode & 0o111 else 0o644


def _link_target(archive: Path, raw: str, path: str, target: str) -> str:
    """A link's target, if it is relative and, read as text, stays inside the archive's root.
    (Links through other links are checked on the unpacked tree, see ``_check_links``.)"""
    if not target or "\0" in target or "\\" in target or ":" in target:
        raise _refuse(archive, raw, f"is a symbolic link to {target[:200]!r}: an empty "
                                    "target or one with a NUL, backslash or ':' is refused")
    if target.startswith("/"):
        raise _refuse(archive, raw, f"is a symbolic link to the absolute path {target!r}")
    where = path.split("/")[:-1]
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not where:
                raise _refuse(archive, raw, f"is a symbolic link to {target!r}, outside the "
                                            "archive")
            where.pop()
        else:
            where.append(part)
    return target


def _tar_members(archive: Path, tf: tarfile.TarFile) -> list[ArchiveMember]:
    out: list[ArchiveMember] = []
    for n, info in enumerate(tf):
        if n >= MAX_MEMBERS:
            raise IntegrityError(f"{archive.name} has more than {MAX_MEMBERS} members",
                                 hint="the archive is hostile or broken: do not install it")
        raw = info.name
        if info.islnk():
            raise _refuse(archive, raw, f"is a hard link (to {info.linkname!r})")
        if info.ischr() or info.isblk():
            raise _refuse(archive, raw, "is a device file")
        if info.isfifo():
            raise _refuse(archive, raw, "is a FIFO")
        if info.issparse():
            raise _refuse(archive, raw, "is a sparse file")
        if not (info.isreg() or info.isdir() or info.issym()):
            raise _refuse(archive, raw, f"has the tar type {info.type!r}: only files, "
                                        "directories and symbolic links are allowed")
        mode = _check_mode(archive, raw, info.mode)
        path = _member_path(archive, raw, is_dir=info.isdir())
        if path is None:
            continue
        if info.isdir():
            out.append(ArchiveMember(raw=raw, path=path, kind="dir", size=0, mode=0o755))
        elif info.issym():
            out.append(ArchiveMember(raw=raw, path=path, kind="link", size=0, mode=0o777,
                               target=_link_target(archive, raw, path, info.linkname)))
        else:
            def source(info: tarfile.TarInfo = info) -> IO[bytes]:
                fh = tf.extractfile(info)
                assert fh is not None  # a regular file always has content
                return fh

            out.append(ArchiveMember(raw=raw, path=path, kind="file", size=info.size, mode=mode,
                               source=source))
    return out


def _zip_members(archive: Path, zf: zipfile.ZipFile) -> list[ArchiveMember]:
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise IntegrityError(f"{archive.name} has {len(infos)} members, more than "
                             f"{MAX_MEMBERS}",
                             hint="the archive is hostile or broken: do not install it")
    out: list[ArchiveMember] = []
    for info in infos:
        raw = info.filename
        unix = info.external_attr >> 16  # the Unix mode, when the zip was made on Unix
        fmt = stat.S_IFMT(unix)
        is_dir = info.is_dir() or fmt == stat.S_IFDIR
        if is_dir and fmt not in (0, stat.S_IFDIR):
            raise _refuse(archive, raw, f"is named like a directory but has the type "
                                        f"{fmt:o}")
        if not is_dir and fmt not in (0, stat.S_IFREG, stat.S_IFLNK):
            raise _refuse(archive, raw, f"has the file type {fmt:o}: only files, "
                                        "directories and symbolic links are allowed")
        mode = _check_mode(archive, raw, unix)
        path = _member_path(archive, raw, is_dir=is_dir)
        if path is None:
            continue
        if is_dir:
            out.append(ArchiveMember(raw=raw, path=path, kind="dir", size=0, mode=0o755))
        elif fmt == stat.S_IFLNK:
            if info.file_size > MAX_LINK_TARGET:
                raise _refuse(archive, raw, f"is a symbolic link with a {info.file_size}-byte "
                                            "target")
            with zf.open(info) as fh:
                data = fh.read(MAX_LINK_TARGET + 1)
            target = data.decode("utf-8", errors="replace")
            out.append(ArchiveMember(raw=raw, path=path, kind="link", size=0, mode=0o777,
                               target=_link_target(archive, raw, path, target)))
        else:
            def source(info: zipfile.ZipInfo = info) -> IO[bytes]:
                return zf.open(info)

            out.append(ArchiveMember(raw=raw, path=path, kind="file", size=info.file_size,
                               mode=mode, source=source))
    return out


def _check_plan(archive: Path, members: Sequence[ArchiveMember], max_bytes: int) -> None:
    """Refuse, before anything is written: a path listed twice, a member below a link or
    below a file, and declared file content above ``max_bytes``."""
    kinds: dict[str, ArchiveMember] = {}
    for m in members:
        if m.path in kinds:
            raise _refuse(archive, m.raw, f"is listed twice (as {kinds[m.path].raw!r} "
                                          "before)")
        kinds[m.path] = m
    for m in members:
        parts = m.path.split("/")
        for i in range(1, len(parts)):
            above = kinds.get("/".join(parts[:i]))
            if above is not None and above.kind == "link":
                raise _refuse(archive, m.raw, f"would be written through the symbolic link "
                                              f"{above.raw!r}")
            if above is not None and above.kind == "file":
                raise _refuse(archive, m.raw, f"is below the file {above.raw!r}")
    declared = sum(m.size for m in members if m.kind == "file")
    if declared > max_bytes:
        raise _too_big_unpacked(archive, max_bytes, f"its members declare {declared} bytes")


def _too_big_unpacked(archive: Path, max_bytes: int, detail: str) -> IntegrityError:
    return IntegrityError(f"{archive.name} unpacks to more than the {max_bytes} bytes its "
                          f"signed record says ({detail})",
                          hint="the archive is hostile or broken: do not install it")


def _mkdirs(dest: Path, parts: Sequence[str]) -> Path:
    """Create ``dest/parts...`` as real directories (mode 0o755), never through a link."""
    here = dest
    for part in parts:
        here = here / part
        try:
            os.mkdir(here, 0o755)
        except FileExistsError:
            if here.is_symlink() or not here.is_dir():
                raise
    return here


def write_archive_members(archive: Path, dest: Path, members: Sequence[ArchiveMember],
                   max_bytes: int) -> None:
    """Write each member under ``dest`` by hand (no ``extractall``): files created anew
    (O_EXCL, O_NOFOLLOW), never owned as the archive says, modes 0o755/0o644, and the file
    content counted as it is written, so that an archive whose content outgrows its declared
    sizes stops at ``max_bytes`` instead of filling the disk."""
    written = 0
    nofollow = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    for m in members:
        parts = m.path.split("/")
        parent = _mkdirs(dest, parts[:-1])
        path = parent / parts[-1]
        if m.kind == "dir":
            _mkdirs(parent, parts[-1:])
            os.chmod(path, 0o755)
        elif m.kind == "link":
            os.symlink(m.target, path)
        else:
            assert m.source is not None
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | nofollow, 0o600)
            with os.fdopen(fd, "wb") as out, m.source() as src:
                while chunk := src.read(1 << 16):
                    written += len(chunk)
                    if written > max_bytes:
                        raise _too_big_unpacked(archive, max_bytes,
                                                f"stopped at {m.raw!r}")
                    out.write(chunk)
            os.chmod(path, m.mode)


def _check_links(archive: Path, dest: Path, members: Sequence[ArchiveMember]) -> None:
    """Each unpacked link, resolved on disk (through any other links), stays in ``dest``."""
    root = os.path.realpath(dest)
    for m in members:
        if m.kind != "link":
            continue
        real = os.path.realpath(dest.joinpath(*m.path.split("/")))
        if real != root and not real.startswith(root + os.sep):
            raise _refuse(archive, m.raw, f"is a symbolic link to {m.target!r}, which "
                                          "resolves outside the archive")


def safe_unpack(archive: Path, dest: Path, *, max_bytes: int) -> None:
    """Unpack ``archive`` (.tar.gz, .zip or wheel) into the empty directory ``dest``, checking
    every member before anything is written (docs/install.md, "What an installer refuses"): only
    files, directories and symbolic links; no absolute path, ``..``, NUL, backslash, ':', hard
    link, device, FIFO, set-ID or sticky bit, duplicate, member below a link or a file, link
    leading outside; no more than ``max_bytes`` of file content, counted as it is written.

    A refusal is an ``IntegrityError``. A damaged archive raises one of ``UNPACK_DAMAGE`` and
    a failed write an ``OSError``: the callers say what that means for them (download again,
    rebuild the release). ``dest`` may then hold part of the archive and is the caller's to
    remove."""
    if archive.name.endswith((".zip", ".whl")):  # a wheel is a zip
        with zipfile.ZipFile(archive) as zf:
            members = _zip_members(archive, zf)
            _check_plan(archive, members, max_bytes)
            write_archive_members(archive, dest, members, max_bytes)
    elif archive.name.endswith(".tar.gz"):
        with tarfile.open(archive, "r:gz") as tf:
            members = _tar_members(archive, tf)
            _check_plan(archive, members, max_bytes)
            write_archive_members(archive, dest, members, max_bytes)
    else:
        raise IntegrityError(f"{archive.name} is neither a .tar.gz nor a .zip (or wheel)",
                             hint="the release is damaged or hostile: do not install it")
    _check_links(archive, dest, members)
