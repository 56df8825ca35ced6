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

The release settings come from ``kiln.toml``'s ``[release]`` (``kiln.project.Release``).
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kiln.errors import CommandFailed, ConfigError, IntegrityError, ReleaseError
from kiln.files import atomic_write_text, fsync_dir, sha256_file
from kiln.matrix import Entry, Matrix
from kiln.package.records import AssetRecord, read_record
from kiln.release.index import ReleaseIndex, index_comment
from kiln.release.install_scripts import Installer, render
from kiln.release.manifest import (
    INDEX_NAME,
    INDEX_SIGNATURE_NAME,
    MANIFEST_NAME,
    NOTES_NAME,
    PROVENANCE_NAME,
    PROVENANCE_SIGNATURE_NAME,
    PUBLIC_KEY_NAME,
    RELEASE_FILES,
    SBOM_NAME,
    SIGNATURE_NAME,
    SUMS_NAME,
    DisabledBuild,
    MissingBuild,
    ReleaseAsset,
    ReleaseManifest,
    format_sums,
    is_release_dir,
    is_safe_name,
    iso_date,
    release_comment,
    verify_sums,
)
from kiln.release.provenance import provenance_comment
from kiln.run import run

__all__ = [
    "GateResult",
    "LocalAsset",
    "Signer",
    "assemble",
    "create_tag",
    "disabled_builds",
    "expand_allowed",
    "gate",
    "release_manifest",
    "render_install_scripts",
    "scan_artifacts",
    "tag_commit",
]



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


def release_manifest(result: GateResult, *, project: str, tag: str, build_number: int,
                     commit: str, commit_epoch: int, base_url: str) -> ReleaseManifest:
    base = base_url.rstrip("/") + "/"
    return ReleaseManifest(
        project=project, tag=tag, build_number=build_number, commit=commit,
        date=iso_date(commit_epoch), base_url=base,
        assets=tuple(ReleaseAsset(record=a.record, url=base + a.record.name)
                     for a in result.assets),
        missing=result.missing, disabled=result.disabled)


class Signer(Protocol):
    """Signs ``SHA256SUMS`` (see ``kiln.release.sign``)."""

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


def render_install_scripts(manifest: ReleaseManifest, pubkey: str, base_url: str, *,
                           installer: Installer,
                           placement: Mapping[str, tuple[str | None, str]] | None = None
                           ) -> dict[str, str]:
    return render(manifest, pubkey, base_url, installer=installer, placement=placement)


def assemble(out: Path, *, assets: Sequence[LocalAsset], manifest: ReleaseManifest,
             notes: str, sbom: str, signer: Signer, index: ReleaseIndex, installer: Installer,
             provenance: str | None = None,
             extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Write the release directory ``out`` atomically; returns ``SHA256SUMS`` as a dict.

    An existing ``out`` is replaced only if it is a previous kiln release (or empty), so a
    typo in ``--out`` cannot delete an unrelated directory. ``index`` is the release's
    ``index.json`` (``kiln.release.index``), written and signed. ``installer`` names what the
    release's ``install.sh`` and ``install.ps1`` install. ``provenance`` is the text of
    ``provenance.intoto.json`` (``kiln.release.provenance``): written, signed and listed in
    ``SHA256SUMS`` with its signature. ``extra`` holds more text files by name (the release
    page, a bench report), written and listed in ``SHA256SUMS`` like the rest.
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
        texts.update(render_install_scripts(
            manifest, signer.public_key(), manifest.base_url, installer=installer,
            placement={a.record.entry_id: (a.distro, a.scope) for a in index.releases[0].assets}))
        for name, text in (extra or {}).items():
            if not is_safe_name(name) or name in texts or name in digests:
                raise ReleaseError(f"a release file may not be named {name!r}")
            texts[name] = text
        for name, text in texts.items():
            atomic_write_text(stage / name, text)
            digests[name] = sha256_file(stage / name)
        # The release index is signed on its own (installers that start from it check its
        # version and expiry in the signed comment) and listed in SHA256SUMS like the rest.
        if index.kind != "release" or index.latest is None or index.latest.tag != manifest.tag:
            raise ReleaseError(f"the index given for {manifest.tag} is not that release's")
        atomic_write_text(stage / INDEX_NAME, index.text())
        signer.sign(stage / INDEX_NAME, stage / INDEX_SIGNATURE_NAME,
                    trusted_comment=index_comment(index))
        for name in (INDEX_NAME, INDEX_SIGNATURE_NAME):
            digests[name] = sha256_file(stage / name)
        if provenance is not None:
            # The build provenance, signed on its own (a reader may fetch it alone), both
            # files listed in SHA256SUMS.
            atomic_write_text(stage / PROVENANCE_NAME, provenance)
            signer.sign(stage / PROVENANCE_NAME, stage / PROVENANCE_SIGNATURE_NAME,
                        trusted_comment=provenance_comment(manifest))
            signer.verify(stage / PROVENANCE_NAME, stage / PROVENANCE_SIGNATURE_NAME,
                          stage / PUBLIC_KEY_NAME)
            for name in (PROVENANCE_NAME, PROVENANCE_SIGNATURE_NAME):
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
