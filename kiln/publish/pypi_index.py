"""Publish a release's wheels to PEP 503 package indexes (``pypi-index+http(s)://HOST/PATH``).

Each backend variant has an index of its own, as PyTorch's and llama-cpp-python's are laid out
(wheel tags cannot tell a CUDA build from a CPU build, and in one index ``pip install <name>``
would take ``0.0.N+cu124`` over ``0.0.N``: a local version label sorts higher; ``<name>`` is the
project's, kiln.toml's project.name). The URL names them in one of two ways:

- a root (``pypi-index+http://HOST/ROOT/``): CPU wheels (no local version label) go to
  ``ROOT/`` and are read from ``ROOT/simple/``; a GPU wheel ``<name>-0.0.N+cu124-...`` goes to
  ``ROOT/cu124/`` (``ROOT/cu124/simple/``);
- a template holding ``{variant}`` once, in the path or the host
  (``pypi-index+http://HOST/{variant}/``, ``pypi-index+https://{variant}.pypi.example/``):
  ``{variant}`` is the wheel's local version label, ``cpu`` for the CPU wheels.

A plain ``pypi-server run DIR`` serves one index, at its root, and takes uploads only there:
behind a root URL it has no ``ROOT/cu124/``. An index that is missing (an upload there answered
404, 405 or a redirect, or the server cannot be reached) is not a failure of the first wheel
that meets it: the variant indexes are published first and the CPU index last, every missing
index is collected, and the error lists them all with the template to pass instead. The CPU
wheels (what ``pip install <name>`` takes) are then not uploaded, and what was uploaded to the
indexes that exist stays valid: publishing again, to the same URL once the indexes exist or to
a template, finishes the release.

Uploads use the legacy upload API that twine speaks (and pypiserver, devpi, Artifactory,
Nexus and Warehouse accept): a multipart ``POST`` to the index URL with ``:action=file_upload``,
``protocol_version=1``, the core metadata read from the wheel's ``METADATA``, the digests and
the file as ``content``. Credentials come from ``TWINE_USERNAME`` / ``TWINE_PASSWORD`` as for
twine (none: an index that allows anonymous uploads, such as ``pypi-server -a . -P .``).

Idempotent: before uploading, each index's project page (``simple/<name>/``) is read and the
``#sha256=`` fragment of each link compared with the release's digest (the file is downloaded
and hashed where the page gives none). A wheel that is already there with the same digest is
kept, one with another digest is an error (a published file is never replaced), the rest are
uploaded. An upload refused because the file exists (an earlier upload whose answer was lost)
leads to a fresh look, not a failure. At the end every wheel is looked up again and checked.
Transient failures (connection errors, 5xx) are retried a bounded number of times.
"""

from __future__ import annotations

import hashlib
import html.parser
import re
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests

from kiln.errors import ConfigError, PublishError
from kiln.package.wheel import WheelName, index_path, parse_wheel_name
from kiln.publish.base import LocalRelease, PublishResult, check_names

__all__ = ["IndexFile", "PyPIIndexPublisher", "parse_project_page", "pypi_index_publisher"]

USER_ENV = "TWINE_USERNAME"
PASSWORD_ENV = "TWINE_PASSWORD"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# A variant index below the root (kiln.package.wheel's local version labels: "cu124", "rocm7.2").
_INDEX_RE = re.compile(r"[a-z0-9]+(?:\.[a-z0-9]+)*")
VARIANT_FIELD = "{variant}"
# What ``{variant}`` stands for in a template for the CPU wheels (no local version label).
CPU_VARIANT = "cpu"
# Answers to an upload that mean "no index takes uploads here" (pypiserver: 405 for a POST
# anywhere but its root; a redirect: the path is read as a project name).
_NO_INDEX = (301, 302, 303, 307, 308, 404, 405)


