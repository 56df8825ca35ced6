"""A release as data: ``manifest.json`` (``ReleaseManifest``), the names and caps of a release
directory's files, ``SHA256SUMS`` (strict: a name listed twice, a path, a control character
are refused), the tag rules, the signed trusted comment, and ``read_release``, which treats a
release directory as untrusted input.

Kept apart from ``kiln.release.assemble`` (which makes releases and renders the install
scripts) so that the installers can read releases without importing what writes them.
"""


from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kiln.errors import ConfigError, IntegrityError, KilnError, ReleaseError
from kiln.files import sha256_file
from kiln.matrix import ID_RE
from kiln.package.records import AssetRecord

__all__ = [
    "ASSET_NAME_RE",
    "COMMIT_RE",
    "DATE_RE",
    "INDEX_NAME",
    "INDEX_SIGNATURE_NAME",
    "INSTALL_SCRIPTS",
    "MANIFEST_MAX_BYTES",
    "MANIFEST_NAME",
    "NOTES_NAME",
    "PROJECT_RE",
    "PUBLIC_KEY_NAME",
    "RELEASE_FILES",
    "RELEASE_SCHEMA",
    "SBOM_NAME",
    "SIGNATURE_MAX_BYTES",
    "SIGNATURE_NAME",
    "SUMS_LINE_RE",
    "SUMS_MAX_BYTES",
    "SUMS_NAME",
    "TAG_RE",
    "DisabledBuild",
    "MissingBuild",
    "ReleaseAsset",
    "ReleaseManifest",
    "check_comment",
    "embedded_tag",
    "format_sums",
    "is_release_dir",
    "is_safe_name",
    "iso_date",
    "parse_sums",
    "parse_tag",
    "read_release",
    "release_comment",
    "signed_comment",
    "unsafe_sums_name",
    "verify_sums",
]

RELEASE_SCHEMA = 1


MANIFEST_NAME = "manifest.json"


SUMS_NAME = "SHA256SUMS"


SIGNATURE_NAME = "SHA256SUMS.minisig"


PUBLIC_KEY_NAME = "minisign.pub"


SBOM_NAME = "sbom.cdx.json"


# The release's in-toto provenance statement (``kiln.release.provenance``), its minisign
# signature, and the cap on what is read of it. Listed in SHA256SUMS, not in RELEASE_FILES:
# releases made before provenance existed still read.
PROVENANCE_NAME = "provenance.intoto.json"


PROVENANCE_SIGNATURE_NAME = "provenance.intoto.json.minisig"


PROVENANCE_MAX_BYTES = 4 << 20


# The release index (kiln.release.index) and its signature.
INDEX_NAME = "index.json"


INDEX_SIGNATURE_NAME = "index.json.minisig"


NOTES_NAME = "RELEASE_NOTES.md"


# Files of a release directory besides the assets themselves.
INSTALL_SCRIPTS = ("install.sh", "install.ps1")


RELEASE_FILES = (MANIFEST_NAME, SUMS_NAME, SIGNATURE_NAME, PUBLIC_KEY_NAME, SBOM_NAME,
                 NOTES_NAME, INDEX_NAME, INDEX_SIGNATURE_NAME, *INSTALL_SCRIPTS)


# Every pattern here is used with fullmatch: ``re.match(...$)`` would also accept the value
# followed by a newline, since ``$`` matches before a trailing newline.
TAG_RE = re.compile(r"b([0-9]{1,9})")


# An asset name may not leave the release directory or hide in it.
ASSET_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


PROJECT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


COMMIT_RE = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")  # SHA-1 or SHA-256 object names


DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


# One line of SHA256SUMS: the digest, then " " (text mode) or " *" (binary mode), the name.
SUMS_LINE_RE = re.compile(r"([0-9a-f]{64}) [ *](.*)", re.DOTALL)


# Caps on what is read of a release's small files before parsing them.
SUMS_MAX_BYTES = 1 << 20


SIGNATURE_MAX_BYTES = 4 << 10


MANIFEST_MAX_BYTES = 4 << 20


# The tag that an asset's name carries: archives are <project>-b<N>-..., wheels
# <project>-0.0.<N>[+variant]-... (kiln.package.wheel.wheel_version).
_ARCHIVE_TAG_RE = re.compile(r"[^-]+-(b[0-9]{1,9})-.+")


_WHEEL_TAG_RE = re.compile(r"[^-]+-0\.0\.([0-9]{1,9})(?:\+[^-]+)?-.+\.whl")


