"""The release index, ``index.json``: what an installer chooses from.

Modelled on Node's ``dist/index.json`` (one file, releases newest first), signed like
``SHA256SUMS``, and carrying what TUF's timestamp metadata carries against replay: an increasing
``version`` and an ``expires`` date. Every release directory holds one (its own release alone,
``kind: release``) and ``kiln publish file://`` keeps one at the mirror root (every release of
the mirror, ``kind: mirror``). The format is specified in ``docs/index.md``, its JSON Schema is
``docs/index.schema.json``.

Per asset the index carries the asset's record (``kiln.package.records.AssetRecord``: the
matrix entry's ``Requirements`` plus file name, size, sha256, unpacked size, toolchain and the
verification that ran), its download URL, the Linux distribution the entry was made for and
whether that build is the general one (``scope``), the floors measured from its binaries, and
the same facts written as ``namespace :: feature :: value`` properties (PEP 825's form) for
readers that do not know kiln's field names.

The signature's trusted comment names the index itself::

    <project> <kind>-index version <N> expires <YYYY-MM-DDTHH:MM:SSZ>

so an installer reads version and expiry from signed text before it parses the JSON, and the
JSON must say the same. ``TrustStore`` keeps, per public key, index kind and mirror, the highest
version an installer has accepted: a lower one is a rollback and is refused, as is an index
past its expiry (a freeze).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kiln.errors import IntegrityError, ReleaseError
from kiln.files import atomic_write_text, file_lock
from kiln.matrix import Matrix
from kiln.matrix.catalogue import UNKNOWN_TIER, tiers
from kiln.package.records import AssetRecord
from kiln.release.manifest import (
    COMMIT_RE,
    DATE_RE,
    INDEX_NAME,
    INDEX_SIGNATURE_NAME,
    MANIFEST_NAME,
    PROJECT_RE,
    TAG_RE,
    ReleaseManifest,
    is_safe_name,
)

__all__ = [
    "INDEX_KINDS",
    "INDEX_MAX_BYTES",
    "INDEX_NAME",
    "INDEX_SCHEMA",
    "INDEX_SIGNATURE_NAME",
    "IndexAsset",
    "IndexEntry",
    "IndexRelease",
    "ReleaseIndex",
    "TrustStore",
    "asset_properties",
    "check_fresh",
    "check_project_of",
    "general_distros",
    "index_comment",
    "matrix_index",
    "mirror_index",
    "origin_id",
    "parse_index",
    "parse_index_comment",
    "release_index",
]

INDEX_SCHEMA = "kiln-index/1"
INDEX_KINDS = ("release", "mirror")
# The mirror root's index lists every release with every asset: generous, but capped.
INDEX_MAX_BYTES = 16 << 20

_COMMENT_RE = re.compile(
    r"(?P<project>[A-Za-z0-9][A-Za-z0-9._-]*) (?P<kind>release|mirror)-index "
    r"version (?P<version>[0-9]{1,12}) expires (?P<expires>[0-9]{4}-[0-9]{2}-[0-9]{2}T"
    r"[0-9]{2}:[0-9]{2}:[0-9]{2}Z)")
_TIERS = tiers()
_FLOOR_KEYS = ("glibc", "glibcxx", "macos", "windows", "x86_64_level", "android_api")
_DISTRO_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")
_ID_RE = re.compile(r"[a-z0-9][a-z0-9.-]{0,63}")
# Where an asset is downloaded from (informational: installers fetch <release dir>/<file>).
_URL_RE = re.compile(r"(?:https?://|file:)[^\s\x00-\x1f\x7f]{1,2000}|[A-Za-z0-9][A-Za-z0-9._+-]*")
_PROP_RE = re.compile(r"[a-z0-9_.-]+ :: [a-z0-9_.-]+ :: [A-Za-z0-9_.+@-]+")


@dataclass(frozen=True, kw_only=True)
class IndexAsset:
    """One downloadable asset of a release, as an installer sees it."""

    record: AssetRecord
    url: str
    distro: str | None  # the Linux distribution family the entry was made for
    scope: str  # "general": any system of its OS; "distribution": that distribution only
    floors: Mapping[str, str | int | None]  # measured from the binaries (docs/floors.md)

    def properties(self) -> list[str]:
        return asset_properties(self.record, distro=self.distro, scope=self.scope,
                                floors=self.floors)

    def to_json(self) -> dict[str, Any]:
        r = self.record
        return {
            "id": r.entry_id, "file": r.name, "kind": r.kind, "url": self.url,
            "size": r.size, "sha256": r.sha256, "unpacked_size": r.unpacked_size,
            "backend": r.backend, "backend_version": r.backend_version,
            "distro": self.distro, "scope": self.scope,
            "verification": r.verification.method,
            "floors": {k: self.floors.get(k) for k in _FLOOR_KEYS},
            "properties": self.properties(),
            "record": r.to_json(),
        }


@dataclass(frozen=True, kw_only=True)
class IndexEntry:
    """A build of the matrix that is not in the release: disabled (with its tracking link) or
    missing (with the reason)."""

    entry_id: str
    reason: str
    tracking: str | None = None


@dataclass(frozen=True, kw_only=True)
class IndexRelease:
    tag: str
    date: str
    commit: str
    assets: tuple[IndexAsset, ...]
    disabled: tuple[IndexEntry, ...]
    missing: tuple[IndexEntry, ...]

    @property
    def build_number(self) -> int:
        return int(self.tag[1:])

    def to_json(self) -> dict[str, Any]:
        return {
            "tag": self.tag, "date": self.date, "commit": self.commit,
            "assets": [a.to_json() for a in self.assets],
            "disabled": [{"id": d.entry_id, "reason": d.reason, "tracking": d.tracking}
                         for d in self.disabled],
            "missing": [{"id": m.entry_id, "reason": m.reason} for m in self.missing],
        }


@dataclass(frozen=True, kw_only=True)
class ReleaseIndex:
    """``index.json``: releases newest first, with a version and an expiry date."""

    project: str
    kind: str  # "release" | "mirror"
    version: int
    expires: str
    releases: tuple[IndexRelease, ...]

    def to_json(self) -> dict[str, Any]:
        return {"schema": INDEX_SCHEMA, "project": self.project, "kind": self.kind,
                "version": self.version, "expires": self.expires,
                "releases": [r.to_json() for r in self.releases]}

    def text(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    def comment(self) -> str:
        return index_comment(self)

    def release(self, tag: str) -> IndexRelease | None:
        return next((r for r in self.releases if r.tag == tag), None)

    @property
    def latest(self) -> IndexRelease | None:
        return self.releases[0] if self.releases else None


def index_comment(index: ReleaseIndex) -> str:
    """The trusted comment that signs ``index``'s identity, version and expiry."""
    return (f"{index.project} {index.kind}-index version {index.version} "
            f"expires {index.expires}")


