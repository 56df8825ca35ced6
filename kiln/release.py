"""Turn per-entry build outputs into one release: collect, gate, merge, checksum, sign.

The data flow (DESIGN.md: "per-entry manifests --merge + completeness gate--> release
manifest, SHA256SUMS, signature"):

1. ``scan_artifacts`` finds every ``<asset>.json`` record under a directory (the build
   stage's output, or what CI runners uploaded and the release job downloaded) and checks
   each asset against its record (size and sha256).
2. ``gate`` matches the assets against the matrix: each must belong to an enabled entry, be
   built from this commit with this build number, and have passed verification. Every
   enabled entry without a verified archive is *missing*; unless ``--allow-missing`` names
   it, the release fails and says which entries are missing and why.
3. ``release_manifest`` merges the records into ``manifest.json`` (one record per asset plus
   its download URL, the disabled entries with their tracking links, and the missing ones).
4. ``assemble`` writes the release directory atomically: everything goes into a staging
   directory beside ``--out`` (archives copied and re-hashed, manifest, SBOM, notes, public
   key, ``SHA256SUMS``, its signature), each file fsync'ed, then the directory is renamed
   into place. A failed run leaves the previous ``--out`` as it was.

Nothing here carries a timestamp of its own: the release date is the commit's time, the
signature's trusted comment names project, tag, commit and that date
(``<project> <tag> commit <commit> date <YYYY-MM-DDTHH:MM:SSZ>``), and Ed25519 signatures
are deterministic, so releasing the same commit twice gives byte-identical files.

``read_release`` treats a release directory as untrusted input: the tag, every file name and
the SHA256SUMS lines are checked before any of them becomes a path or a URL, and the
manifest must be the release that the signed comment names.

The project settings (``[tool.kiln]`` in ``pyproject.toml``) are parsed here into
``ProjectConfig`` by ``load_project_config``, called at the CLI edge.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import os
import re
import shutil
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from kiln.errors import CommandFailed, ConfigError, IntegrityError, KilnError, ReleaseError
from kiln.files import atomic_write_text, fsync_dir, sha256_file
from kiln.manifest import AssetRecord, read_record
from kiln.matrix import ID_RE, Entry, Matrix
from kiln.run import run

__all__ = [
    "MANIFEST_NAME",
    "RELEASE_SCHEMA",
    "SBOM_NAME",
    "SIGNATURE_NAME",
    "SUMS_NAME",
    "DisabledBuild",
    "GateResult",
    "LocalAsset",
    "MissingBuild",
    "ProjectConfig",
    "ReleaseAsset",
    "ReleaseManifest",
    "Signer",
    "assemble",
    "check_comment",
    "create_tag",
    "embedded_tag",
    "format_sums",
    "gate",
    "is_safe_name",
    "load_project_config",
    "parse_sums",
    "parse_tag",
    "read_release",
    "release_comment",
    "release_manifest",
    "scan_artifacts",
    "signed_comment",
    "tag_commit",
    "unsafe_sums_name",
    "verify_sums",
]

RELEASE_SCHEMA = 1
MANIFEST_NAME = "manifest.json"
SUMS_NAME = "SHA256SUMS"
SIGNATURE_NAME = "SHA256SUMS.minisig"
PUBLIC_KEY_NAME = "minisign.pub"
SBOM_NAME = "sbom.cdx.json"
NOTES_NAME = "RELEASE_NOTES.md"
# Files of a release directory besides the assets themselves.
INSTALL_SCRIPTS = ("install.sh", "install.ps1")
RELEASE_FILES = (MANIFEST_NAME, SUMS_NAME, SIGNATURE_NAME, PUBLIC_KEY_NAME, SBOM_NAME,
                 NOTES_NAME, *INSTALL_SCRIPTS)

# Every pattern here is used with fullmatch: ``re.match(...$)`` would also accept the value
# followed by a newline, since ``$`` matches before a trailing newline.
TAG_RE = re.compile(r"b([0-9]{1,9})")
GITHUB_REPO_RE = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
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
# <project>-0.0.<N>[+variant]-... (kiln.wheel.wheel_version).
_ARCHIVE_TAG_RE = re.compile(r"[^-]+-(b[0-9]{1,9})-.+")
_WHEEL_TAG_RE = re.compile(r"[^-]+-0\.0\.([0-9]{1,9})(?:\+[^-]+)?-.+\.whl")


# --------------------------------------------------------------------------------------------
# project settings ([tool.kiln] in pyproject.toml)


@dataclass(frozen=True, kw_only=True)
class ProjectConfig:
    """Release settings of the project, from ``[tool.kiln]`` in ``pyproject.toml``."""

    project: str
    github: str  # OWNER/REPO of the project on GitHub
    download_url: str  # where a release's assets live; "{tag}" is replaced
    sources: tuple[str, ...]  # directories whose files the SBOM lists as ember's sources

    @property
    def repo_url(self) -> str:
        return f"https://github.com/{self.github}"

    def base_url(self, tag: str) -> str:
        return self.download_url.replace("{tag}", tag).rstrip("/") + "/"


_CONFIG_KEYS = ("project", "github", "download_url", "sources")


def load_project_config(pyproject: Path) -> ProjectConfig:
    """Parse ``[tool.kiln]``; unknown keys are errors that suggest the closest valid one."""
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{pyproject}: cannot read the project settings: {exc}") from exc
    table = data.get("tool", {}).get("kiln")
    if not isinstance(table, dict):
        raise ConfigError(f"{pyproject}: no [tool.kiln] table",
                          hint='add [tool.kiln] with github = "OWNER/REPO"')
    for key in table:
        if key not in _CONFIG_KEYS:
            close = difflib.get_close_matches(key, _CONFIG_KEYS, n=1)
            raise ConfigError(f"{pyproject}: [tool.kiln]: unknown key '{key}'",
                              hint=f"did you mean '{close[0]}'?" if close else
                              "valid keys: " + ", ".join(_CONFIG_KEYS))
    github = table.get("github")
    if not isinstance(github, str) or not GITHUB_REPO_RE.fullmatch(github):
        raise ConfigError(f"{pyproject}: [tool.kiln] github = {github!r} is not OWNER/REPO",
                          hint='write e.g. github = "ember-ml/ember"')
    download_url = table.get("download_url",
                             f"https://github.com/{github}/releases/download/{{tag}}")
    if not isinstance(download_url, str) or not download_url.startswith(("https://",
                                                                          "http://", "file:")):
        raise ConfigError(f"{pyproject}: [tool.kiln] download_url = {download_url!r} is not "
                          "a URL", hint="write an https URL; {tag} is replaced by the tag")
    sources = table.get("sources", ["runtime"])
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise ConfigError(f"{pyproject}: [tool.kiln] sources must be a list of directories")
    project = table.get("project", "ember")
    # The project name is a token of the signed trusted comment and of file names.
    if not isinstance(project, str) or not PROJECT_RE.fullmatch(project):
        raise ConfigError(f"{pyproject}: [tool.kiln] project = {project!r} is not a plain name",
                          hint="use letters, digits, '.', '_' and '-', e.g. project = \"ember\"")
    return ProjectConfig(project=project, github=github, download_url=download_url,
                         sources=tuple(sources))


# --------------------------------------------------------------------------------------------
# tags


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


def tag_commit(repo: Path, env: Mapping[str, str], tag: str) -> str | None:
    """The commit that ``tag`` points at, or ``None`` when there is no such tag."""
    done = run(["git", "-C", str(repo), "rev-parse", "-q", "--verify",
                f"refs/tags/{tag}^{{commit}}"], env=env, check=False, what="git")
    return done.stdout.strip() if done.returncode == 0 else None


def create_tag(repo: Path, env: Mapping[str, str], tag: str, commit: str,
               message: str) -> None:
    """Create the annotated tag ``tag`` at ``commit``."""
    try:
        run(["git", "-C", str(repo), "tag", "-a", tag, "-m", message, commit], env=env,
            what="git tag")
    except CommandFailed as exc:
        raise ReleaseError(f"could not create the tag {tag}: {exc.output.strip()[-300:]}",
                           hint="set git's user.name and user.email, then run `git tag -a "
                                f"{tag} -m '{message}' {commit[:12]}` (the release directory "
                                "is complete), or pass --no-git-tag") from exc


# --------------------------------------------------------------------------------------------
# collecting assets


@dataclass(frozen=True, kw_only=True)
class LocalAsset:
    """An asset on disk and its record (size and digest already checked)."""

    record: AssetRecord
    path: Path


def _looks_like_record(data: object) -> bool:
    return isinstance(data, Mapping) and "entry_id" in data and "sha256" in data


def scan_artifacts(directory: Path) -> tuple[LocalAsset, ...]:
    """Every asset record under ``directory`` (searched recursively, as CI's artifact download
    may put each runner's output in its own folder), checked against its asset. Identical
    copies of one asset are merged; two different assets of one name are an error."""
    if not directory.is_dir():
        raise ReleaseError(f"artifacts directory {directory} does not exist",
                           hint="pass the folder that holds the built archives and their "
                                ".json records")
    found: dict[str, LocalAsset] = {}
    for path in sorted(directory.rglob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # not a record (logs, build summaries); records are checked below
        if not _looks_like_record(data):
            continue
        record = read_record(path, check_asset=True)
        if not is_safe_name(record.name):
            raise ReleaseError(f"{path}: asset name {record.name!r} is not a plain file name")
        if record.name in RELEASE_FILES:
            raise ReleaseError(f"{path}: asset name {record.name!r} is reserved for the "
                               "release's own files")
        asset = LocalAsset(record=record, path=path.with_name(record.name))
        seen = found.get(record.name)
        if seen is not None and seen.record != record:
            raise ReleaseError(
                f"two different assets named {record.name}: {seen.path} and {asset.path}",
                hint="remove one of them; each asset name must be built once")
        found.setdefault(record.name, asset)
    return tuple(found[name] for name in sorted(found))


# --------------------------------------------------------------------------------------------
# the completeness gate


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
class GateResult:
    """What passes into the release: the assets, and what is missing (allowed) or disabled."""

    assets: tuple[LocalAsset, ...]
    missing: tuple[MissingBuild, ...]
    disabled: tuple[DisabledBuild, ...]


def _platform(entry: Entry) -> str:
    return f"{entry.floor}, {entry.arch}"


def disabled_builds(matrix: Matrix) -> tuple[DisabledBuild, ...]:
    out = []
    for e in matrix.disabled:
        assert e.disabled is not None
        out.append(DisabledBuild(entry_id=e.id, platform=_platform(e), backend=e.backend_label,
                                 reason=e.disabled.reason, tracking=e.disabled.tracking))
    return tuple(out)


def expand_allowed(matrix: Matrix, patterns: Sequence[str]) -> frozenset[str]:
    """Entry ids named by ``--allow-missing`` (exact ids or globs)."""
    allowed: set[str] = set()
    for pattern in patterns:
        hits = [e.id for e in matrix if fnmatch.fnmatchcase(e.id, pattern)]
        if not hits:
            close = difflib.get_close_matches(pattern, matrix.ids, n=1, cutoff=0.5)
            raise ConfigError(f"--allow-missing {pattern}: no matrix entry has this id",
                              hint=f"did you mean '{close[0]}'?" if close else
                              "see `kiln matrix list` for ids")
        allowed.update(hits)
    return frozenset(allowed)


def _check_consistent(asset: LocalAsset, entry: Entry) -> None:
    r = asset.record
    want = {"os": entry.os, "arch": entry.arch, "backend": entry.backend,
            "backend_version": entry.backend_version}
    have = {"os": r.os, "arch": r.arch, "backend": r.backend,
            "backend_version": r.backend_version}
    for key, value in want.items():
        if have[key] != value:
            raise ReleaseError(
                f"{asset.path}: field '{key}' is {have[key]!r} but matrix entry '{entry.id}' "
                f"says {value!r}",
                hint="the asset was built from another matrix; rebuild it from this commit")


def gate(matrix: Matrix, assets: Sequence[LocalAsset], *, build_number: int, commit: str,
         allow_missing: Iterable[str] = (),
         failures: Mapping[str, str] | None = None) -> GateResult:
    """Apply the completeness gate.

    ``allow_missing``: entry ids (already expanded) that may be missing. ``failures``: why an
    entry has no asset, when the caller knows (a failed build), shown in the error and notes.
    Raises ``ReleaseError`` listing every missing entry that is not allowed.
    """
    allowed = frozenset(allow_missing)
    failures = failures or {}
    by_id = {e.id: e for e in matrix}
    kept: list[LocalAsset] = []
    unverified: dict[str, str] = {}
    for asset in assets:
        r = asset.record
        entry = by_id.get(r.entry_id)
        if entry is None:
            raise ReleaseError(f"{asset.path}: entry '{r.entry_id}' is not in the matrix",
                               hint="remove the asset or add the entry to matrix/")
        if entry.disabled is not None:
            raise ReleaseError(f"{asset.path}: entry '{entry.id}' is disabled in the matrix "
                               f"({entry.disabled.tracking})",
                               hint="remove the asset, or re-enable the entry in matrix/")
        if r.build_number != build_number:
            raise ReleaseError(f"{asset.path}: built as b{r.build_number}, but this release "
                               f"is b{build_number}",
                               hint="rebuild it at this commit, or pass the matching --tag")
        if r.commit != commit:
            raise ReleaseError(f"{asset.path}: built from commit {r.commit[:12]}, but the "
                               f"release is of {commit[:12]}",
                               hint="download the artifacts of the CI run of this commit")
        _check_consistent(asset, entry)
        if not r.verification.ok:
            unverified.setdefault(
                entry.id, f"verification failed ({r.verification.method}): "
                          f"{r.verification.detail}")
            continue
        kept.append(asset)
    has_archive = {a.record.entry_id for a in kept if a.record.kind == "archive"}
    missing: list[MissingBuild] = []
    for e in matrix.enabled:
        if e.id in has_archive:
            continue
        reason = unverified.get(e.id) or failures.get(e.id) or (
            "not built here: needs a CI runner" if not e.local
            else "no archive of it was built or collected")
        missing.append(MissingBuild(entry_id=e.id, reason=reason))
    # An entry that is not released ships nothing, not even a wheel.
    kept = [a for a in kept if a.record.entry_id in has_archive]
    refused = [m for m in missing if m.entry_id not in allowed]
    if refused:
        lines = "\n".join(f"  - {m.entry_id}: {m.reason}" for m in refused)
        ids = " ".join(m.entry_id for m in refused)
        raise ReleaseError(
            f"the release is incomplete: {len(refused)} enabled "
            f"{'entry is' if len(refused) == 1 else 'entries are'} missing or unverified\n"
            + lines,
            hint=f"build them (or download their CI artifacts into --artifacts), or release "
                 f"without them: --allow-missing {ids}")
    return GateResult(assets=tuple(kept), missing=tuple(missing),
                      disabled=disabled_builds(matrix))


# --------------------------------------------------------------------------------------------
# the release manifest


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


def release_manifest(result: GateResult, *, project: str, tag: str, build_number: int,
                     commit: str, commit_epoch: int, base_url: str) -> ReleaseManifest:
    base = base_url.rstrip("/") + "/"
    return ReleaseManifest(
        project=project, tag=tag, build_number=build_number, commit=commit,
        date=iso_date(commit_epoch), base_url=base,
        assets=tuple(ReleaseAsset(record=a.record, url=base + a.record.name)
                     for a in result.assets),
        missing=result.missing, disabled=result.disabled)


# --------------------------------------------------------------------------------------------
# SHA256SUMS


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


# --------------------------------------------------------------------------------------------
# writing the release directory


class Signer(Protocol):
    """Signs ``SHA256SUMS`` (see ``kiln.sign``)."""

    def public_key(self) -> str:
        """The public key file's text."""
        ...

    def sign(self, path: Path, signature: Path, *, trusted_comment: str) -> None:
        ...

    def verify(self, path: Path, signature: Path, public_key: Path) -> None:
        ...


def _copy_checked(src: Path, dst: Path, *, size: int, sha256: str) -> None:
    with src.open("rb") as fin, dst.open("wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
        os.fsync(fout.fileno())
    if dst.stat().st_size != size or sha256_file(dst) != sha256:
        raise IntegrityError(f"{src}: changed while it was copied into the release",
                             hint="make sure nothing writes to the artifacts directory")


def is_release_dir(path: Path) -> bool:
    return (path / MANIFEST_NAME).is_file() and (path / SUMS_NAME).is_file()


def render_install_scripts(manifest: ReleaseManifest, pubkey: str,
                           base_url: str) -> dict[str, str]:
    from kiln.install_scripts import render

    return render(manifest, pubkey, base_url)


def assemble(out: Path, *, assets: Sequence[LocalAsset], manifest: ReleaseManifest,
             notes: str, sbom: str, signer: Signer) -> dict[str, str]:
    """Write the release directory ``out`` atomically; returns ``SHA256SUMS`` as a dict.

    An existing ``out`` is replaced only if it is a previous kiln release (or empty), so a
    typo in ``--out`` cannot delete an unrelated directory.
    """
    manifest.check(source=f"the manifest of {manifest.tag!r}")
    out = out.absolute()
    if out.exists() and not (out.is_dir() and (is_release_dir(out) or not any(out.iterdir()))):
        raise ReleaseError(f"--out {out} exists and is not a kiln release directory",
                           hint="pass a new or empty directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.with_name(f".{out.name}.partial-{os.getpid()}")
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir()
    try:
        digests: dict[str, str] = {}
        for a in assets:
            _copy_checked(a.path, stage / a.record.name, size=a.record.size,
                          sha256=a.record.sha256)
            digests[a.record.name] = a.record.sha256
        texts = {MANIFEST_NAME: manifest.text(), SBOM_NAME: sbom, NOTES_NAME: notes,
                 PUBLIC_KEY_NAME: signer.public_key()}
        # The installers pin this release's public key and default to its download URL.
        texts.update(render_install_scripts(manifest, signer.public_key(), manifest.base_url))
        for name, text in texts.items():
            atomic_write_text(stage / name, text)
            digests[name] = sha256_file(stage / name)
        atomic_write_text(stage / SUMS_NAME, format_sums(digests))
        # The signature names the release's identity (contract: installers check the tag
        # token and read the date from it), so files of one release cannot pass as another's.
        signer.sign(stage / SUMS_NAME, stage / SIGNATURE_NAME,
                    trusted_comment=release_comment(manifest))
        # Check what was written, as a user would, before it becomes visible.
        signer.verify(stage / SUMS_NAME, stage / SIGNATURE_NAME, stage / PUBLIC_KEY_NAME)
        verify_sums(stage)
        fsync_dir(stage)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            stage.rename(out)
            shutil.rmtree(old)
        else:
            stage.rename(out)
        fsync_dir(out.parent)
    finally:
        if stage.exists():
            shutil.rmtree(stage)
    return digests


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