def parse_tag(tag: str) -> int:
    """The build number N of tag ``b<N>`` (1 to 9 digits)."""
    m = TAG_RE.fullmatch(tag)
    if m is None:
        raise ConfigError(f"tag {tag!r} is not of the form b<N> (b and 1 to 9 digits)",
                          hint="pass --tag b<number>, e.g. --tag b4242, or leave it out to use "
                               "`git rev-list --count HEAD`")
    return int(m.group(1))


def is_safe_name(name: str) -> bool:
    """Whether ``name`` may be a file of a release: a plain file name that cannot leave the
    release directory (or a mirror's tag directory) nor hide in it."""
    return ASSET_NAME_RE.fullmatch(name) is not None and ".." not in name


def embedded_tag(name: str, kind: str) -> str | None:
    """The tag that an asset's file name carries (``b<N>``), or ``None`` when it names none."""
    if kind == "wheel":
        m = _WHEEL_TAG_RE.fullmatch(name)
        return None if m is None else f"b{int(m.group(1))}"
    m = _ARCHIVE_TAG_RE.fullmatch(name)
    return None if m is None else m.group(1)


def signed_comment(signature: Path) -> str:
    """The trusted comment of a minisign signature file (not verified here: ``minisign -V``
    checks that the comment is signed)."""
    data = _read_capped(signature, SIGNATURE_MAX_BYTES, error=IntegrityError)
    found = [line[len("trusted comment: "):] for line in data.split("\n")
             if line.startswith("trusted comment: ")]
    if len(found) != 1:
        raise IntegrityError(f"{signature}: expected one 'trusted comment:' line, found "
                             f"{len(found)}", hint="make the release again with `kiln release`")
    return found[0]


def release_comment(manifest: ReleaseManifest) -> str:
    """The trusted comment that signs a release's identity: project, tag, commit and date."""
    return (f"{manifest.project} {manifest.tag} commit {manifest.commit} "
            f"date {manifest.date}")


def check_comment(comment: str, manifest: ReleaseManifest, *, source: str) -> None:
    """The signed comment must name the manifest's project, tag and commit (and its date,
    when it carries one: releases signed before the date was added do not)."""
    tokens = comment.split(" ")
    want = release_comment(manifest).split(" ")
    if tokens[:4] != want[:4] or tokens[4:] not in ([], want[4:]):
        raise ReleaseError(
            f"{source}: the signed trusted comment {comment!r} does not name this release "
            f"(manifest.json says project {manifest.project!r}, tag {manifest.tag!r}, commit "
            f"{manifest.commit!r}, date {manifest.date!r})",
            hint="the manifest and the signature belong to different releases; make the "
                 "release again with `kiln release`")