def _normalize(name: str) -> str:
    """PEP 503 name normalisation."""
    out = []
    for ch in name.lower():
        out.append("-" if ch in "-_." else ch)
    text = "".join(out)
    while "--" in text:
        text = text.replace("--", "-")
    return text


@dataclass(frozen=True, kw_only=True)
class IndexFile:
    """One file link of a PEP 503 project page."""

    filename: str
    url: str
    sha256: str | None


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href") or ""
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._href, "".join(self._text).strip()))
            self._href = None


def parse_project_page(text: str, page_url: str) -> dict[str, IndexFile]:
    """File name -> link of a PEP 503 project page; URLs made absolute against ``page_url``."""
    parser = _Links()
    parser.feed(text)
    out: dict[str, IndexFile] = {}
    for href, label in parser.links:
        url, _, fragment = href.partition("#")
        absolute = urljoin(page_url, url)
        filename = label or urlsplit(absolute).path.rsplit("/", 1)[-1]
        digest = None
        algo, _, value = fragment.partition("=")
        if algo == "sha256" and len(value) == 64:
            digest = value.lower()
        out[filename] = IndexFile(filename=filename, url=absolute, sha256=digest)
    return out


class _Transient(Exception):
    pass


class _NoIndex(Exception):
    """The index a wheel should go to is not there (``str``: what it answered)."""


@dataclass(frozen=True, kw_only=True)
class _Wheel:
    name: WheelName
    path: Path
    sha256: str
    index: str  # "" for the CPU index, else the variant ("cu124")


