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

from collections.abc import Callable
from pathlib import Path

from kiln.errors import ConfigError
from kiln.publish.base import (
    LocalRelease,
    Publisher,
    PublishOptions,
    PublishResult,
    check_names,
    confined,
    load_release,
)

__all__ = [
    "PUBLISHERS",
    "LocalRelease",
    "PublishOptions",
    "PublishResult",
    "Publisher",
    "check_names",
    "confined",
    "load_release",
    "publisher_for",
]


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