def _read_capped(path: Path, cap: int, *, error: type[KilnError]) -> str:
    """``path``'s text (UTF-8), refusing a file larger than ``cap`` bytes."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(cap + 1)
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror}") from exc
    if len(raw) > cap:
        raise error(f"{path}: larger than the {cap} bytes such a file may have",
                    hint="a release directory holds only what `kiln release` wrote")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


@dataclass(frozen=True, kw_only=True)
class MissingBuild:
    """An enabled entry with no verified archive in the release."""

    entry_id: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class DisabledBuild:
    entry_id: str
    platform: str
    backend: str
    reason: str
    tracking: str


@dataclass(frozen=True, kw_only=True)
class ReleaseAsset:
    record: AssetRecord
    url: str

    def to_json(self) -> dict[str, Any]:
        out = self.record.to_json()
        out["url"] = self.url
        return out


@dataclass(frozen=True, kw_only=True)
class ReleaseManifest:
    """``manifest.json``: what the release holds and what it does not."""

    project: str
    tag: str
    build_number: int
    commit: str
    date: str  # the commit's time, ISO 8601 UTC
    base_url: str
    assets: tuple[ReleaseAsset, ...]
    missing: tuple[MissingBuild, ...]
    disabled: tuple[DisabledBuild, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": RELEASE_SCHEMA,
            "project": self.project,
            "tag": self.tag,
            "build_number": self.build_number,
            "commit": self.commit,
            "date": self.date,
            "base_url": self.base_url,
            "assets": [a.to_json() for a in self.assets],
            "missing": [{"entry_id": m.entry_id, "reason": m.reason} for m in self.missing],
            "disabled": [{"entry_id": d.entry_id, "platform": d.platform,
                          "backend": d.backend, "reason": d.reason, "tracking": d.tracking}
                         for d in self.disabled],
        }

    def text(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, data: object, *, source: str) -> ReleaseManifest:
        if not isinstance(data, Mapping):
            raise ReleaseError(f"{source}: expected a JSON object")
        if data.get("schema") != RELEASE_SCHEMA:
            raise ReleaseError(f"{source}: release manifest schema {data.get('schema')!r} is "
                               f"not {RELEASE_SCHEMA}",
                               hint="use the kiln version that made the release")
        try:
            assets = []
            for item in data["assets"]:
                rec = {k: v for k, v in item.items() if k != "url"}
                assets.append(ReleaseAsset(record=AssetRecord.from_json(rec, source=source),
                                           url=str(item["url"])))
            manifest = cls(
                project=str(data["project"]), tag=str(data["tag"]),
                build_number=int(data["build_number"]), commit=str(data["commit"]),
                date=str(data["date"]), base_url=str(data["base_url"]), assets=tuple(assets),
                missing=tuple(MissingBuild(entry_id=str(m["entry_id"]),
                                           reason=str(m["reason"])) for m in data["missing"]),
                disabled=tuple(DisabledBuild(entry_id=str(d["entry_id"]),
                                             platform=str(d["platform"]),
                                             backend=str(d["backend"]),
                                             reason=str(d["reason"]),
                                             tracking=str(d["tracking"]))
                               for d in data["disabled"]),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ReleaseError(f"{source}: malformed release manifest ({exc!r})") from exc
        manifest.check(source=source)
        return manifest

    def check(self, *, source: str) -> None:
        """Refuse values that could lead a publisher or installer astray: the tag and the
        asset names become paths and URLs, project, tag, commit and date are tokens of the
        signed trusted comment."""
        def bad(field: str, value: object, why: str) -> ReleaseError:
            return ReleaseError(f"{source}: field '{field}' is {value!r}: {why}",
                                hint="a release manifest is written by `kiln release`; make "
                                     "the release again")

        tag = TAG_RE.fullmatch(self.tag)
        if tag is None:
            raise bad("tag", self.tag, "not a tag b<N> (b and 1 to 9 digits)")
        if int(tag.group(1)) != self.build_number:
            raise bad("build_number", self.build_number, f"the tag is {self.tag}")
        if not PROJECT_RE.fullmatch(self.project):
            raise bad("project", self.project, "not a plain project name")
        if not COMMIT_RE.fullmatch(self.commit):
            raise bad("commit", self.commit, "not a full lower-case hex commit id")
        if not DATE_RE.fullmatch(self.date):
            raise bad("date", self.date, "not a UTC date YYYY-MM-DDTHH:MM:SSZ")
        seen: set[str] = set()
        for i, a in enumerate(self.assets):
            r = a.record
            where = f"assets[{i}]"
            if not is_safe_name(r.name):
                raise bad(f"{where}.name", r.name, "not a plain file name "
                          "([A-Za-z0-9][A-Za-z0-9._+-]*, no '..')")
            if r.name in RELEASE_FILES:
                raise bad(f"{where}.name", r.name, "reserved for the release's own files")
            if r.name in seen:
                raise bad(f"{where}.name", r.name, "listed twice")
            seen.add(r.name)
            if embedded_tag(r.name, r.kind) != self.tag:
                raise bad(f"{where}.name", r.name, f"does not carry the release's tag {self.tag}")
            if r.build_number != self.build_number:
                raise bad(f"{where}.build_number", r.build_number, f"the tag is {self.tag}")
            if not ID_RE.fullmatch(r.entry_id):
                raise bad(f"{where}.entry_id", r.entry_id, "not a matrix entry id")


def iso_date(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_sums(digests: Mapping[str, str]) -> str:
    """``sha256sum`` format (two spaces: text mode, which GNU and BSD tools both read),
    sorted by file name."""
    return "".join(f"{digests[name]}  {name}\n" for name in sorted(digests))


def parse_sums(text: str, *, source: str) -> dict[str, str]:
    """Parse ``SHA256SUMS``: each line ``<64 lower-case hex>  <name>`` or ``<hex> *<name>``.

    Refused (``IntegrityError``, naming the line): an empty file, any other line, a name listed
    twice (even with the same digest: a second line could only confuse a reader), and a name
    that is not one plain file of the directory: with ``/``, ``\\``, a NUL or another control
    character, ``.``, ``..`` or a leading ``.``. The installers apply the same rules.
    """
    if not text:
        raise IntegrityError(f"{source}: empty", hint="a release lists its files here")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    out: dict[str, str] = {}
    for n, line in enumerate(lines, start=1):
        m = SUMS_LINE_RE.fullmatch(line)
        if m is None:
            raise IntegrityError(f"{source}:{n}: not a sha256sum line: {line[:80]!r}")
        digest, name = m.group(1), m.group(2)
        why = unsafe_sums_name(name)
        if why is not None:
            raise IntegrityError(f"{source}:{n}: file name {name[:80]!r} {why}",
                                 hint="SHA256SUMS lists the plain files of one directory")
        if name in out:
            raise IntegrityError(f"{source}:{n}: {name!r} is listed twice",
                                 hint="each file is listed once")
        out[name] = digest
    return out


def unsafe_sums_name(name: str) -> str | None:
    """Why ``name`` may not be listed in ``SHA256SUMS``, or ``None`` when it may."""
    if name in ("", ".", ".."):
        return "is not a file name"
    if name.startswith("."):
        return "starts with '.'"
    for ch in name:
        if ch in "/\\":
            return f"contains {ch!r}"
        if ch == "\0":
            return "contains a NUL"
        if ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0:
            return f"contains the control character {ch!r}"
    return None


def verify_sums(directory: Path) -> dict[str, str]:
    """Check every file listed in ``SHA256SUMS``; return the listed digests."""
    sums_path = directory / SUMS_NAME
    if not sums_path.is_file():
        raise IntegrityError(f"{directory}: no {SUMS_NAME}",
                             hint="point at a directory made by `kiln release`")
    listed = parse_sums(_read_capped(sums_path, SUMS_MAX_BYTES, error=IntegrityError),
                        source=str(sums_path))
    for name, digest in listed.items():
        path = directory / name
        if not path.is_file():
            raise IntegrityError(f"{directory}: {name} is listed in {SUMS_NAME} but missing")
        if sha256_file(path) != digest:
            raise IntegrityError(f"{path}: sha256 differs from {SUMS_NAME}",
                                 hint="the file changed after the release was made; "
                                      "make the release again")
    return listed


def is_release_dir(path: Path) -> bool:
    return (path / MANIFEST_NAME).is_file() and (path / SUMS_NAME).is_file()


def read_release(directory: Path) -> tuple[ReleaseManifest, dict[str, str]]:
    """Load a release directory made by ``assemble`` and check its checksums. Returns the
    manifest and the files to publish (name -> sha256), ``SHA256SUMS`` and its signature
    included.

    Everything a publisher turns into a path or a URL is checked here first: the tag, every
    file name (``is_safe_name``), the tag each asset name carries, and that the manifest's tag
    is the one the signature's trusted comment names (the comment is signed; the signature
    itself is checked by ``kiln.publish.load_release``)."""
    if not is_release_dir(directory):
        raise ReleaseError(f"{directory} is not a release directory (no {MANIFEST_NAME} and "
                           f"{SUMS_NAME})", hint="make one with `kiln release --out DIR`")
    listed = verify_sums(directory)
    for name in listed:
        if not is_safe_name(name):
            raise ReleaseError(f"{directory / SUMS_NAME}: file name {name!r} is not a plain "
                               "file name ([A-Za-z0-9][A-Za-z0-9._+-]*, no '..')",
                               hint="a release directory holds only what `kiln release` wrote")
    path = directory / MANIFEST_NAME
    try:
        data = json.loads(_read_capped(path, MANIFEST_MAX_BYTES, error=ReleaseError))
    except json.JSONDecodeError as exc:
        raise ReleaseError(f"{path}: cannot read: {exc}") from exc
    manifest = ReleaseManifest.from_json(data, source=str(path))
    for name in RELEASE_FILES:
        if not (directory / name).is_file():
            raise ReleaseError(f"{directory}: {name} is missing",
                               hint="make the release again with `kiln release`")
    for a in manifest.assets:
        if listed.get(a.record.name) != a.record.sha256:
            raise IntegrityError(f"{directory}: {a.record.name} in {MANIFEST_NAME} is not "
                                 f"listed in {SUMS_NAME} with the same sha256")
    signature = directory / SIGNATURE_NAME
    check_comment(signed_comment(signature), manifest, source=str(signature))
    files = dict(listed)
    files[SUMS_NAME] = sha256_file(directory / SUMS_NAME)
    files[SIGNATURE_NAME] = sha256_file(signature)
    extra = sorted(p.name for p in directory.iterdir() if p.name not in files)
    if extra:
        raise ReleaseError(f"{directory}: files not in {SUMS_NAME}: {', '.join(extra)}",
                           hint="a release directory holds only what `kiln release` wrote")
    # Publishers copy what the names point at: only regular files, no links out of the
    # directory.
    for name in sorted(files):
        if (directory / name).is_symlink() or not (directory / name).is_file():
            raise ReleaseError(f"{directory / name}: not a regular file",
                               hint="a release directory holds only what `kiln release` wrote")
    return manifest, files
