"""``kiln verify``: check a release directory as a downstream user would, before trusting it.

The checks are a list (``CHECKS``) of named functions. Each takes the ``ReleaseUnderCheck``
(the directory, the public key, and what earlier checks already read: ``SHA256SUMS``,
``manifest.json``) and returns a one-line account of what it found; a failure raises a
``KilnError`` whose class gives the exit code (``IntegrityError``, 12, for a checksum or
signature that does not match; ``ReleaseError``, 9, for a release that is not what it says it
is). ``verify_release`` runs every check, also after one failed, so the report lists them all.

Adding a check is adding a function ``def check_x(release: ReleaseUnderCheck) -> str`` and
one ``Check(name=..., run=check_x, what=...)`` row to ``CHECKS``.

Signatures are checked here with py-minisign (no ``minisign`` program needed). The public key
should come from somewhere other than the release itself (``--key``): the release's own
``minisign.pub`` proves only that the files agree with one another, not that the project made
them, and ``VerifyReport.warnings`` says so.
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kiln.errors import ConfigError, IntegrityError, KilnError, ReleaseError
from kiln.files import sha256_file
from kiln.release.index import INDEX_MAX_BYTES, check_fresh, check_project_of, parse_index
from kiln.release.manifest import (
    INDEX_NAME,
    INDEX_SIGNATURE_NAME,
    MANIFEST_MAX_BYTES,
    MANIFEST_NAME,
    PROVENANCE_MAX_BYTES,
    PROVENANCE_NAME,
    PROVENANCE_SIGNATURE_NAME,
    PUBLIC_KEY_NAME,
    RELEASE_FILES,
    SIGNATURE_MAX_BYTES,
    SIGNATURE_NAME,
    SUMS_MAX_BYTES,
    SUMS_NAME,
    ReleaseManifest,
    check_comment,
)
from kiln.release.provenance import parse_provenance, provenance_comment
from kiln.release.sums import parse_sums_strict

__all__ = [
    "CHECKS",
    "Check",
    "CheckOutcome",
    "ReleaseUnderCheck",
    "VerifyReport",
    "check_floors",
    "check_index",
    "check_manifest",
    "check_provenance",
    "check_signature",
    "check_sums",
    "public_key_from",
    "trusted_comment",
    "verify_release",
]

_KEY_RE = re.compile(r"RW[A-Za-z0-9+/=]{40,}")
_UNPINNED = ("the release was checked with its own minisign.pub: that proves the files agree "
             "with one another, not that the project made them (a tampered mirror can replace "
             "the key too); pin the project's key with --key FILE|KEY")


def public_key_from(value: str) -> str:
    """``--key``: a minisign public key (``RW...``) or a ``minisign.pub`` file; returns the
    key's base64 line."""
    v = value.strip()
    if _KEY_RE.fullmatch(v) is None:
        try:
            text = Path(v).expanduser().read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--key {value}: neither a minisign public key (RW...) nor a "
                              f"readable file ({exc})",
                              hint="pass the project's minisign.pub or its key line") from exc
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        v = lines[-1] if lines else ""
    _parse_key(v, source=f"--key {value}", error=ConfigError)
    return v


def _parse_key(line: str, *, source: str, error: type[KilnError]) -> Any:
    import minisign  # type: ignore[import-untyped]

    try:
        return minisign.PublicKey.from_base64(line)
    except (minisign.Error, ValueError, binascii.Error) as exc:
        raise error(f"{source}: not a minisign public key ({exc})",
                    hint="a minisign public key is a line RW... (the last line of a "
                         "minisign.pub)") from exc


def _read(path: Path, cap: int) -> bytes:
    try:
        with path.open("rb") as fh:
            data = fh.read(cap + 1)
    except FileNotFoundError:
        raise IntegrityError(f"{path.parent}: {path.name} is missing",
                             hint="download the whole release directory") from None
    except OSError as exc:
        raise IntegrityError(f"{path}: cannot read: {exc.strerror}") from exc
    if len(data) > cap:
        raise IntegrityError(f"{path}: larger than the {cap} bytes such a file may have",
                             hint="a release directory holds only what `kiln release` wrote")
    return data


