"""Publish to GitHub Releases (``github://OWNER/REPO``) through the REST API, with requests.

The order of operations makes a half-finished release invisible and every step resumable:

1. The tag: ``refs/tags/<tag>`` must point at the release's commit. If the tag is missing on
   GitHub it is created there as an annotated tag (git database API); if it points elsewhere,
   publishing stops.
2. The release: a *draft* for the tag is found (drafts are not returned by
   ``releases/tags/{tag}``, so the paginated release list is searched) or created. A release
   that is already published is checked and left alone: complete and identical is success,
   anything else is an error (published releases are never changed).
3. The assets: each file is compared with what the draft already holds (name, state,
   size, sha256 ``digest``; the bytes are downloaded and hashed where the server gives no
   digest). Correct assets are kept, broken ones (a ``starter`` asset left by a dropped
   upload, a wrong size or digest) are deleted and uploaded again, missing ones are uploaded
   to the ``upload_url`` the release names. A ``422 already_exists`` answer (an upload that
   succeeded although its response was lost) leads to a fresh look, not a duplicate.
4. The draft's asset list is checked against the release directory once more, then the
   draft is published (``draft: false``) and the published release is read back and checked.

Transient failures (connection errors, timeouts, 5xx, rate limits) are retried with
exponential back-off, a bounded number of times; non-idempotent requests (create, upload)
are retried only after re-reading the server's state.

The token comes from ``GITHUB_TOKEN`` and travels only in the ``Authorization`` header: it is
in no log line, no error message and no ``repr``.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from kiln.errors import ConfigError, PublishError
from kiln.publish.base import LocalRelease, PublishResult, check_names

__all__ = ["API_VERSION", "DEFAULT_API_URL", "GitHubPublisher", "Retry", "github_publisher"]

DEFAULT_API_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
TOKEN_ENV = "GITHUB_TOKEN"
API_URL_ENV = "GITHUB_API_URL"  # set by GitHub Actions (GitHub Enterprise Server too)
# Used with fullmatch (with re.match, "$" would accept a trailing newline).
REPO_RE = re.compile(r"([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+)")
MAX_PAGES = 1000
MAX_BODY = 120_000  # GitHub refuses release bodies over 125,000 characters
CONTENT_TYPES = {".json": "application/json", ".md": "text/markdown", ".zip": "application/zip",
                 ".gz": "application/gzip", ".whl": "application/zip",
                 ".pub": "text/plain", ".minisig": "text/plain"}


@dataclass(frozen=True, kw_only=True)
class Retry:
    attempts: int = 5
    backoff: float = 1.0  # seconds before the 2nd try; doubles after each failure
    max_backoff: float = 30.0
    timeout: float = 60.0  # per request (connect and each read)
    upload_timeout: float = 600.0


class _Token(requests.auth.AuthBase):
    """Adds the token to each request; its repr does not show it."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self._token}"
        return r

    def __repr__(self) -> str:
        return "<GitHub token>"


class _Transient(Exception):
    """A failure worth retrying (network, 5xx, rate limit)."""


class _Status(Exception):
    """An unexpected HTTP status; ``info`` is GitHub's error JSON (or {})."""

    def __init__(self, status: int, what: str, info: Mapping[str, Any]) -> None:
        super().__init__(f"{what}: HTTP {status}")
        self.status = status
        self.what = what
        self.info = info

    def already_exists(self) -> bool:
        errors = self.info.get("errors")
        return self.status == 422 and isinstance(errors, list) and any(
            isinstance(e, Mapping) and e.get("code") == "already_exists" for e in errors)

    def describe(self) -> str:
        message = self.info.get("message") or ""
        errors = self.info.get("errors") or []
        detail = "; ".join(
            "/".join(str(e.get(k)) for k in ("resource", "field", "code") if e.get(k))
            for e in errors if isinstance(e, Mapping))
        return f"{self.what}: HTTP {self.status}" + (f" {message}" if message else "") + (
            f" ({detail})" if detail else "")


def _is_loopback(host: str | None) -> bool:
    return host in ("127.0.0.1", "localhost", "::1")