def parse_index_comment(comment: str) -> tuple[str, str, int, str]:
    """``(project, kind, version, expires)`` of a signed index comment."""
    m = _COMMENT_RE.fullmatch(comment)
    if m is None:
        raise IntegrityError(f"the signature's trusted comment {comment[:120]!r} does not name "
                             "an index ('<project> <kind>-index version N expires DATE')",
                             hint="the signature belongs to another file: do not use this "
                                  "index")
    return m["project"], m["kind"], int(m["version"]), m["expires"]


def asset_properties(record: AssetRecord, *, distro: str | None, scope: str,
                     floors: Mapping[str, str | int | None]) -> list[str]:
    """The selection facts of an asset as ``namespace :: feature :: value`` strings."""
    props = [f"os :: name :: {record.os}", f"cpu :: arch :: {record.arch}",
             f"cpu :: baseline :: {record.cpu_baseline}"]
    props += [f"cpu :: dispatch :: {f}" for f in record.cpu_dispatch]
    if record.libc != "none":
        props.append(f"libc :: {record.libc} :: {record.libc_floor or 'any'}")
    if record.min_os:
        props.append(f"os :: min_version :: {record.min_os}")
    if distro:
        props.append(f"linux :: distro :: {distro}")
    props.append(f"{'linux' if record.os == 'linux' else 'os'} :: scope :: {scope}")
    backend = record.backend + (f"@{record.backend_version}" if record.backend_version else "")
    props.append(f"backend :: name :: {backend}")
    # the installers' speed order of backends (kiln.matrix.catalogue: 0 is fastest)
    props.append(f"backend :: tier :: {_TIERS.get(record.backend, UNKNOWN_TIER)}")
    if record.min_driver:
        props.append(f"gpu :: driver_floor :: {record.min_driver}")
    props += [f"gpu :: target :: {t}" for t in record.gpu_targets]
    for key in _FLOOR_KEYS:
        value = floors.get(key)
        if value is not None:
            props.append(f"floor :: {key} :: {value}")
    props.append(f"verify :: method :: {record.verification.method}")
    return [p for p in props if _PROP_RE.fullmatch(p)]