class PyPIIndexPublisher:
    def __init__(self, root: str, *, auth: tuple[str, str] | None,
                 log: Callable[[str], None] = lambda _m: None, attempts: int = 4,
                 backoff: float = 0.5, timeout: float = 60.0,
                 session: requests.Session | None = None) -> None:
        """``root``: the root of the index family, or a template holding ``{variant}``."""
        self.template = root if VARIANT_FIELD in root else None
        self.root = root.rstrip("/")
        self.log = log
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = "kiln-publish (legacy upload API, twine-compatible)"
        if auth is not None:
            self.session.auth = auth

    # urls

    def index_url(self, index: str) -> str:
        if self.template is not None:
            url = self.template.replace(VARIANT_FIELD, index or CPU_VARIANT)
            return url if url.endswith("/") else url + "/"
        return f"{self.root}/{index}/" if index else f"{self.root}/"

    def _below(self, url: str) -> bool:
        """``url`` is an index of this family (a variant label cannot climb out of it)."""
        if self.template is None:
            return url.startswith(self.root + "/")
        head, _, tail = self.template.partition(VARIANT_FIELD)
        return url.startswith(head) and url.rstrip("/").endswith(tail.rstrip("/"))

    def project_url(self, index: str, project: str) -> str:
        return f"{self.index_url(index)}simple/{_normalize(project)}/"

    # http with bounded retries

    def _request(self, method: str, url: str, what: str, **kwargs: object) -> requests.Response:
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            try:
                resp = self.session.request(method, url, timeout=self.timeout,
                                            allow_redirects=False, **kwargs)  # type: ignore[arg-type]
                if resp.status_code >= 500:
                    raise _Transient(f"HTTP {resp.status_code}")
                return resp
            except (requests.ConnectionError, requests.Timeout, _Transient) as exc:
                if attempt == self.attempts:
                    raise PublishError(f"{what}: {url}: {exc} (after {attempt} attempts)",
                                       hint="check that the index server is running and "
                                            "reachable, then publish again (it resumes)"
                                       ) from exc
                self.log(f"{what}: {exc}; retrying in {delay:g}s")
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def listing(self, index: str, project: str) -> dict[str, IndexFile]:
        """The files of ``project`` on one index (empty when the project is not there)."""
        url = self.project_url(index, project)
        for _ in range(3):  # a PEP 503 server may redirect to the normalised name
            resp = self._request("GET", url, "reading the index")
            if resp.status_code in (301, 302, 303, 307, 308):
                target = urljoin(url, resp.headers.get("Location", ""))
                if urlsplit(target).netloc != urlsplit(url).netloc:
                    # pypiserver sends unknown projects to its fallback (pypi.org): the
                    # project is not on this index.
                    return {}
                url = target
                continue
            if resp.status_code == 404:
                return {}
            if resp.status_code in (401, 403):
                raise PublishError(f"reading {url}: HTTP {resp.status_code}",
                                   hint=f"set {USER_ENV} and {PASSWORD_ENV} for this index")
            if resp.status_code != 200:
                raise _NoIndex(f"HTTP {resp.status_code} for {url}")
            return parse_project_page(resp.text, url)
        raise PublishError(f"reading {self.project_url(index, project)}: too many redirects")

    def _digest_of(self, f: IndexFile) -> str:
        if f.sha256 is not None:
            return f.sha256
        resp = self._request("GET", f.url, "downloading to compare", stream=True)
        if resp.status_code != 200:
            raise PublishError(f"downloading {f.url}: HTTP {resp.status_code}")
        h = hashlib.sha256()
        for chunk in resp.iter_content(1 << 20):
            h.update(chunk)
        return h.hexdigest()

    # upload

    def _form(self, w: _Wheel) -> list[tuple[str, str]]:
        data = w.path.read_bytes()
        meta = _metadata_of(w.path)
        fields: list[tuple[str, str]] = [
            (":action", "file_upload"),
            ("protocol_version", "1"),
            ("filetype", "bdist_wheel"),
            ("pyversion", w.name.python),
            ("sha256_digest", w.sha256),
            ("blake2_256_digest", hashlib.blake2b(data, digest_size=32).hexdigest()),
        ]
        single = {"Metadata-Version": "metadata_version", "Name": "name",
                  "Version": "version", "Summary": "summary", "License": "license",
                  "Requires-Python": "requires_python",
                  "Description-Content-Type": "description_content_type"}
        for header, field in single.items():
            value = meta.get(header)
            if value is not None:
                fields.append((field, str(value)))
        fields += [("classifiers", str(c)) for c in meta.get_all("Classifier") or []]
        if meta.body:
            fields.append(("description", meta.body))
        return fields

    def upload(self, w: _Wheel) -> bool:
        """Upload one wheel; ``False`` when the index already has it (a lost answer)."""
        url = self.index_url(w.index)
        with w.path.open("rb") as fh:
            resp = self._request("POST", url, f"uploading {w.name.filename}", data=self._form(w),
                                 files={"content": (w.name.filename, fh,
                                                    "application/octet-stream")})
        if resp.status_code in (200, 201):
            return True
        if resp.status_code in (400, 409) and "exist" in resp.text.lower():
            return False
        if resp.status_code in _NO_INDEX:
            raise _NoIndex(f"HTTP {resp.status_code} to an upload")
        if resp.status_code in (401, 403):
            raise PublishError(f"uploading {w.name.filename} to {url}: HTTP {resp.status_code}",
                               hint=f"set {USER_ENV} and {PASSWORD_ENV} to an account that "
                                    "may upload to this index")
        raise PublishError(f"uploading {w.name.filename} to {url}: HTTP {resp.status_code}: "
                           f"{resp.text.strip()[:300]}",
                           hint=f"check the index URL: uploads go to {url}, the index whose "
                                f"project pages are {url}simple/")

    # the publisher

    def _wheels(self, release: LocalRelease) -> list[_Wheel]:
        check_names(release)
        out = []
        for asset in release.manifest.assets:
            if asset.record.kind != "wheel":
                continue
            name = parse_wheel_name(asset.record.name)
            index = index_path(name.local)
            # The variant names a directory below the index root: one plain path segment.
            if index and not _INDEX_RE.fullmatch(index):
                raise PublishError(f"{asset.record.name}: local version label {index!r} cannot "
                                   "name an index below the root; nothing was published")
            if not self._below(self.index_url(index)):
                raise PublishError(f"{asset.record.name}: index {self.index_url(index)} is not "
                                   f"one of {self.root}")
            out.append(_Wheel(name=name, path=release.path(asset.record.name),
                              sha256=asset.record.sha256, index=index))
        return sorted(out, key=lambda w: (w.index, w.name.filename))

    def publish(self, release: LocalRelease) -> PublishResult:
        wheels = self._wheels(release)
        if not wheels:
            raise PublishError(f"release {release.tag} in {release.directory} holds no wheels",
                               hint="build the entries with wheels (kiln build makes one per "
                                    "entry with a wheel platform tag), then release again")
        groups: dict[tuple[str, str], list[_Wheel]] = {}
        for w in wheels:
            groups.setdefault((w.index, w.name.distribution), []).append(w)
        uploaded: list[str] = []
        kept: list[str] = []
        missing: dict[str, str] = {}  # index URL -> what it answered
        # The variant indexes first, the CPU index (what a plain `pip install <name>` reads)
        # last, and only when every variant index took its wheels.
        for (index, project), members in sorted(groups.items(), key=lambda g: (not g[0][0],
                                                                              g[0])):
            if not index and missing:
                break
            try:
                self._publish_group(index, project, members, uploaded, kept)
            except _NoIndex as exc:
                missing[self.index_url(index)] = str(exc)
            except PublishError as exc:
                if index and isinstance(exc.__cause__, (requests.ConnectionError,
                                                        requests.Timeout, _Transient)):
                    missing[self.index_url(index)] = f"not reachable: {exc.__cause__}"
                else:
                    raise
        if missing:
            raise self._missing_error(wheels, missing, uploaded)
        return PublishResult(destination=f"pypi-index+{self.template or self.root}",
                             url=f"{self.index_url('')}simple/", uploaded=tuple(uploaded),
                             kept=tuple(kept), already_published=not uploaded)

    def _publish_group(self, index: str, project: str, members: Sequence[_Wheel],
                       uploaded: list[str], kept: list[str]) -> None:
        present = self.listing(index, project)
        for w in members:
            have = present.get(w.name.filename)
            if have is not None:
                self._check_same(w, have)
                kept.append(w.name.filename)
                self.log(f"{w.name.filename} is already on {self.index_url(index)}")
                continue
            if self.upload(w):
                uploaded.append(w.name.filename)
                self.log(f"uploaded {w.name.filename} to {self.index_url(index)}")
            else:
                again = self.listing(index, project).get(w.name.filename)
                if again is None:
                    raise PublishError(f"{self.index_url(index)} refused "
                                       f"{w.name.filename} as existing, but does not "
                                       "list it", hint="check the index server's logs")
                self._check_same(w, again)
                kept.append(w.name.filename)
        self._verify(index, project, members)

    def _missing_error(self, wheels: Sequence[_Wheel], missing: Mapping[str, str],
                       uploaded: Sequence[str]) -> PublishError:
        lines = [f"  {url} ({why}), for "
                 + ", ".join(w.name.filename for w in wheels if self.index_url(w.index) == url)
                 for url, why in sorted(missing.items())]
        cpu = [w for w in wheels if not w.index]
        done = (f"; uploaded to the indexes that exist: {', '.join(uploaded)}" if uploaded
                else "; nothing was uploaded")
        if cpu and self.index_url("") not in missing:
            done += f"; the CPU wheels were not uploaded to {self.index_url('')} either"
        if self.template is None:
            example = f"pypi-index+{self.root}/{VARIANT_FIELD}/"
            hint = (f"a plain `pypi-server run DIR` serves one index, at its root. Serve one "
                    "index per backend variant (a pypi-server per variant behind a reverse "
                    f"proxy, or a server with several indexes) and pass --to '{example}': "
                    f"the CPU wheels then go to {self.root}/{CPU_VARIANT}/, the "
                    + ", ".join(f"{v} wheels to {self.root}/{v}/"
                                for v in sorted({w.index for w in wheels if w.index}))
                    + "; or make the indexes listed above exist. Publishing again finishes "
                      "the release")
        else:
            hint = (f"make the indexes listed above exist (the template {self.template} "
                    "names them), then publish again: it finishes the release")
        return PublishError(f"{len(missing)} package index(es) that the release's wheels go "
                            "to are missing:\n" + "\n".join(lines) + done, hint=hint)

    def _check_same(self, w: _Wheel, have: IndexFile) -> None:
        if self._digest_of(have) != w.sha256:
            raise PublishError(
                f"{have.url} already exists with another sha256 than the release's "
                f"{w.name.filename}",
                hint="a published file is never replaced: release under a new tag, or "
                     "remove the file from the index by hand if it was a mistake")

    def _verify(self, index: str, project: str, members: Sequence[_Wheel]) -> None:
        present = self.listing(index, project)
        for w in members:
            have = present.get(w.name.filename)
            if have is None:
                raise PublishError(f"{w.name.filename} was uploaded but "
                                   f"{self.project_url(index, project)} does not list it",
                                   hint="check the index server's logs and publish again")
            self._check_same(w, have)