def github_publisher(target: str, *, env: Mapping[str, str],
                     log: Callable[[str], None], tag_prefix: str = "") -> GitHubPublisher:
    """Parse ``OWNER/REPO`` and read the token and API URL from ``env`` (the CLI edge).
    ``tag_prefix`` is the project's git tag prefix (kiln.toml's release.tag_prefix)."""
    m = REPO_RE.fullmatch(target.strip("/"))
    if m is None or m.group(1) in (".", "..") or m.group(2) in (".", ".."):
        raise ConfigError(f"github://{target}: expected github://OWNER/REPO")
    token = env.get(TOKEN_ENV, "")
    if not token:
        raise ConfigError(f"publishing to GitHub needs a token in {TOKEN_ENV}",
                          hint="in GitHub Actions: env: GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}"
                               " with permissions: contents: write")
    api = env.get(API_URL_ENV) or DEFAULT_API_URL
    return GitHubPublisher(m.group(1), m.group(2), token=token, api_url=api, log=log,
                           tag_prefix=tag_prefix)


class GitHubPublisher:
    def __init__(self, owner: str, repo: str, *, token: str, api_url: str = DEFAULT_API_URL,
                 log: Callable[[str], None] = lambda _m: None, retry: Retry | None = None,
                 session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep, tag_prefix: str = "") -> None:
        parts = urlsplit(api_url)
        if parts.scheme != "https" and not (parts.scheme == "http"
                                            and _is_loopback(parts.hostname)):
            raise ConfigError(f"GitHub API URL {api_url} is not https",
                              hint="the token must not travel unencrypted; use an https URL")
        self.owner, self.repo = owner, repo
        # Release bN is the git tag and GitHub release <tag_prefix>bN (a project released
        # from a subdirectory of a repository that holds others: "llama-" gives llama-b42).
        self.tag_prefix = tag_prefix
        self.api = api_url.rstrip("/")
        self.log = log
        self.retry = retry or Retry()
        self.sleep = sleep
        self.session = session or requests.Session()
        self.session.auth = _Token(token)
        self.session.headers.update({"Accept": "application/vnd.github+json",
                                     "X-GitHub-Api-Version": API_VERSION,
                                     "User-Agent": "kiln-release"})

    def __repr__(self) -> str:
        return f"GitHubPublisher({self.owner}/{self.repo} at {self.api})"

    # ---------------------------------------------------------------------------------------
    # HTTP

    @property
    def _base(self) -> str:
        return f"{self.api}/repos/{self.owner}/{self.repo}"

    def _once(self, method: str, url: str, *, what: str, expect: Sequence[int],
              timeout: float | None = None, **kwargs: Any) -> requests.Response:
        """One request. Raises ``_Transient`` or ``_Status`` for anything not expected."""
        try:
            r = self.session.request(method, url, timeout=timeout or self.retry.timeout,
                                     **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            # The exception text names the URL (no credentials) and the socket error.
            raise _Transient(f"{what}: {type(exc).__name__}") from exc
        if r.status_code in expect:
            return r
        try:
            info = r.json()
        except ValueError:
            info = {}
        if not isinstance(info, Mapping):
            info = {}
        rate_limited = r.status_code in (403, 429) and (
            r.headers.get("Retry-After") or r.headers.get("X-RateLimit-Remaining") == "0")
        if r.status_code >= 500 or rate_limited:
            raise _Transient(_Status(r.status_code, what, info).describe())
        raise _Status(r.status_code, what, info)

    def _pause(self, attempt: int) -> None:
        self.sleep(min(self.retry.backoff * (2 ** attempt), self.retry.max_backoff))

    def _call(self, method: str, url: str, *, what: str, expect: Sequence[int] = (200,),
              **kwargs: Any) -> requests.Response:
        """An idempotent request, retried on transient failures."""
        last = ""
        for attempt in range(self.retry.attempts):
            try:
                return self._once(method, url, what=what, expect=expect, **kwargs)
            except _Transient as exc:
                last = str(exc)
                self.log(f"{what}: {last}; retrying")
                self._pause(attempt)
            except _Status as exc:
                raise self._error(exc) from None
        raise PublishError(f"GitHub: {last} (gave up after {self.retry.attempts} tries)",
                           hint="run `kiln publish` again later: it resumes where it stopped")

    def _error(self, exc: _Status) -> PublishError:
        hints = {401: f"check that {TOKEN_ENV} holds a valid token",
                 403: "the token needs contents: write on the repository",
                 404: f"check that {self.owner}/{self.repo} exists and the token can see it"}
        return PublishError(f"GitHub: {exc.describe()}", hint=hints.get(exc.status))

    def _paged(self, url: str, *, what: str) -> list[Any]:
        """All items of a list endpoint, following the ``Link: rel="next"`` header."""
        items: list[Any] = []
        next_url: str | None = url
        params: dict[str, Any] | None = {"per_page": 100}
        for _ in range(MAX_PAGES):
            if next_url is None:
                return items
            r = self._call("GET", next_url, what=what, params=params)
            page = r.json()
            if not isinstance(page, list):
                raise PublishError(f"GitHub: {what}: expected a JSON list")
            items.extend(page)
            next_url = r.links.get("next", {}).get("url")
            params = None  # the next link carries them
        raise PublishError(f"GitHub: {what}: more than {MAX_PAGES} pages")

    # ---------------------------------------------------------------------------------------
    # tag

    def _tag_commit(self, tag: str) -> str | None:
        r = self._call("GET", f"{self._base}/git/ref/tags/{quote(tag, safe='')}",
                       what=f"read tag {tag}", expect=(200, 404))
        if r.status_code == 404:
            return None
        obj = r.json()["object"]
        if obj["type"] == "tag":
            t = self._call("GET", f"{self._base}/git/tags/{obj['sha']}",
                           what=f"read tag object {tag}").json()
            return str(t["object"]["sha"])
        return str(obj["sha"])

    def _ensure_tag(self, release: LocalRelease) -> None:
        tag, commit = self.tag_prefix + release.tag, release.manifest.commit
        for _ in range(self.retry.attempts):
            have = self._tag_commit(tag)
            if have == commit:
                return
            if have is not None:
                raise PublishError(
                    f"GitHub: tag {tag} of {self.owner}/{self.repo} points at {have[:12]}, "
                    f"but the release was built from {commit[:12]}",
                    hint="release the commit the tag points at, or use another tag")
            self.log(f"creating tag {tag} at {commit[:12]} on GitHub")
            try:
                obj = self._once("POST", f"{self._base}/git/tags", what=f"create tag {tag}",
                                 expect=(201,), json={
                                     "tag": tag, "object": commit, "type": "commit",
                                     "message": f"{release.manifest.project} {release.tag}"}
                                 ).json()
                self._once("POST", f"{self._base}/git/refs", what=f"create ref {tag}",
                           expect=(201,), json={"ref": f"refs/tags/{tag}", "sha": obj["sha"]})
                return
            except _Transient as exc:
                self.log(f"{exc}; looking again")
            except _Status as exc:
                if exc.status == 422 and "already exists" in exc.describe():
                    continue  # another run created the ref meanwhile: look at it again
                if exc.status == 422:
                    raise PublishError(
                        f"GitHub: {exc.describe()}",
                        hint=f"push commit {commit[:12]} to {self.owner}/{self.repo} first "
                             f"(git push origin {tag})") from None
                raise self._error(exc) from None
        raise PublishError(f"GitHub: could not create tag {tag}",
                           hint="push it yourself: git push origin " + tag)

    # ---------------------------------------------------------------------------------------
    # release

    def _published(self, tag: str) -> dict[str, Any] | None:
        """The published release of ``tag`` (this endpoint never returns drafts)."""
        r = self._call("GET", f"{self._base}/releases/tags/{quote(tag, safe='')}",
                       what=f"read release {tag}", expect=(200, 404))
        if r.status_code == 404:
            return None
        data = r.json()
        return data if isinstance(data, dict) and not data.get("draft") else None

    def _drafts(self, tag: str) -> list[dict[str, Any]]:
        every = self._paged(f"{self._base}/releases", what="list releases")
        return sorted((r for r in every if isinstance(r, dict) and r.get("draft")
                       and r.get("tag_name") == tag), key=lambda r: int(r["id"]))

    @staticmethod
    def _body(release: LocalRelease) -> str:
        if len(release.notes) <= MAX_BODY:
            return release.notes
        return (release.notes[:MAX_BODY].rsplit("\n", 1)[0]
                + "\n\n… (shortened; the full notes are the RELEASE_NOTES.md asset)\n")

    def _draft(self, release: LocalRelease) -> dict[str, Any]:
        """The one draft of this tag: found, or created. Extra drafts of the tag (left by an
        earlier tool or a lost response) are deleted."""
        tag = self.tag_prefix + release.tag
        title = f"{release.manifest.project} {release.tag}"
        body = self._body(release)
        for _ in range(self.retry.attempts):
            drafts = self._drafts(tag)
            if drafts:
                keep = drafts[0]
                for extra in drafts[1:]:
                    self.log(f"deleting duplicate draft {extra['id']} of {tag}")
                    self._call("DELETE", f"{self._base}/releases/{extra['id']}",
                               what="delete duplicate draft", expect=(204, 404))
                if keep.get("body") != body or keep.get("name") != title:
                    keep = self._call("PATCH", f"{self._base}/releases/{keep['id']}",
                                      what=f"update draft {tag}",
                                      json={"name": title, "body": body}).json()
                self.log(f"resuming draft release {keep['id']} of {tag}")
                return keep
            try:
                created = self._once("POST", f"{self._base}/releases", what=f"create {tag}",
                                     expect=(201,), json={
                                         "tag_name": tag,
                                         "target_commitish": release.manifest.commit,
                                         "name": title, "body": body,
                                         "draft": True, "prerelease": False}).json()
                self.log(f"created draft release {created['id']} of {tag}")
                return dict(created)
            except _Transient as exc:
                # The draft may exist although the answer was lost: look before retrying.
                self.log(f"{exc}; looking for the draft before trying again")
            except _Status as exc:
                raise self._error(exc) from None
        raise PublishError(f"GitHub: could not create the draft release of {tag}",
                           hint="run `kiln publish` again later: it resumes")

    # ---------------------------------------------------------------------------------------
    # assets

    def _assets(self, release_id: int) -> dict[str, dict[str, Any]]:
        items = self._paged(f"{self._base}/releases/{release_id}/assets", what="list assets")
        return {str(a["name"]): a for a in items if isinstance(a, dict)}

    def _digest_of(self, asset: Mapping[str, Any]) -> str:
        digest = asset.get("digest")
        if isinstance(digest, str) and digest.startswith("sha256:"):
            return digest[len("sha256:"):]
        # No digest from the server: download the asset and hash it.
        h = hashlib.sha256()
        r = self._call("GET", str(asset["url"]), what=f"download {asset['name']}",
                       headers={"Accept": "application/octet-stream"}, stream=True,
                       timeout=self.retry.upload_timeout)
        for chunk in r.iter_content(1 << 20):
            h.update(chunk)
        return h.hexdigest()

    def _matches(self, asset: Mapping[str, Any], size: int, sha256: str) -> bool:
        return (asset.get("state") == "uploaded" and asset.get("size") == size
                and self._digest_of(asset) == sha256)

    def _upload(self, upload_url: str, release: LocalRelease, name: str) -> dict[str, Any]:
        url = re.sub(r"\{[^}]*\}$", "", upload_url)
        suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
        with release.path(name).open("rb") as fh:
            r = self._once("POST", url, what=f"upload {name}", expect=(201,),
                           params={"name": name}, data=fh,
                           timeout=self.retry.upload_timeout,
                           headers={"Content-Type": CONTENT_TYPES.get(suffix,
                                                                      "application/octet-stream"),
                                    "Content-Length": str(release.size(name))})
        return dict(r.json())

    def _ensure_asset(self, draft: Mapping[str, Any], release: LocalRelease, name: str,
                      assets: dict[str, dict[str, Any]]) -> bool:
        """Make the draft hold ``name`` correctly. Returns True when it was uploaded now."""
        size, sha = release.size(name), release.files[name]
        for attempt in range(self.retry.attempts):
            have = assets.get(name)
            if have is not None:
                if self._matches(have, size, sha):
                    return attempt > 0
                self.log(f"{name}: the draft holds a broken copy (state "
                         f"{have.get('state')}, {have.get('size')} bytes); replacing it")
                self._call("DELETE", f"{self._base}/releases/assets/{have['id']}",
                           what=f"delete {name}", expect=(204, 404))
                assets.pop(name)
            try:
                got = self._upload(str(draft["upload_url"]), release, name)
                if self._matches(got, size, sha):
                    self.log(f"uploaded {name} ({size} bytes)")
                    return True
                self.log(f"{name}: uploaded copy does not match; trying again")
            except _Transient as exc:
                self.log(f"{exc}; looking at the draft before trying again")
                self._pause(attempt)
            except _Status as exc:
                if not exc.already_exists():
                    raise self._error(exc) from None
                self.log(f"{name}: already exists on the draft; checking it")
            assets.clear()
            assets.update(self._assets(int(draft["id"])))
        raise PublishError(f"GitHub: could not upload {name} after {self.retry.attempts} "
                           "tries", hint="run `kiln publish` again: it resumes")

    def _check_complete(self, assets: Mapping[str, Mapping[str, Any]],
                        release: LocalRelease) -> list[str]:
        problems = []
        for name in sorted(release.files):
            have = assets.get(name)
            if have is None:
                problems.append(f"{name}: missing")
            elif not self._matches(have, release.size(name), release.files[name]):
                problems.append(f"{name}: differs (state {have.get('state')}, "
                                f"{have.get('size')} bytes)")
        problems.extend(f"{n}: not part of the release" for n in sorted(assets)
                        if n not in release.files)
        return problems

    # ---------------------------------------------------------------------------------------

    def publish(self, release: LocalRelease) -> PublishResult:
        # The tag and the file names go into API paths and upload names: refused before the
        # first request when they are anything but a tag and plain file names.
        check_names(release)
        tag = self.tag_prefix + release.tag
        where = f"github://{self.owner}/{self.repo}"
        published = self._published(tag)
        if published is not None:
            problems = self._check_complete(self._assets(int(published["id"])), release)
            if problems:
                raise PublishError(
                    f"GitHub: release {tag} of {self.owner}/{self.repo} is already published "
                    "and differs from this release directory:\n"
                    + "\n".join(f"  - {p}" for p in problems),
                    hint="kiln never changes a published release; delete it on GitHub or "
                         "release under a new tag")
            self.log(f"{tag} is already published and complete")
            return PublishResult(destination=where, url=str(published.get("html_url", "")),
                                 uploaded=(), kept=tuple(sorted(release.files)),
                                 already_published=True)
        self._ensure_tag(release)
        draft = self._draft(release)
        release_id = int(draft["id"])
        assets = self._assets(release_id)
        for name in sorted(assets):
            if name not in release.files:
                self.log(f"deleting {name} from the draft: not part of this release")
                self._call("DELETE", f"{self._base}/releases/assets/{assets[name]['id']}",
                           what=f"delete {name}", expect=(204, 404))
                del assets[name]
        uploaded, kept = [], []
        for name in sorted(release.files):
            if self._ensure_asset(draft, release, name, assets):
                uploaded.append(name)
            else:
                kept.append(name)
        problems = self._check_complete(self._assets(release_id), release)
        if problems:
            raise PublishError("GitHub: the draft is incomplete after uploading:\n"
                               + "\n".join(f"  - {p}" for p in problems),
                               hint="run `kiln publish` again: it resumes")
        self._make_public(release_id, tag)
        final = self._published(tag)
        if final is None or self._check_complete(self._assets(int(final["id"])), release):
            raise PublishError(f"GitHub: release {tag} does not read back as published and "
                               "complete", hint="look at the release page; run `kiln publish` "
                                                "again to check it")
        self.log(f"published {tag}: {final.get('html_url', '')}")
        return PublishResult(destination=where, url=str(final.get("html_url", "")),
                             uploaded=tuple(uploaded), kept=tuple(kept),
                             already_published=False)

    def _make_public(self, release_id: int, tag: str) -> None:
        try:
            self._call("PATCH", f"{self._base}/releases/{release_id}",
                       what=f"publish {tag}", json={"draft": False})
        except PublishError:
            # A lost answer to a PATCH that went through, or another publisher was faster:
            # what counts is whether a complete release is published now (checked next).
            if self._published(tag) is None:
                raise
