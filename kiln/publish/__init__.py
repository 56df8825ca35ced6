"""Publish a release directory (made by ``kiln release``) to a destination.

One module per destination behind one small Protocol, registered in ``PUBLISHERS`` by URL
scheme: ``file://PATH`` (``kiln.publish.directory``: a mirror directory),
``github://OWNER/REPO`` (``kiln.publish.github``: GitHub Releases through the REST API),
``pypi-index+http(s)://`` (``kiln.publish.pypi_index``: the wheels to a package index) and
``conan://`` (``kiln.publish.conan``). ``publish()`` is the whole step as one call.
Every publisher is idempotent: re-running after a failure resumes, and a release is visible
as published only once it is complete.

Before any publisher runs, ``load_release`` checks the directory as a user would: every
checksum in ``SHA256SUMS`` and the minisign signature of ``SHA256SUMS``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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
    "Published",
    "Publisher",
    "check_names",
    "confined",
    "load_release",
    "publish",
    "publisher_for",
    "scheme_help",
]


def _directory(target: str, options: PublishOptions) -> Publisher:
    from kiln.publish.directory import DirectoryPublisher
    from kiln.release.sign import KEY_ENV, MinisignSigner, resolve_key, scrub_env

    signer = None
    if options.signing_key or options.env.get(KEY_ENV):
        key = resolve_key(options.signing_key, options.env, repo=Path.cwd())
        signer = MinisignSigner(key, env=scrub_env(options.env))
    return DirectoryPublisher(Path(target), log=options.log, signer=signer,
                              index_expiry_days=options.index_expiry_days)


def _github(target: str, options: PublishOptions) -> Publisher:
    from kiln.publish.github import github_publisher

    return github_publisher(target, env=options.env, log=options.log,
                            tag_prefix=options.tag_prefix)


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


def scheme_help() -> str:
    """Every destination ``PUBLISHERS`` knows, as ``scheme://...`` (for ``--help`` and error
    hints: derived from the registry so that a new publisher is never left unmentioned)."""
    return ", ".join(f"{s}://" for s in sorted(PUBLISHERS))


def publisher_for(url: str, options: PublishOptions) -> Publisher:
    scheme, sep, rest = url.partition("://")
    if not sep or not rest:
        raise ConfigError(f"--to {url!r} is not a destination URL",
                          hint=f"use one of: {scheme_help()} (file://PATH, "
                               f"github://OWNER/REPO, ...)")
    factory = PUBLISHERS.get(scheme)
    if factory is None:
        raise ConfigError(f"--to {url!r}: unknown destination scheme '{scheme}'",
                          hint=f"known: {scheme_help()}")
    return factory(rest, options)


@dataclass(frozen=True, kw_only=True)
class Published:
    """What ``publish`` did: the release's tag and the publisher's ``PublishResult``."""

    tag: str
    result: PublishResult


def publish(directory: Path, to: str, *, env: Mapping[str, str] | None = None,
            log: Callable[[str], None] | None = None, signing_key: str | None = None,
            index_expiry_days: int = 30, tag_prefix: str = "") -> Published:
    """Check the release directory ``directory`` (every checksum of ``SHA256SUMS`` and its
    signature) and publish it to the destination URL ``to`` (a scheme of ``PUBLISHERS``).
    Idempotent: publishing again resumes, or reports ``already_published``. ``env`` (default
    ``os.environ``) holds the credentials, e.g. ``GITHUB_TOKEN``; ``log`` gets progress lines.
    ``signing_key`` (default ``$KILN_SIGNING_KEY``) signs what the destination keeps of its
    own, a mirror root's ``index.json``, valid ``index_expiry_days`` days. ``tag_prefix`` is
    the project's git tag prefix (kiln.toml's ``release.tag_prefix``): a GitHub release of bN
    is made under the tag ``<prefix>bN``.
    Raises ``ConfigError`` (exit code 2) for a bad URL, ``PublishError`` (10) and
    ``IntegrityError`` (12)."""
    env = dict(os.environ) if env is None else env
    release = load_release(Path(directory), env=env)
    options = PublishOptions(env=env, signing_key=signing_key,
                             index_expiry_days=index_expiry_days, tag_prefix=tag_prefix)
    if log is not None:
        options = PublishOptions(env=env, log=log, signing_key=signing_key,
                                 index_expiry_days=index_expiry_days, tag_prefix=tag_prefix)
    result = publisher_for(to, options).publish(release)
    return Published(tag=release.tag, result=result)
