"""Package a verified stage into the release archive, byte for byte reproducibly.

``<name>-b<N>-bin-<id>.tar.gz`` (``.zip`` for Windows; kiln.toml's ``project.archive``) holds
one top directory named like the archive without its extension, and in it the staged tree
(what the project's ``cmake --install`` staged, or its ``build.targets`` in ``bin/``), which
must hold what kiln.toml's ``[package]`` requires, plus ``LICENSE`` and ``BUILD-INFO.json``
(id, build number, commit, target, toolchain versions, flags).

Reproducible: members sorted by name, directories listed, owner 0:0 without names, modes
0755/0644 only, every mtime SOURCE_DATE_EPOCH (the commit time), gzip header without name and
with the same mtime, fixed compression levels. The same stage, build number and commit give
the same bytes on any run.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import stat
import tarfile
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.errors import BuildError
from kiln.plan import Job
from kiln.project import Layout

__all__ = [
    "BuildInfo",
    "Member",
    "archive_top",
    "check_layout",
    "collect_members",
    "package",
    "required_files",
    "write_tar_gz",
    "write_zip",
]

ZIP_EPOCH_MIN = 315532800  # 1980-01-01: the earliest time a zip entry can hold
GZIP_LEVEL = 9


@dataclass(frozen=True, kw_only=True)
class BuildInfo:
    """``BUILD-INFO.json``: what was built, from what, with what."""

    id: str
    build_number: int
    commit: str
    source_date_epoch: int
    source_tree: str
    target: str
    os: str
    arch: str
    backend: str
    toolchain: tuple[tuple[str, str], ...]
    cflags: tuple[str, ...]
    ldflags: tuple[str, ...]
    cmake_options: tuple[tuple[str, str], ...]
    kiln_version: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "build_number": self.build_number, "commit": self.commit,
            "source_date_epoch": self.source_date_epoch, "source_tree": self.source_tree,
            "target": self.target, "os": self.os, "arch": self.arch, "backend": self.backend,
            "toolchain": dict(self.toolchain), "cflags": list(self.cflags),
            "ldflags": list(self.ldflags), "cmake_options": dict(self.cmake_options),
            "kiln_version": self.kiln_version,
        }

    def text(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"


@dataclass(frozen=True, kw_only=True)
class Member:
    """One archive member: a directory, a file (bytes) or a symbolic link."""

    name: str
    kind: str            # "dir" | "file" | "link"
    data: bytes = b""
    target: str = ""     # link target
    executable: bool = False


def required_files(job: Job, layout: Layout) -> tuple[tuple[str, ...], ...]:
    """Groups of stage paths of which at least one must exist: what kiln.toml's ``[package]``
    requires (or the programs of ``build.targets`` in ``bin/``) for the entry's OS."""
    return layout.groups(job.entry.os)


def check_layout(job: Job, stage: Path, layout: Layout) -> None:
    """Refuse a staged tree that lacks what its archive must hold (``required_files``)."""
    missing = [" or ".join(g) for g in required_files(job, layout)
               if not any((stage / p).is_file() for p in g)]
    if missing:
        raise BuildError(f"'{job.entry.id}': the staged tree lacks {', '.join(missing)}",
                         hint="the project's CMake install() rules (or kiln.toml's "
                              "build.targets) must make what kiln.toml's [package] requires")


def collect_members(stage: Path, top: str, extra: Mapping[str, bytes], *,
                    follow_links: bool) -> list[Member]:
    """Members for ``stage`` under ``top/``, plus ``extra`` files at the top, sorted."""
    members: dict[str, Member] = {top: Member(name=top, kind="dir")}
    for path in sorted(stage.rglob("*")):
        name = f"{top}/{path.relative_to(stage).as_posix()}"
        if path.is_symlink() and not follow_links:
            members[name] = Member(name=name, kind="link", target=os.readlink(path))
        elif path.is_dir():
            members[name] = Member(name=name, kind="dir")
        elif path.is_file():
            mode = path.stat().st_mode
            members[name] = Member(name=name, kind="file", data=path.read_bytes(),
                                   executable=bool(mode & stat.S_IXUSR))
    for rel, data in extra.items():
        members[f"{top}/{rel}"] = Member(name=f"{top}/{rel}", kind="file", data=data)
    return [members[k] for k in sorted(members)]


def _mode(m: Member) -> int:
    return 0o755 if m.kind == "dir" or m.executable else 0o644


def write_tar_gz(members: Sequence[Member], dest: Path, epoch: int) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.mtime = epoch
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = _mode(m) if m.kind != "link" else 0o777
            if m.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif m.kind == "link":
                info.type = tarfile.SYMTYPE
                info.linkname = m.target
                tar.addfile(info)
            else:
                info.size = len(m.data)
                tar.addfile(info, io.BytesIO(m.data))
    with dest.open("wb") as fh, gzip.GzipFile(filename="", mode="wb", fileobj=fh,
                                              mtime=epoch, compresslevel=GZIP_LEVEL) as gz:
        gz.write(raw.getvalue())


def write_zip(members: Sequence[Member], dest: Path, epoch: int) -> None:
    stamp = time.gmtime(max(epoch, ZIP_EPOCH_MIN))[:6]
    with zipfile.ZipFile(dest, "w") as zf:
        for m in members:
            if m.kind == "dir":
                info = zipfile.ZipInfo(m.name + "/", date_time=stamp)
                info.external_attr = ((stat.S_IFDIR | 0o755) << 16) | 0x10
                data = b""
                info.compress_type = zipfile.ZIP_STORED
            else:
                info = zipfile.ZipInfo(m.name, date_time=stamp)
                info.external_attr = (stat.S_IFREG | _mode(m)) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                data = m.data
            info.create_system = 3  # Unix: the mode bits above mean what they say
            zf.writestr(info, data, compresslevel=GZIP_LEVEL)


def archive_top(asset_name: str) -> str:
    for ext in (".tar.gz", ".zip"):
        if asset_name.endswith(ext):
            return asset_name[: -len(ext)]
    return asset_name


def package(job: Job, stage: Path, *, dest_dir: Path, info: BuildInfo, license_file: Path,
            epoch: int, layout: Layout) -> Path:
    """Write ``dest_dir/<job.artifact>`` from ``stage`` (which must hold what ``layout``
    requires); return its path."""
    check_layout(job, stage, layout)
    extra = {"LICENSE": license_file.read_bytes(), "BUILD-INFO.json": info.text().encode()}
    top = archive_top(job.artifact)
    dest = dest_dir / job.artifact
    if job.entry.archive == "zip":
        write_zip(collect_members(stage, top, extra, follow_links=True), dest, epoch)
    else:
        write_tar_gz(collect_members(stage, top, extra, follow_links=False), dest, epoch)
    return dest