def _text(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IntegrityError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") \
            from exc


@dataclass
class ReleaseUnderCheck:
    """The release being checked, and what the checks read of it (once each)."""

    directory: Path
    key: str  # the base64 line of the minisign public key
    pinned: bool  # the key came from the user, not from the release itself
    _sums: dict[str, str] | None = field(default=None, repr=False)
    _manifest: ReleaseManifest | None = field(default=None, repr=False)

    def path(self, name: str) -> Path:
        return self.directory / name

    def read(self, name: str, cap: int) -> bytes:
        """A small file of the release, at most ``cap`` bytes (``IntegrityError`` if not)."""
        return _read(self.path(name), cap)

    def sums(self) -> dict[str, str]:
        """``SHA256SUMS`` parsed (strictly): file name -> sha256."""
        if self._sums is None:
            path = self.path(SUMS_NAME)
            # Strictly, as the installers read it: one line per file, names that can only
            # be files of a release directory (no shell or path characters, no spaces).
            self._sums = parse_sums_strict(self.read(SUMS_NAME, SUMS_MAX_BYTES),
                                           source=str(path))
        return self._sums

    def manifest(self) -> ReleaseManifest:
        """``manifest.json`` parsed and checked (``ReleaseManifest.from_json``)."""
        if self._manifest is None:
            path = self.path(MANIFEST_NAME)
            try:
                data = json.loads(_text(self.read(MANIFEST_NAME, MANIFEST_MAX_BYTES), path))
            except json.JSONDecodeError as exc:
                raise ReleaseError(f"{path}: not JSON: {exc}") from exc
            self._manifest = ReleaseManifest.from_json(data, source=str(path))
        return self._manifest

    def verify_signature(self, name: str, signature: str, *, cap: int) -> str:
        """Check the minisign ``signature`` file of ``name`` (at most ``cap`` bytes) with the
        key; returns the signed trusted comment."""
        import minisign

        key = _parse_key(self.key, source="the public key", error=IntegrityError)
        data = self.read(name, cap)
        try:
            sig = minisign.Signature.from_bytes(self.read(signature, SIGNATURE_MAX_BYTES))
        except (minisign.Error, ValueError, binascii.Error, IndexError) as exc:
            raise IntegrityError(f"{self.path(signature)}: not a minisign signature ({exc})",
                                 hint="the release is damaged or was tampered with") from exc
        try:
            key.verify(data, sig)
        except minisign.Error as exc:
            whose = "the pinned key" if self.pinned else f"the release's {PUBLIC_KEY_NAME}"
            raise IntegrityError(f"{signature} does not verify {name} with {whose} ({exc})",
                                 hint=f"{name} or its signature was changed after the release "
                                      "was signed, or another key signed it: do not trust "
                                      "the release") from exc
        return str(sig.trusted_comment)


Run = Callable[[ReleaseUnderCheck], str]


@dataclass(frozen=True, kw_only=True)
class Check:
    """One named check: ``run`` returns what it found, or raises a ``KilnError``."""

    name: str
    run: Run
    what: str


@dataclass(frozen=True, kw_only=True)
class CheckOutcome:
    name: str
    ok: bool
    detail: str
    error: KilnError | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "ok": self.ok, "detail": self.detail}
        if self.error is not None:
            out["exit_code"] = self.error.exit_code
            if self.error.hint:
                out["hint"] = self.error.hint
        return out