@dataclass(frozen=True)
class _Meta:
    """The core metadata of a wheel: its headers and the description (the body)."""

    message: Message
    body: str

    def get(self, key: str) -> str | None:
        value = self.message.get(key)
        return None if value is None else str(value)

    def get_all(self, key: str) -> list[str]:
        return [str(v) for v in self.message.get_all(key) or []]


def _metadata_of(wheel: Path) -> _Meta:
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist()
                 if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        if len(names) != 1:
            raise PublishError(f"{wheel.name}: no single *.dist-info/METADATA",
                               hint="rebuild the wheel with kiln")
        raw = zf.read(names[0])
    _, _, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
    return _Meta(message=BytesHeaderParser().parsebytes(raw),
                 body=body.decode("utf-8", "replace"))


def pypi_index_publisher(target: str, *, secure: bool, env: Mapping[str, str],
                         log: Callable[[str], None]) -> PyPIIndexPublisher:
    """Parse ``HOST[:PORT][/PATH]`` (what follows ``pypi-index+http(s)://``) and read the
    credentials from ``env`` (the CLI edge)."""
    scheme = "https" if secure else "http"
    root = f"{scheme}://{target}"
    if root.count(VARIANT_FIELD) > 1 or "{" in root.replace(VARIANT_FIELD, "") \
            or "}" in root.replace(VARIANT_FIELD, ""):
        raise ConfigError(f"pypi-index+{root}: a template holds {VARIANT_FIELD} once and no "
                          "other braces",
                          hint=f"e.g. pypi-index+{scheme}://HOST/{VARIANT_FIELD}/")
    # A variant label in place of the field, so that the template parses as the URLs it makes.
    parts = urlsplit(root.replace(VARIANT_FIELD, "cu124"))
    if not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(f"pypi-index+{root}: expected pypi-index+{scheme}://HOST[:PORT][/PATH]",
                          hint="name the index root, e.g. pypi-index+http://127.0.0.1:8080/, "
                               f"or a template, e.g. pypi-index+http://127.0.0.1:8080/"
                               f"{VARIANT_FIELD}/")
    user = env.get(USER_ENV, "")
    password = env.get(PASSWORD_ENV, "")
    auth = (user, password) if (user or password) else None
    if auth is not None and not secure and parts.hostname not in LOOPBACK:
        raise ConfigError(f"pypi-index+{root}: refusing to send {USER_ENV}/{PASSWORD_ENV} "
                          "over plain http to another machine",
                          hint=f"use pypi-index+https://{target}")
    return PyPIIndexPublisher(root, auth=auth, log=log)
