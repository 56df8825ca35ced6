"""Per-asset records: what ``kiln build`` writes next to each archive, and what ``kiln release``
merges into the release's ``manifest.json`` and ``kiln install`` ranks.

One JSON file per built asset, ``<asset name>.json`` beside the asset (e.g.
``ember-b42-bin-ubuntu-x64.tar.gz.json``), holding one ``AssetRecord``. Parsing happens here,
once, with errors that name the file and the field; nothing past this module reads raw dicts.
"""

from __future__ import annotations

import json
import re
import stat
import tarfile
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from kiln.errors import IntegrityError, ReleaseError
from kiln.files import atomic_write_text, sha256_file
from kiln.matrix import Entry, Requirements

__all__ = [
    "MANIFEST_SCHEMA",
    "AssetRecord",
    "Verification",
    "read_record",
    "record_for",
    "unpacked_size",
    "write_record",
]

MANIFEST_SCHEMA = 1
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, kw_only=True)
class Verification:
    """The outcome of one verification method on one built entry."""

    method: str
    ok: bool
    detail: str


@dataclass(frozen=True, kw_only=True)
class AssetRecord(Requirements):
    """One release asset and everything a release or an installer needs to know about it:
    the ``Requirements`` of the matrix entry it was built from, plus the file."""

    name: str
    kind: str  # "archive" | "wheel"
    entry_id: str
    build_number: int
    commit: str
    size: int
    sha256: str
    # The sum of the sizes of the regular files inside the archive or wheel: installers
    # refuse to write more file content than this, so a hostile archive cannot fill a disk.
    unpacked_size: int
    verification: Verification

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["cpu_dispatch"] = list(self.cpu_dispatch)
        out["gpu_targets"] = list(self.gpu_targets)
        return out

    @classmethod
    def from_json(cls, data: object, *, source: str) -> AssetRecord:
        """Parse one record; ``source`` names the file in errors."""
        if not isinstance(data, Mapping):
            raise ReleaseError(f"{source}: expected a JSON object")
        want = {f.name for f in fields(cls)}
        missing = sorted(want - set(data))
        unknown = sorted(set(data) - want)
        if missing or unknown:
            raise ReleaseError(
                f"{source}: asset record fields do not match (missing: {missing or 'none'}, "
                f"unknown: {unknown or 'none'})",
                hint="rebuild the asset with this version of kiln")
        v = data["verification"]
        if not isinstance(v, Mapping) or set(v) != {"method", "ok", "detail"}:
            raise ReleaseError(f"{source}: field 'verification' must be "
                               "{method, ok, detail}")
        if not isinstance(data["sha256"], str) or not SHA256_RE.fullmatch(data["sha256"]):
            raise ReleaseError(f"{source}: field 'sha256' is not a lower-case sha256 digest")
        for key in ("size", "unpacked_size"):
            value = data[key]
            # bool is an int in Python; true is not a size
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ReleaseError(f"{source}: field {key!r} must be a non-negative integer, "
                                   f"not {value!r}")
        return cls(
            name=str(data["name"]), kind=str(data["kind"]), entry_id=str(data["entry_id"]),
            os=str(data["os"]), arch=str(data["arch"]), backend=str(data["backend"]),
            backend_version=_opt(data["backend_version"]), libc=str(data["libc"]),
            libc_floor=_opt(data["libc_floor"]), min_os=_opt(data["min_os"]),
            cpu_baseline=str(data["cpu_baseline"]),
            cpu_dispatch=tuple(str(x) for x in data["cpu_dispatch"]),
            gpu_targets=tuple(str(x) for x in data["gpu_targets"]),
            min_driver=_opt(data["min_driver"]),
            build_number=int(data["build_number"]),
            commit=str(data["commit"]), size=int(data["size"]), sha256=str(data["sha256"]),
            unpacked_size=int(data["unpacked_size"]),
            verification=Verification(method=str(v["method"]), ok=bool(v["ok"]),
                                      detail=str(v["detail"])),
        )


def _opt(value: object) -> str | None:
    return None if value is None else str(value)


def record_for(entry: Entry, asset: Path, *, kind: str, build_number: int, commit: str,
               verification: Verification) -> AssetRecord:
    return AssetRecord(
        **vars(entry.requirements()),
        name=asset.name, kind=kind, entry_id=entry.id, build_number=build_number, commit=commit,
        size=asset.stat().st_size, sha256=sha256_file(asset),
        unpacked_size=unpacked_size(asset), verification=verification,
    )


def unpacked_size(asset: Path) -> int:
    """The sum of the sizes of the regular files in a ``.tar.gz``, ``.zip`` or ``.whl``.

    The format is told by the content, not the name: a gzip'ed tar starts with the gzip
    magic, a zip (or wheel) is what ``zipfile`` opens. Directories and symbolic links count
    nothing; this is the file content an installer writes."""
    try:
        if zipfile.is_zipfile(asset):
            with zipfile.ZipFile(asset) as zf:
                return sum(i.file_size for i in zf.infolist() if _zip_regular(i))
        with tarfile.open(asset, "r:*") as tf:
            return sum(m.size for m in tf if m.isreg())
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ReleaseError(f"{asset}: cannot read it as a .tar.gz, .zip or wheel to count "
                           f"its unpacked size: {exc}",
                           hint="the asset is damaged or not an archive; rebuild it") from exc


def _zip_regular(info: zipfile.ZipInfo) -> bool:
    """A zip entry that is a regular file: not a directory, and not a symbolic link (Unix
    mode S_IFLNK in the high bits of ``external_attr``; its data is the link's target)."""
    if info.is_dir():
        return False
    fmt = stat.S_IFMT(info.external_attr >> 16)
    return fmt in (0, stat.S_IFREG)


def write_record(record: AssetRecord, directory: Path) -> Path:
    path = directory / f"{record.name}.json"
    atomic_write_text(path, json.dumps(record.to_json(), indent=2, sort_keys=True) + "\n")
    return path


def read_record(path: Path, *, check_asset: bool = True) -> AssetRecord:
    """Read ``<asset>.json`` and, with ``check_asset``, check the asset beside it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ReleaseError(f"{path}: cannot read asset record: {exc}") from exc
    record = AssetRecord.from_json(data, source=str(path))
    if check_asset:
        asset = path.with_name(record.name)
        if not asset.is_file():
            raise ReleaseError(f"{path}: the asset {record.name} is not beside its record")
        if asset.stat().st_size != record.size or sha256_file(asset) != record.sha256:
            raise IntegrityError(f"{asset}: size or sha256 differs from {path.name}",
                                 hint="the asset was modified or truncated; rebuild it")
    return record
