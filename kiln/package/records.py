"""Per-asset records: what ``kiln build`` writes next to each archive, and what ``kiln release``
merges into the release's ``manifest.json`` and ``kiln install`` ranks.

One JSON file per built asset, ``<asset name>.json`` beside the asset (e.g.
``llama-b42-bin-ubuntu-x64.tar.gz.json``), holding one ``AssetRecord``. Parsing happens here,
once, with errors that name the file and the field; nothing past this module reads raw dicts.
"""

from __future__ import annotations

import json
import re
import stat
import tarfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from kiln.errors import IntegrityError, ReleaseError
from kiln.files import atomic_write_text, sha256_file
from kiln.matrix import Entry, Requirements

__all__ = [
    "MANIFEST_SCHEMA",
    "AssetRecord",
    "Tool",
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
class Tool:
    """One program of the toolchain that built an asset, at its pinned version (``zig``
    0.17.1, ``nvcc`` 13.3.73, ``glslc`` 2023.2...): the toolchain's own account, from
    ``kiln.build.toolchains``, which the SBOM lists as it is."""

    name: str
    version: str


_TOOL_TEXT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 .+/_-]{0,63}")


@dataclass(frozen=True, kw_only=True)
class AssetRecord(Requirements):
    """One release asset and everything a release or an installer needs to know about it:
    the ``Requirements`` of the matrix entry it was built from, plus the file."""

    name: str
    kind: str  # "archive" | "wheel"
    entry_id: str
    build_number: int
    commit: str
    toolchain: tuple[Tool, ...]
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
        out["toolchain"] = [{"name": t.name, "version": t.version} for t in self.toolchain]
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
        toolchain = _tools(data["toolchain"], source)
        for key in ("size", "unpacked_size"):
            value = data[key]
            # bool is an int in Python; true is not a size
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ReleaseError(f"{source}: field {key!r} must be a non-negative integer, "
                                   f"not {value!r}")
        # Types as kiln writes them, nothing converted: "42" is not a build number, "false"
        # is not a verification outcome, "abc" is not a list of CPU features.
        for key in ("name", "kind", "entry_id", "os", "arch", "backend", "libc",
                    "cpu_baseline", "commit"):
            _want(isinstance(data[key], str), key, data[key], "a string", source)
        for key in ("backend_version", "libc_floor", "min_os", "min_driver"):
            _want(data[key] is None or isinstance(data[key], str), key, data[key],
                  "a string or null", source)
        for key in ("cpu_dispatch", "gpu_targets"):
            _want(isinstance(data[key], list) and all(isinstance(x, str) for x in data[key]),
                  key, data[key], "a list of strings", source)
        number = data["build_number"]
        _want(isinstance(number, int) and not isinstance(number, bool) and number >= 0,
              "build_number", number, "a non-negative integer", source)
        _want(isinstance(v["method"], str) and isinstance(v["detail"], str)
              and isinstance(v["ok"], bool), "verification", v,
              "{method: string, ok: true or false, detail: string}", source)
        return cls(
            name=data["name"], kind=data["kind"], entry_id=data["entry_id"],
            os=data["os"], arch=data["arch"], backend=data["backend"],
            backend_version=data["backend_version"], libc=data["libc"],
            libc_floor=data["libc_floor"], min_os=data["min_os"],
            cpu_baseline=data["cpu_baseline"],
            cpu_dispatch=tuple(data["cpu_dispatch"]),
            gpu_targets=tuple(data["gpu_targets"]),
            min_driver=data["min_driver"],
            build_number=number,
            commit=data["commit"], toolchain=toolchain,
            size=data["size"], sha256=data["sha256"],
            unpacked_size=data["unpacked_size"],
            verification=Verification(method=v["method"], ok=v["ok"], detail=v["detail"]),
        )


def _want(ok: bool, key: str, value: object, what: str, source: str) -> None:
    if not ok:
        raise ReleaseError(f"{source}: field {key!r} must be {what}, not {str(value)[:60]!r}",
                           hint="a record is written by `kiln build`; rebuild the asset")


def _tools(value: object, source: str) -> tuple[Tool, ...]:
    """The ``toolchain`` field: a non-empty list of {name, version}, plain words only."""
    if not isinstance(value, list) or not value:
        raise ReleaseError(f"{source}: field 'toolchain' must be a non-empty list of "
                           "{name, version}")
    out = []
    for item in value:
        if not isinstance(item, Mapping) or set(item) != {"name", "version"} or not all(
                isinstance(item[k], str) and _TOOL_TEXT_RE.fullmatch(item[k])
                for k in ("name", "version")):
            raise ReleaseError(f"{source}: field 'toolchain' has an item that is not "
                               f"{{name, version}} of plain words: {str(item)[:80]!r}")
        out.append(Tool(name=item["name"], version=item["version"]))
    return tuple(out)


def record_for(entry: Entry, asset: Path, *, kind: str, build_number: int, commit: str,
               toolchain: Sequence[Tool], verification: Verification) -> AssetRecord:
    if not toolchain:
        raise ReleaseError(f"'{entry.id}': no toolchain named for {asset.name}")
    return AssetRecord(
        **vars(entry.requirements()),
        name=asset.name, kind=kind, entry_id=entry.id, build_number=build_number, commit=commit,
        toolchain=tuple(toolchain),
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