@dataclass(frozen=True, kw_only=True)
class VerifyReport:
    """What ``verify_release`` found: one outcome per check, in ``CHECKS`` order."""

    directory: Path
    pinned: bool
    outcomes: tuple[CheckOutcome, ...]
    warnings: tuple[str, ...]
    tag: str | None
    commit: str | None

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)

    @property
    def error(self) -> KilnError | None:
        """The first failure, whose class gives the exit code; ``None`` when all passed."""
        return next((o.error for o in self.outcomes if o.error is not None), None)

    def to_json(self) -> dict[str, Any]:
        return {"directory": str(self.directory), "ok": self.ok, "tag": self.tag,
                "commit": self.commit, "key": "pinned" if self.pinned else "release",
                "warnings": list(self.warnings),
                "checks": [o.to_json() for o in self.outcomes]}


# --------------------------------------------------------------------------------------------
# the checks


def check_signature(release: ReleaseUnderCheck) -> str:
    """``SHA256SUMS.minisig`` verifies ``SHA256SUMS`` with the key, and its signed trusted
    comment names the release that ``manifest.json`` describes."""
    comment = release.verify_signature(SUMS_NAME, SIGNATURE_NAME, cap=SUMS_MAX_BYTES)
    whose = "the pinned key" if release.pinned else f"the release's own {PUBLIC_KEY_NAME}"
    return f"{SUMS_NAME} signed with {whose} ({release.key[:10]}...): {comment}"


def check_sums(release: ReleaseUnderCheck) -> str:
    """Every file that ``SHA256SUMS`` lists is there with that sha256, and nothing else is
    in the directory."""
    listed = release.sums()
    bad = []
    for name, digest in sorted(listed.items()):
        path = release.path(name)
        if path.is_symlink() or not path.is_file():
            bad.append(f"{name} is missing or not a regular file")
        elif sha256_file(path) != digest:
            bad.append(f"{name}: sha256 differs")
    extra = sorted(p.name for p in release.directory.iterdir()
                   if p.name not in listed and p.name not in (SUMS_NAME, SIGNATURE_NAME))
    if extra:
        bad.append(f"not listed in {SUMS_NAME}: {', '.join(extra)}")
    if bad:
        raise IntegrityError(f"{release.directory}: " + "; ".join(bad),
                             hint="the release was changed after it was made: do not trust "
                                  "the files that differ; download them again")
    return f"{len(listed)} files match {SUMS_NAME}"


def check_manifest(release: ReleaseUnderCheck) -> str:
    """``manifest.json`` is a valid release manifest, lists each asset with the sha256 that
    ``SHA256SUMS`` has, the release's own files are all there, and the signed comment of
    ``SHA256SUMS`` names this manifest's project, tag and commit."""
    manifest = release.manifest()
    listed = release.sums()
    for a in manifest.assets:
        if listed.get(a.record.name) != a.record.sha256:
            raise IntegrityError(f"{release.path(MANIFEST_NAME)}: {a.record.name} is not listed "
                                 f"in {SUMS_NAME} with the sha256 the manifest gives",
                                 hint="the manifest and the checksums disagree: do not trust "
                                      "the release")
    absent = [n for n in RELEASE_FILES if n not in listed and n not in (SUMS_NAME,
                                                                        SIGNATURE_NAME)]
    if absent:
        raise ReleaseError(f"{release.directory}: {SUMS_NAME} does not list "
                           f"{', '.join(absent)}", hint="make the release again with `kiln "
                                                        "release`")
    sig_path = release.path(SIGNATURE_NAME)
    comment = trusted_comment(release.read(SIGNATURE_NAME, SIGNATURE_MAX_BYTES), sig_path)
    check_comment(comment, manifest, source=str(sig_path))
    return (f"{manifest.project} {manifest.tag} of commit {manifest.commit[:12]}: "
            f"{len(manifest.assets)} assets, {len(manifest.missing)} missing, "
            f"{len(manifest.disabled)} disabled")


def trusted_comment(signature: bytes, path: Path) -> str:
    """The one ``trusted comment:`` line of a minisign signature file's text."""
    found = [ln[len("trusted comment: "):] for ln in _text(signature, path).split("\n")
             if ln.startswith("trusted comment: ")]
    if len(found) != 1:
        raise IntegrityError(f"{path}: expected one 'trusted comment:' line, found "
                             f"{len(found)}")
    return found[0]