def general_distros(entries: Iterable[tuple[str, str | None, str | None]]) -> frozenset[str]:
    """The distributions whose Linux builds are meant for any system of the C library: those
    with the lowest glibc floor among ``(os, distro, libc_floor)`` of the matrix (Ubuntu's
    2.17 builds run on every glibc distribution; openEuler's are made for openEuler)."""
    floors: dict[str, tuple[int, ...]] = {}
    for os_name, distro, floor in entries:
        if os_name != "linux" or distro is None:
            continue
        value = tuple(int(x) for x in re.findall(r"[0-9]+", floor or "0"))
        floors[distro] = min(floors.get(distro, value), value)
    if not floors:
        return frozenset()
    lowest = min(floors.values())
    return frozenset(d for d, f in floors.items() if f == lowest)


def _expiry(start: datetime, days: int) -> str:
    return (start + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_date(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _release_entry(manifest: ReleaseManifest, *, distros: Mapping[str, str | None],
                   general: frozenset[str],
                   floors: Mapping[str, Mapping[str, str | int | None]]) -> IndexRelease:
    assets = []
    for a in manifest.assets:
        r = a.record
        distro = distros.get(r.entry_id)
        scope = "any" if r.os != "linux" else (
            "general" if distro is None or distro in general else "distribution")
        measured = floors.get(r.name, {})
        assets.append(IndexAsset(record=r, url=a.url, distro=distro, scope=scope,
                                 floors={k: measured.get(k) for k in _FLOOR_KEYS}))
    return IndexRelease(
        tag=manifest.tag, date=manifest.date, commit=manifest.commit, assets=tuple(assets),
        disabled=tuple(IndexEntry(entry_id=d.entry_id, reason=d.reason, tracking=d.tracking)
                       for d in manifest.disabled),
        missing=tuple(IndexEntry(entry_id=m.entry_id, reason=m.reason)
                      for m in manifest.missing))


def release_index(manifest: ReleaseManifest, *, distros: Mapping[str, str | None],
                  general: frozenset[str],
                  floors: Mapping[str, Mapping[str, str | int | None]],
                  expiry_days: int) -> ReleaseIndex:
    """The index of one release directory: version = the build number, expiry =
    ``expiry_days`` after the release date (the commit's time), so the file is reproducible.
    ``distros`` maps entry ids to their distribution, ``floors`` asset names to the floors
    measured from their binaries."""
    entry = _release_entry(manifest, distros=distros, general=general, floors=floors)
    index = ReleaseIndex(project=manifest.project, kind="release",
                         version=manifest.build_number,
                         expires=_expiry(_parse_date(manifest.date), expiry_days),
                         releases=(entry,))
    return index


def matrix_index(manifest: ReleaseManifest, matrix: Matrix, *,
                 floors: Mapping[str, Mapping[str, str | int | None]] | None = None,
                 expiry_days: int = 365) -> ReleaseIndex:
    """``release_index`` with the distributions and general builds read from ``matrix``."""
    return release_index(
        manifest, distros={e.id: e.distro for e in matrix.entries},
        general=general_distros((e.os, e.distro, e.libc_floor) for e in matrix.entries),
        floors=floors or {}, expiry_days=expiry_days)


def mirror_index(previous: ReleaseIndex | None, added: ReleaseIndex, *, now: datetime,
                 expiry_days: int) -> ReleaseIndex:
    """The mirror root's index after publishing the release index ``added``: its release
    replaces one of the same tag, releases newest first, version one above the previous
    index's, expiry ``expiry_days`` from ``now``."""
    if added.kind != "release":
        raise ReleaseError(f"a {added.kind} index cannot be added to a mirror's index",
                           hint="publish a release directory made by `kiln release`")
    if previous is not None and previous.project != added.project:
        raise ReleaseError(f"the mirror's index is of project {previous.project!r}, not "
                           f"{added.project!r}", hint="publish each project to its own mirror")
    releases = {r.tag: r for r in (previous.releases if previous else ())}
    for r in added.releases:
        releases[r.tag] = r
    ordered = sorted(releases.values(), key=lambda r: r.build_number, reverse=True)
    return ReleaseIndex(project=added.project, kind="mirror",
                        version=(previous.version + 1) if previous else 1,
                        expires=_expiry(now, expiry_days), releases=tuple(ordered))


# --------------------------------------------------------------------------- parsing


def _bad(source: str, where: str, why: str) -> IntegrityError:
    return IntegrityError(f"{source}: {where}: {why}",
                          hint="the index is damaged or hostile: do not install from it")


def _str(data: Mapping[str, Any], key: str, source: str, where: str, *,
         pattern: re.Pattern[str] | None = None, optional: bool = False) -> str | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or (pattern is not None and not pattern.fullmatch(value)):
        raise _bad(source, f"{where}.{key}", f"{str(value)[:80]!r} is not valid")
    return value


def _date_ok(text: str, source: str, where: str) -> None:
    try:
        _parse_date(text)
    except ValueError as exc:
        raise _bad(source, where, f"{text!r} is not a date") from exc


def _int(data: Mapping[str, Any], key: str, source: str, where: str) -> int:
    value = data.get(key)
    if (not isinstance(value, int) or isinstance(value, bool) or value < 0
            or value >= 10 ** 12):
        raise _bad(source, f"{where}.{key}", f"{str(value)[:40]!r} is not a non-negative integer")
    return value


def _keys(data: object, want: Sequence[str], source: str, where: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise _bad(source, where, "not a JSON object")
    if set(data) != set(want):
        raise _bad(source, where, f"fields {sorted(data)} are not {sorted(want)}")
    return data


def _asset(data: object, source: str, where: str) -> IndexAsset:
    d = _keys(data, ("id", "file", "kind", "url", "size", "sha256", "unpacked_size",
                     "backend", "backend_version", "distro", "scope", "verification",
                     "floors", "properties", "record"), source, where)
    try:
        record = AssetRecord.from_json(d["record"], source=f"{source}: {where}.record")
    except ReleaseError as exc:
        raise _bad(source, f"{where}.record", exc.message) from exc
    if not is_safe_name(record.name):
        raise _bad(source, f"{where}.record.name", f"{record.name[:80]!r} is not a plain "
                   "file name")
    # The flat fields are for readers of the JSON; they must say what the record says.
    flat = {"id": record.entry_id, "file": record.name, "kind": record.kind,
            "size": record.size, "sha256": record.sha256,
            "unpacked_size": record.unpacked_size, "backend": record.backend,
            "backend_version": record.backend_version,
            "verification": record.verification.method}
    for key, value in flat.items():
        if d[key] != value:
            raise _bad(source, f"{where}.{key}", f"{str(d[key])[:80]!r} differs from the "
                       f"record's {str(value)[:80]!r}")
    url = _str(d, "url", source, where, pattern=_URL_RE)
    assert url is not None
    if not _ID_RE.fullmatch(record.entry_id):
        raise _bad(source, f"{where}.id", f"{record.entry_id[:80]!r} is not a build id")
    if record.kind not in ("archive", "wheel"):
        raise _bad(source, f"{where}.kind", f"{record.kind[:40]!r} is not archive or wheel")
    distro = _str(d, "distro", source, where, pattern=_DISTRO_RE, optional=True)
    scope = _str(d, "scope", source, where)
    allowed = ("general", "distribution") if record.os == "linux" else ("any",)
    if scope is None or scope not in allowed:
        raise _bad(source, f"{where}.scope", f"{scope!r} is not one of {', '.join(allowed)} "
                   f"(a {record.os} build)")
    floors_raw = _keys(d["floors"], _FLOOR_KEYS, source, f"{where}.floors")
    floors: dict[str, str | int | None] = {}
    for key in _FLOOR_KEYS:
        value = floors_raw[key]
        ok = value is None or (isinstance(value, int) and not isinstance(value, bool)
                               and 0 <= value < 10 ** 6) or (
            isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9.]{1,16}", value))
        if not ok:
            raise _bad(source, f"{where}.floors.{key}", f"{str(value)[:40]!r} is not a floor")
        floors[key] = value
    asset = IndexAsset(record=record, url=url, distro=distro, scope=scope, floors=floors)
    if d["properties"] != asset.properties():
        raise _bad(source, f"{where}.properties", "do not match the asset's record")
    return asset


def _entries(data: object, source: str, where: str, *, tracking: bool) -> tuple[IndexEntry, ...]:
    if not isinstance(data, list):
        raise _bad(source, where, "not a list")
    out = []
    keys = ("id", "reason", "tracking") if tracking else ("id", "reason")
    for i, item in enumerate(data):
        d = _keys(item, keys, source, f"{where}[{i}]")
        entry_id = _str(d, "id", source, f"{where}[{i}]", pattern=_ID_RE)
        reason = _str(d, "reason", source, f"{where}[{i}]")
        link = _str(d, "tracking", source, f"{where}[{i}]",
                    pattern=re.compile(r"https://[^\s]+"), optional=True) if tracking else None
        assert entry_id is not None and reason is not None
        out.append(IndexEntry(entry_id=entry_id, reason=reason, tracking=link))
    return tuple(out)


def _release(data: object, source: str, where: str) -> IndexRelease:
    d = _keys(data, ("tag", "date", "commit", "assets", "disabled", "missing"), source, where)
    tag = _str(d, "tag", source, where, pattern=TAG_RE)
    date = _str(d, "date", source, where, pattern=DATE_RE)
    commit = _str(d, "commit", source, where, pattern=COMMIT_RE)
    assert tag is not None and date is not None and commit is not None
    _date_ok(date, source, f"{where}.date")
    if not isinstance(d["assets"], list):
        raise _bad(source, f"{where}.assets", "not a list")
    assets = tuple(_asset(a, source, f"{where}.assets[{i}]") for i, a in enumerate(d["assets"]))
    names: set[str] = set()
    for i, a in enumerate(assets):
        if a.record.name in names:
            raise _bad(source, f"{where}.assets[{i}].file", f"{a.record.name!r} is listed twice")
        names.add(a.record.name)
        if a.record.build_number != int(tag[1:]) or a.record.commit != commit:
            raise _bad(source, f"{where}.assets[{i}]", f"{a.record.name!r} was built for "
                       f"b{a.record.build_number} at {a.record.commit[:12]}, not for this "
                       f"release ({tag} at {commit[:12]})")
    return IndexRelease(tag=tag, date=date, commit=commit, assets=assets,
                        disabled=_entries(d["disabled"], source, f"{where}.disabled",
                                          tracking=True),
                        missing=_entries(d["missing"], source, f"{where}.missing",
                                         tracking=False))


def parse_index(raw: bytes, *, source: str) -> ReleaseIndex:
    """Parse ``index.json`` strictly (``IntegrityError``, exit 12, naming the field): every
    field present and of its type, names that cannot become paths, flat fields equal to the
    record they summarise, releases newest first and each tag once."""
    if len(raw) > INDEX_MAX_BYTES:
        raise _bad(source, "the file", f"larger than {INDEX_MAX_BYTES} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise _bad(source, "the file", f"not JSON ({exc})") from exc
    d = _keys(data, ("schema", "project", "kind", "version", "expires", "releases"), source,
              "the index")
    if d["schema"] != INDEX_SCHEMA:
        raise _bad(source, "schema", f"{str(d['schema'])[:40]!r} is not {INDEX_SCHEMA!r}")
    project = _str(d, "project", source, "the index", pattern=PROJECT_RE)
    kind = _str(d, "kind", source, "the index")
    if kind not in INDEX_KINDS:
        raise _bad(source, "kind", f"{kind!r} is not one of {', '.join(INDEX_KINDS)}")
    expires = _str(d, "expires", source, "the index", pattern=DATE_RE)
    assert project is not None and kind is not None and expires is not None
    _date_ok(expires, source, "expires")
    version = _int(d, "version", source, "the index")
    if not isinstance(d["releases"], list):
        raise _bad(source, "releases", "not a list")
    releases = tuple(_release(r, source, f"releases[{i}]") for i, r in enumerate(d["releases"]))
    numbers = [r.build_number for r in releases]
    if numbers != sorted(set(numbers), reverse=True):
        raise _bad(source, "releases", "not newest first, or a tag is listed twice")
    if kind == "release" and len(releases) != 1:
        raise _bad(source, "releases", "a release's index lists exactly that release")
    return ReleaseIndex(project=project, kind=kind, version=version, expires=expires,
                        releases=releases)


def check_project_of(index: ReleaseIndex, project: str, *, source: str, hint: str) -> None:
    """The index is of ``project``, the project its release's manifest names: installers
    take the project's name from the index (``~/.<project>``), so the two must agree."""
    if index.project != project:
        raise IntegrityError(f"{source} is an index of project {index.project!r}, but "
                             f"{MANIFEST_NAME} is of project {project!r}", hint=hint)


def check_fresh(index: ReleaseIndex, comment: str, *, now: datetime, source: str,
                check_expiry: bool = True) -> None:
    """The signed comment must name this index (project, kind, version, expiry), and the
    index must not be past its expiry (unless ``check_expiry`` is false: a release's index
    that a fresh mirror index vouches for)."""
    project, kind, version, expires = parse_index_comment(comment)
    if (project, kind, version, expires) != (index.project, index.kind, index.version,
                                             index.expires):
        raise IntegrityError(
            f"{source}: the signed comment says {project} {kind}-index version {version} "
            f"expires {expires}, the file says {index.project} {index.kind}-index version "
            f"{index.version} expires {index.expires}",
            hint="the index was changed after signing: do not install from it")
    if check_expiry and _parse_date(index.expires) <= now:
        raise IntegrityError(
            f"{source}: the index expired on {index.expires} (a mirror that stopped being "
            "updated, or an old index replayed: a freeze)",
            hint="ask the mirror's owner to publish again (kiln publish re-signs the index); "
                 "do not install from a frozen mirror")


def origin_id(origin: str) -> str:
    """16 hex digits naming where an index was read from (a mirror's URL or directory, without
    a trailing ``/``): install.sh and install.ps1 compute it alike."""
    return hashlib.sha256(origin.rstrip("/").encode("utf-8")).hexdigest()[:16]


class TrustStore:
    """The highest index version accepted so far, per signing key, index kind and origin (a
    mirror's own counter: two mirrors of one project count apart) in ``<cache>/trust.json``,
    so an installer refuses an older index from the same mirror (a rollback)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @staticmethod
    def key_id(pubkey: str) -> str:
        """32 hex digits naming a minisign public key (its base64 line: the same from a
        ``minisign.pub`` file's text or the line alone; install.sh computes it alike)."""
        lines = [ln.strip() for ln in pubkey.strip().splitlines() if ln.strip()]
        key = lines[-1] if lines else ""
        return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]

    @classmethod
    def slot(cls, pubkey: str, kind: str, origin: str) -> str:
        return f"{cls.key_id(pubkey)}:{kind}:{origin_id(origin)}"

    def _load(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise IntegrityError(f"{self.path}: the record of trusted index versions cannot be "
                                 f"read ({exc})",
                                 hint="it is written by the installer; remove it only if you "
                                      "trust every mirror you install from") from exc
        if not isinstance(data, dict) or not all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
                for k, v in data.items()):
            raise IntegrityError(f"{self.path}: not a record of trusted index versions",
                                 hint="remove it only if you trust every mirror you install "
                                      "from")
        return data

    def seen(self, pubkey: str, kind: str, origin: str) -> int | None:
        return self._load().get(self.slot(pubkey, kind, origin))

    def check(self, index: ReleaseIndex, pubkey: str, *, origin: str, source: str) -> None:
        last = self.seen(pubkey, index.kind, origin)
        if last is not None and index.version < last:
            raise IntegrityError(
                f"{source}: {index.kind} index version {index.version} is older than version "
                f"{last}, which this machine has already seen from this key (a rollback: an "
                "old index served as current)",
                hint="do not install from this mirror; if the mirror was rebuilt on purpose, "
                     f"remove {self.path}")

    def remember(self, index: ReleaseIndex, pubkey: str, *, origin: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(self.path.with_name(self.path.name + ".lock")):
            data = self._load()
            key = self.slot(pubkey, index.kind, origin)
            if data.get(key, -1) < index.version:
                data[key] = index.version
                atomic_write_text(self.path, json.dumps(data, indent=2, sort_keys=True) + "\n")
