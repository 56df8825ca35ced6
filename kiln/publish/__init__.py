"""Publish a release directory (made by ``kiln release``) to a destination.

One module per destination behind one small Protocol, registered in ``PUBLISHERS`` by URL
scheme: ``file://PATH`` (``kiln.publish.directory``: a mirror directory) and
``github://OWNER/REPO`` (``kiln.publish.github``: GitHub Releases through the REST API).
Every publisher is idempotent: re-running after a failure resumes, and a release is visible
as published only once it is complete.

Before any publisher runs, ``load_release`` checks the directory as a user would: every
checksum in ``SHA256SUMS`` and the minisign signature of ``SHA256SUMS``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from kiln.errors import ConfigError
from kiln.release import (
    NOTES_NAME,
    PUBLIC_KEY_NAME,
    SIGNATURE_NAME,
    SUMS_NAME,
    ReleaseManifest,
    read_release,
)
from kiln.sign import verify_signature

__all__ = [
    "PUBLISHERS",
    "LocalRelease",
    "PublishOptions",
    "PublishResult",
    "Publisher",
    "load_release",
    "publisher_for",
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


class Publisher(Protocol):
    def publish(self, release: LocalRelease) -> PublishResult:
        ...


def load_release(directory: Path, *, env: Mapping[str, str],
                 check_signature: bool = True) -> LocalRelease:
    manifest, files = read_release(directory)
    if check_signature:
        verify_signature(directory / SUMS_NAME, directory / SIGNATURE_NAME,
                         directory / PUBLIC_KEY_NAME, env=env)
    notes = (directory / NOTES_NAME).read_text(encoding="utf-8")
    return LocalRelease(directory=directory, manifest=manifest, files=files, notes=notes)


def _directory(target: str, options: PublishOptions) -> Publisher:
    from kiln.publish.directory import DirectoryPublisher

    return DirectoryPublisher(Path(target), log=options.log)


def _github(target: str, options: PublishOptions) -> Publisher:
    from kiln.publish.github import github_publisher

    return github_publisher(target, env=options.env, log=options.log)


def _pypi_index(secure: bool) -> Callable[[str, PublishOptions], Publisher]:
    def make(target: str, options: PublishOptions) -> Publisher:
        from kiln.publish.pypi_index import pypi_index_publisher

        return pypi_index_publisher(target, secure=secure, env=options.env, log=options.log)

    return make


def _conan(target: str, options: PublishOptions) -> Publisher:
    from kiln.publish.conan import conan_publisher

    return conan_publisher(target, env=options.env, log=options.log)


# URL scheme -> factory taking the rest of the URL (after "scheme://").
PUBLISHERS: dict[str, Callable[[str, PublishOptions], Publisher]] = {
    "file": _directory,
    "github": _github,
    "pypi-index+http": _pypi_index(secure=False),
    "pypi-index+https": _pypi_index(secure=True),
    "conan": _conan,
}


def publisher_for(url: str, options: PublishOptions) -> Publisher:
    scheme, sep, rest = url.partition("://")
    if not sep or not rest:
        raise ConfigError(f"--to {url!r} is not a destination URL",
                          hint="use file://PATH or github://OWNER/REPO")
    factory = PUBLISHERS.get(scheme)
    if factory is None:
        raise ConfigError(f"--to {url!r}: unknown destination scheme '{scheme}'",
                          hint="known: " + ", ".join(f"{s}://" for s in sorted(PUBLISHERS)))
    return factory(rest, options)