def check_provenance(release: ReleaseUnderCheck) -> str:
    """``provenance.intoto.json`` is signed with the key (its trusted comment names this
    release and the file), both files are listed in ``SHA256SUMS``, its subjects are exactly
    the manifest's assets with the sha256 of ``SHA256SUMS``, and it names the manifest's
    project, tag and commit."""
    listed = release.sums()
    for name in (PROVENANCE_NAME, PROVENANCE_SIGNATURE_NAME):
        if name not in listed:
            raise IntegrityError(f"{release.directory}: {name} is not listed in {SUMS_NAME}",
                                 hint="a release made by this kiln carries its signed "
                                      "provenance; do not trust one without it")
    manifest = release.manifest()
    comment = release.verify_signature(PROVENANCE_NAME, PROVENANCE_SIGNATURE_NAME,
                                       cap=PROVENANCE_MAX_BYTES)
    want = provenance_comment(manifest)
    if comment != want:
        raise IntegrityError(f"{PROVENANCE_SIGNATURE_NAME}: the signed comment {comment!r} is "
                             f"not {want!r}",
                             hint="the provenance belongs to another release")
    path = release.path(PROVENANCE_NAME)
    prov = parse_provenance(_text(release.read(PROVENANCE_NAME, PROVENANCE_MAX_BYTES), path),
                            source=str(path))
    for key, have, value in (("project", prov.project, manifest.project),
                             ("tag", prov.tag, manifest.tag),
                             ("commit", prov.commit, manifest.commit)):
        if have != value:
            raise IntegrityError(f"{path}: names {key} {have!r}, the release is {value!r}",
                                 hint="the provenance belongs to another release")
    assets = {a.record.name: listed.get(a.record.name, "") for a in manifest.assets}
    if dict(prov.subjects) != assets:
        differ = sorted(n for n in set(assets) | set(prov.subjects)
                        if assets.get(n) != prov.subjects.get(n))
        raise IntegrityError(f"{path}: its subjects differ from the assets in {SUMS_NAME}: "
                             f"{', '.join(differ)}",
                             hint="the provenance does not describe these files: do not "
                                  "trust the release")
    return (f"{len(prov.subjects)} subjects = the assets' sha256, {prov.tag} of "
            f"{prov.commit[:12]}, signed")


def check_index(release: ReleaseUnderCheck) -> str:
    """``index.json`` (what installers choose from) is signed with the key, its signed comment
    names its version and expiry and it is not past that expiry, both files are listed in
    ``SHA256SUMS``, and it lists exactly the manifest's assets, records equal."""
    listed = release.sums()
    for name in (INDEX_NAME, INDEX_SIGNATURE_NAME):
        if name not in listed:
            raise IntegrityError(f"{release.directory}: {name} is not listed in {SUMS_NAME}",
                                 hint="a release made by this kiln carries its signed index")
    comment = release.verify_signature(INDEX_NAME, INDEX_SIGNATURE_NAME, cap=INDEX_MAX_BYTES)
    path = release.path(INDEX_NAME)
    index = parse_index(release.read(INDEX_NAME, INDEX_MAX_BYTES), source=str(path))
    check_fresh(index, comment, now=datetime.now(UTC), source=str(path))
    manifest = release.manifest()
    entry = index.release(manifest.tag)
    if index.kind != "release" or entry is None or entry.commit != manifest.commit:
        raise IntegrityError(f"{path} is not the index of release {manifest.tag}",
                             hint="the index belongs to another release")
    check_project_of(index, manifest.project, source=str(path),
                     hint="the index belongs to another project's release")
    if [a.record for a in entry.assets] != [a.record for a in manifest.assets]:
        raise IntegrityError(f"{path} and {MANIFEST_NAME} list different assets",
                             hint="the release is damaged: do not trust it")
    return (f"version {index.version}, expires {index.expires}, {len(entry.assets)} assets = "
            f"the manifest's, signed")


