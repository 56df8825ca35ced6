"""What every publisher shares: the checked release (``LocalRelease``, from ``load_release``),
the result and options types, the ``Publisher`` protocol, and the name and path checks each
publisher runs again before it touches its destination (defence in depth: ``read_release``
has checked them already)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from kiln.errors import IntegrityError, PublishError
from kiln.matrix import ID_RE
from kiln.release.manifest import (
    INDEX_NAME,
    INDEX_SIGNATURE_NAME,
    NOTES_NAME,
    PUBLIC_KEY_NAME,
    SIGNATURE_MAX_BYTES,
    SIGNATURE_NAME,
    SUMS_NAME,
    TAG_RE,
    ReleaseManifest,
    is_safe_name,
    read_release,
)
from kiln.release.sign import verify_signature

__all__ = [
    "LocalRelease",
    "PublishOptions",
    "PublishResult",
    "Publisher",
    "check_names",
    "confined",
    "load_release",
]


@dataclass(frozen=True, kw_only=True)
class LocalRelease:
    """A checked release directory: its manifest and the files to publish."""

    directory: Path
    manifest: ReleaseManifest
    files: Mapping[str, str]  # file name -> sha256, SHA256SUMS and its signature included
    notes: str

    @property
    def tag(self) -> str:
        return self.manifest.tag

    def path(self, name: str) -> Path:
        return self.directory / name

    def size(self, name: str) -> int:
        return (self.directory / name).stat().st_size


@dataclass(frozen=True, kw_only=True)
class PublishResult:
    destination: str
    url: str  # where the published release can be seen
    uploaded: tuple[str, ...]
    kept: tuple[str, ...]  # already there and correct (a resumed publish)
    already_published: bool


@dataclass(frozen=True, kw_only=True)
class PublishOptions:
    env: Mapping[str, str]
    log: Callable[[str], None] = field(default=lambda _msg: None)
    # The release key, for what a publisher signs itself (a mirror root's index.json);
    # None: $KILN_SIGNING_KEY, if set.
    signing_key: str | None = None
    index_expiry_days: int = 30
    # The project's git tag prefix (kiln.toml's release.tag_prefix): GitHub releases are
    # <prefix>bN. Mirrors keep bN: one mirror holds one project.
    tag_prefix: str = ""


class Publisher(Protocol):
    def publish(self, release: LocalRelease) -> PublishResult:
        ...


def check_names(release: LocalRelease) -> None:
    """Refuse a release whose tag, file names or entry ids could name anything but one plain
    directory or file at the destination. ``read_release`` already refuses them; publishers
    check again before they touch the destination (a ``LocalRelease`` may be built by other
    code), so a bad value can never reach a path or URL."""
    if TAG_RE.fullmatch(release.tag) is None:
        raise PublishError(f"release tag {release.tag!r} is not a tag b<N> (b and 1 to 9 "
                           "digits); nothing was published")
    for name in sorted(release.files):
        if not is_safe_name(name):
            raise PublishError(f"release file name {name!r} is not a plain file name; "
                               "nothing was published")
    for asset in release.manifest.assets:
        if asset.record.name not in release.files:
            raise PublishError(f"asset {asset.record.name!r} is not among the release's files")
        if ID_RE.fullmatch(asset.record.entry_id) is None:
            raise PublishError(f"asset {asset.record.name}: entry id "
                               f"{asset.record.entry_id!r} is not a matrix entry id")


def confined(root: Path, *parts: str) -> Path:
    """``root/parts...`` with symbolic links resolved, refused (``PublishError``) unless it
    is still inside ``root``: the last line of defence for a destination path."""
    base = root.resolve()
    path = base.joinpath(*parts).resolve()
    if path == base or not path.is_relative_to(base):
        raise PublishError(f"{'/'.join(parts)!r} resolves to {path}, outside {base}; "
                           "nothing was published there")
    return path


def _check_release_index(directory: Path, manifest: ReleaseManifest, *, signed: bool) -> None:
    """The release's ``index.json`` is its own and of its project: installers take the
    project's name from it (``~/.<project>``), and a mirror's index is built from it. With its
    signature checked, the signed comment must name this index too (no expiry check: an old
    release is published again as it was)."""
    from kiln.release.check import trusted_comment
    from kiln.release.index import INDEX_MAX_BYTES, check_fresh, check_project_of, parse_index

    path = directory / INDEX_NAME
    with path.open("rb") as fh:  # parse_index refuses what is over the cap
        index = parse_index(fh.read(INDEX_MAX_BYTES + 1), source=str(path))
    if index.kind != "release" or index.release(manifest.tag) is None:
        raise IntegrityError(f"{path} is not the index of release {manifest.tag}",
                             hint="the release directory is damaged: make the release again")
    check_project_of(index, manifest.project, source=str(path),
                     hint="the release directory mixes two projects' files: do not publish it")
    if signed:
        sig = directory / INDEX_SIGNATURE_NAME
        comment = trusted_comment(sig.read_bytes()[:SIGNATURE_MAX_BYTES], sig)
        check_fresh(index, comment, now=datetime.now(UTC), source=str(sig),
                    check_expiry=False)


def load_release(directory: Path, *, env: Mapping[str, str],
                 check_signature: bool = True) -> LocalRelease:
    manifest, files = read_release(directory)
    if check_signature:
        verify_signature(directory / SUMS_NAME, directory / SIGNATURE_NAME,
                         directory / PUBLIC_KEY_NAME, env=env)
        if (directory / INDEX_SIGNATURE_NAME).is_file():
            # The index installers choose from is signed on its own: by the same key.
            verify_signature(directory / INDEX_NAME, directory / INDEX_SIGNATURE_NAME,
                             directory / PUBLIC_KEY_NAME, env=env)
    if (directory / INDEX_NAME).is_file():
        _check_release_index(directory, manifest, signed=check_signature and (
            directory / INDEX_SIGNATURE_NAME).is_file())
    notes = (directory / NOTES_NAME).read_text(encoding="utf-8")
    return LocalRelease(directory=directory, manifest=manifest, files=files, notes=notes)