def check_floors(release: ReleaseUnderCheck) -> str:
    """The floors in ``index.json`` are what the binaries need, measured again here
    (``kiln.verify.floors``), and none is above what the asset's record promises."""
    from kiln.verify.floors import FLOOR_FIELDS, check_promise, measure_archive

    path = release.path(INDEX_NAME)
    index = parse_index(release.read(INDEX_NAME, INDEX_MAX_BYTES), source=str(path))
    latest = index.latest
    if latest is None:
        raise IntegrityError(f"{path} lists no release")
    problems: list[str] = []
    counted = 0
    for asset in latest.assets:
        measured = measure_archive(release.path(asset.record.name))
        counted += 1
        for name in FLOOR_FIELDS:
            want, got = asset.floors.get(name), getattr(measured, name)
            if want != got:
                problems.append(f"{asset.record.entry_id}: {name} is {got!r} in the binaries, "
                                f"{want!r} in {INDEX_NAME}")
        problems += [f"{asset.record.entry_id}: {why}"
                     for why in check_promise(measured, asset.record.requirements())]
    if problems:
        raise IntegrityError(f"{path}: floors do not hold:\n  " + "\n  ".join(problems),
                             hint="the index does not describe these binaries, or they need "
                                  "more than their build promises: do not trust the release")
    return f"{counted} archives and wheels measured: the floors in {INDEX_NAME} hold"


CHECKS: tuple[Check, ...] = (
    Check(name="signature", run=check_signature,
          what=f"{SIGNATURE_NAME} verifies {SUMS_NAME} with the key"),
    Check(name="checksums", run=check_sums,
          what=f"every file matches {SUMS_NAME}, nothing unlisted"),
    Check(name="manifest", run=check_manifest,
          what=f"{MANIFEST_NAME} agrees with {SUMS_NAME} and the signed comment"),
    Check(name="provenance", run=check_provenance,
          what=f"{PROVENANCE_NAME}: signed, subjects = the assets, this tag and commit"),
    Check(name="index", run=check_index,
          what=f"{INDEX_NAME}: signed, not expired, lists the manifest's assets"),
    Check(name="floors", run=check_floors,
          what="the binaries' measured floors = the index's, within each promise"),
)


def verify_release(directory: Path, *, key: str | None = None,
                   checks: Sequence[Check] = CHECKS) -> VerifyReport:
    """Run ``checks`` on the release ``directory``. ``key`` is the minisign public key (its
    base64 line, see ``public_key_from``); without one the release's own ``minisign.pub`` is
    used and the report warns that this proves nothing against a tampered mirror. Raises only
    when ``directory`` is not a directory; failed checks are in the report."""
    if not directory.is_dir():
        raise ReleaseError(f"{directory} is not a directory",
                           hint="pass a release directory (made by `kiln release --out DIR` "
                                "or downloaded whole)")
    warnings: list[str] = []
    pinned = key is not None
    if key is None:
        pub = directory / PUBLIC_KEY_NAME
        try:
            lines = [ln.strip() for ln in _text(_read(pub, SIGNATURE_MAX_BYTES), pub)
                     .splitlines() if ln.strip()]
        except IntegrityError:
            lines = []
        key = lines[-1] if lines else ""
        warnings.append(_UNPINNED)
    release = ReleaseUnderCheck(directory=directory, key=key, pinned=pinned)
    outcomes = []
    for check in checks:
        try:
            detail = check.run(release)
        except KilnError as exc:
            outcomes.append(CheckOutcome(name=check.name, ok=False, detail=exc.message,
                                         error=exc))
        else:
            outcomes.append(CheckOutcome(name=check.name, ok=True, detail=detail))
    try:
        manifest: ReleaseManifest | None = release.manifest()
    except KilnError:
        manifest = None
    return VerifyReport(directory=directory, pinned=pinned, outcomes=tuple(outcomes),
                        warnings=tuple(warnings), tag=manifest.tag if manifest else None,
                        commit=manifest.commit if manifest else None)
