"""A stand-in for the GitHub REST API (releases, assets, git tags), on 127.0.0.1 only.

It speaks the real protocol as far as ``kiln publish`` uses it: the same paths, status codes
and JSON shapes, a separate uploads host (two ports here) named by each release's
``upload_url`` template, ``Link`` header pagination with ``per_page``/``page``, drafts that
``releases/tags/{tag}`` does not return, assets left in state ``starter`` by an interrupted
upload, and ``422 Validation Failed`` with ``errors: [{resource, code: already_exists,
field}]`` when an asset name is taken or a tag already has a published release.

Fault switches (each used once, then cleared):

- ``fail(method, path_regex, status)``: answer the next matching request with ``status``.
- ``drop_upload(name, after)``: read ``after`` bytes of the upload of ``name``, then close the
  connection without an answer (the asset stays ``starter``).
- ``lose_response(method, path_regex)``: carry out the next matching request, then close the
  connection without an answer.
- ``hang_upload(name, after)``: read ``after`` bytes, set ``hanging``, wait for
  ``release_hang``, then drop the connection (used to kill the client mid-upload).

``published_snapshots`` records the assets of a release at each moment it became published, and
``changes_while_published`` every change to the assets of a published release, so tests can
assert that nothing partial was ever visible as published.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

DOCS = "https://docs.github.com/rest"
STAMP = "2026-01-01T00:00:00Z"


@dataclass
class Asset:
    id: int
    release_id: int
    name: str
    label: str
    content_type: str
    state: str = "starter"
    data: bytes = b""


@dataclass
class Release:
    id: int
    tag_name: str
    target_commitish: str
    name: str
    body: str
    draft: bool
    prerelease: bool
    assets: dict[int, Asset] = field(default_factory=dict)
    published_at: str | None = None


class _Drop(Exception):
    """Close the connection without an answer."""


class StandIn:
    def __init__(self, owner: str, repo: str, token: str) -> None:
        self.owner, self.repo, self.token = owner, repo, token
        self.lock = threading.RLock()
        self.releases: dict[int, Release] = {}
        self.refs: dict[str, tuple[str, str]] = {}  # tag -> (object type, sha)
        self.tag_objects: dict[str, dict[str, Any]] = {}
        self.commits: set[str] = set()
        self.next_id = 1000
        self.max_per_page = 100
        self.send_digest = True
        self.requests: list[tuple[str, str, int]] = []
        self.auth_seen: list[str] = []
        self.published_snapshots: list[dict[str, tuple[str, int, str]]] = []
        self.changes_while_published: list[str] = []
        self._faults: list[tuple[str, str, Any]] = []
        self.hanging = threading.Event()
        self.release_hang = threading.Event()
        self.api = self._server()
        self.uploads = self._server()

    # -- lifecycle --------------------------------------------------------------------------

    def _server(self) -> ThreadingHTTPServer:
        standin = self

        class Handler(_Handler):
            owner = standin

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        return server

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api.server_address[1]}"

    @property
    def uploads_url(self) -> str:
        return f"http://127.0.0.1:{self.uploads.server_address[1]}"

    @contextmanager
    def running(self) -> Iterator[StandIn]:
        threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05},
                                    daemon=True) for s in (self.api, self.uploads)]
        for t in threads:
            t.start()
        try:
            yield self
        finally:
            self.release_hang.set()
            for s in (self.api, self.uploads):
                s.shutdown()
                s.server_close()

    # -- fault switches ---------------------------------------------------------------------

    def fail(self, method: str, path: str, status: int = 500) -> None:
        self._faults.append(("fail", f"{method} {path}", status))

    def drop_upload(self, name: str, after: int) -> None:
        self._faults.append(("drop", name, after))

    def hang_upload(self, name: str, after: int) -> None:
        self._faults.append(("hang", name, after))

    def lose_response(self, method: str, path: str) -> None:
        self._faults.append(("lose", f"{method} {path}", None))

    @property
    def pending_faults(self) -> list[tuple[str, str, Any]]:
        """Faults armed but not yet triggered (a test asserts its fault really happened)."""
        return list(self._faults)

    def take(self, kind: str, key: str) -> Any:
        with self.lock:
            for i, (k, pattern, arg) in enumerate(self._faults):
                if k == kind and (re.fullmatch(pattern, key) if kind in ("fail", "lose")
                                  else pattern == key):
                    del self._faults[i]
                    return arg if arg is not None else True
        return None

    # -- helpers for tests ------------------------------------------------------------------

    def add_release(self, tag: str, *, draft: bool = False) -> Release:
        with self.lock:
            self.next_id += 1
            r = Release(id=self.next_id, tag_name=tag, target_commitish="main",
                        name=tag, body="", draft=draft, prerelease=False,
                        published_at=None if draft else STAMP)
            self.releases[r.id] = r
            return r

    def releases_of(self, tag: str) -> list[Release]:
        return [r for r in self.releases.values() if r.tag_name == tag]

    def snapshot(self, release: Release) -> dict[str, tuple[str, int, str]]:
        return {a.name: (a.state, len(a.data), hashlib.sha256(a.data).hexdigest())
                for a in release.assets.values()}

    # -- JSON shapes ------------------------------------------------------------------------

    def asset_json(self, a: Asset) -> dict[str, Any]:
        rel = self.releases[a.release_id]
        out: dict[str, Any] = {
            "url": f"{self.api_url}/repos/{self.owner}/{self.repo}/releases/assets/{a.id}",
            "browser_download_url": f"https://github.com/{self.owner}/{self.repo}/releases/"
                                    f"download/{rel.tag_name}/{quote(a.name)}",
            "id": a.id, "node_id": f"RA_{a.id}", "name": a.name, "label": a.label,
            "state": a.state, "content_type": a.content_type, "size": len(a.data),
            "download_count": 0, "created_at": STAMP, "updated_at": STAMP,
            "uploader": {"login": "kiln-bot", "id": 1, "type": "Bot"},
        }
        if self.send_digest:
            out["digest"] = ("sha256:" + hashlib.sha256(a.data).hexdigest()
                             if a.state == "uploaded" else None)
        return out

    def release_json(self, r: Release) -> dict[str, Any]:
        base = f"{self.api_url}/repos/{self.owner}/{self.repo}"
        tag_part = r.tag_name if not r.draft else f"untagged-{r.id:x}"
        return {
            "url": f"{base}/releases/{r.id}",
            "html_url": f"https://github.com/{self.owner}/{self.repo}/releases/tag/{tag_part}",
            "assets_url": f"{base}/releases/{r.id}/assets",
            "upload_url": f"{self.uploads_url}/repos/{self.owner}/{self.repo}/releases/"
                          f"{r.id}/assets{{?name,label}}",
            "tarball_url": f"{base}/tarball/{r.tag_name}",
            "zipball_url": f"{base}/zipball/{r.tag_name}",
            "id": r.id, "node_id": f"RE_{r.id}", "tag_name": r.tag_name,
            "target_commitish": r.target_commitish, "name": r.name, "body": r.body,
            "draft": r.draft, "prerelease": r.prerelease, "created_at": STAMP,
            "published_at": r.published_at,
            "author": {"login": "kiln-bot", "id": 1, "type": "Bot"},
            "assets": [self.asset_json(a) for a in sorted(r.assets.values(),
                                                          key=lambda a: a.id)],
        }


def _error(status: int, message: str, doc: str, errors: list[dict[str, str]] | None = None
           ) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {"message": message, "documentation_url": f"{DOCS}/{doc}",
                            "status": str(status)}
    if errors is not None:
        body["errors"] = errors
    return status, body


NOT_FOUND = _error(404, "Not Found", "releases/releases")


class _Handler(BaseHTTPRequestHandler):
    owner: StandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plumbing ---------------------------------------------------------------------------

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None,
              raw: bytes | None = None) -> None:
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if raw is not None
                         else "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-GitHub-Api-Version-Selected", "2022-11-28")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        with self.owner.lock:
            self.owner.requests.append((self.command, self.path, status))

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        with self.owner.lock:
            self.owner.requests.append((self.command, self.path, 0))

    def _body(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        return json.loads(raw) if raw else {}

    def _authorized(self) -> bool:
        auth = self.headers.get("Authorization", "")
        self.owner.auth_seen.append(auth)
        return auth in (f"Bearer {self.owner.token}", f"token {self.owner.token}")

    def _dispatch(self) -> None:
        st = self.owner
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        key = f"{self.command} {path}"
        if path.startswith("/download/"):
            return self._download(path)
        if not self._authorized():
            self._discard()
            return self._send(*_error(401, "Bad credentials", "overview"))
        status = st.take("fail", key)
        if status:
            self._discard()
            return self._send(*_error(int(status), "Server Error", "overview"))
        lose = st.take("lose", key)
        prefix = f"/repos/{st.owner}/{st.repo}"
        if not path.startswith(prefix + "/"):
            self._discard()
            return self._send(*NOT_FOUND)
        route = path[len(prefix):]
        try:
            result = self._route(self.command, route, query)
        except _Drop:
            return self._drop()
        if lose:
            return self._drop()
        if result is not None:
            self._send(*result)

    def _discard(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        while n > 0:
            chunk = self.rfile.read(min(n, 65536))
            if not chunk:
                break
            n -= len(chunk)

    do_GET = do_POST = do_PATCH = do_DELETE = _dispatch

    # -- pagination -------------------------------------------------------------------------

    def _page(self, items: list[Any], query: dict[str, list[str]], route: str
              ) -> tuple[int, Any, dict[str, str]]:
        per_page = min(int(query.get("per_page", ["30"])[0]), 100, self.owner.max_per_page)
        page = int(query.get("page", ["1"])[0])
        last = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page: page * per_page]
        base = f"{self.owner.api_url}/repos/{self.owner.owner}/{self.owner.repo}{route}"
        links = []
        if page < last:
            links.append(f'<{base}?per_page={per_page}&page={page + 1}>; rel="next"')
            links.append(f'<{base}?per_page={per_page}&page={last}>; rel="last"')
        if page > 1:
            links.append(f'<{base}?per_page={per_page}&page={page - 1}>; rel="prev"')
            links.append(f'<{base}?per_page={per_page}&page=1>; rel="first"')
        return 200, chunk, ({"Link": ", ".join(links)} if links else {})

    # -- routes -----------------------------------------------------------------------------

    def _route(self, method: str, route: str, query: dict[str, list[str]]) -> Any:
        st = self.owner
        m = re.fullmatch(r"/releases/(\d+)/assets", route)
        if m and method == "POST":
            return self._upload(int(m.group(1)), query)
        body = self._body() if method in ("POST", "PATCH") else {}
        with st.lock:
            if route == "/releases" and method == "GET":
                items = sorted(st.releases.values(), key=lambda r: -r.id)
                status, page, headers = self._page([st.release_json(r) for r in items],
                                                   query, route)
                return status, page, headers
            if route == "/releases" and method == "POST":
                return self._create(body)
            m = re.fullmatch(r"/releases/tags/(.+)", route)
            if m and method == "GET":
                for r in st.releases.values():
                    if r.tag_name == m.group(1) and not r.draft:
                        return 200, st.release_json(r)
                return NOT_FOUND
            m = re.fullmatch(r"/releases/(\d+)", route)
            if m:
                r = st.releases.get(int(m.group(1)))
                if r is None:
                    return NOT_FOUND
                if method == "GET":
                    return 200, st.release_json(r)
                if method == "DELETE":
                    if not r.draft:
                        st.changes_while_published.append(f"delete release {r.id}")
                    del st.releases[r.id]
                    return 204, None
                if method == "PATCH":
                    return self._update(r, body)
            m = re.fullmatch(r"/releases/(\d+)/assets", route)
            if m and method == "GET":
                r = st.releases.get(int(m.group(1)))
                if r is None:
                    return NOT_FOUND
                items = [st.asset_json(a) for a in sorted(r.assets.values(),
                                                          key=lambda a: a.id)]
                return self._page(items, query, route)
            m = re.fullmatch(r"/releases/assets/(\d+)", route)
            if m:
                asset = self._find_asset(int(m.group(1)))
                if asset is None:
                    return NOT_FOUND
                if method == "GET":
                    if "application/octet-stream" in self.headers.get("Accept", ""):
                        return 302, {}, {"Location": f"{st.uploads_url}/download/{asset.id}"}
                    return 200, st.asset_json(asset)
                if method == "DELETE":
                    rel = st.releases[asset.release_id]
                    if not rel.draft:
                        st.changes_while_published.append(f"delete {asset.name}")
                    del rel.assets[asset.id]
                    return 204, None
            m = re.fullmatch(r"/git/ref/tags/(.+)", route)
            if m and method == "GET":
                ref = st.refs.get(m.group(1))
                if ref is None:
                    return _error(404, "Not Found", "git/refs#get-a-reference")
                return 200, {"ref": f"refs/tags/{m.group(1)}", "node_id": "REF_1",
                             "url": f"{st.api_url}/repos/{st.owner}/{st.repo}/git/refs/tags/"
                                    f"{m.group(1)}",
                             "object": {"type": ref[0], "sha": ref[1], "url": ""}}
            m = re.fullmatch(r"/git/tags/([0-9a-f]{40})", route)
            if m and method == "GET":
                obj = st.tag_objects.get(m.group(1))
                return (200, obj) if obj else _error(404, "Not Found", "git/tags")
            if route == "/git/tags" and method == "POST":
                if body.get("object") not in st.commits:
                    return _error(422, "Object does not exist", "git/tags")
                sha = hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()
                st.tag_objects[sha] = {"sha": sha, "tag": body["tag"],
                                       "message": body.get("message", ""),
                                       "object": {"sha": body["object"], "type": "commit"},
                                       "tagger": {"name": "kiln-bot", "date": STAMP}}
                return 201, st.tag_objects[sha]
            if route == "/git/refs" and method == "POST":
                tag = str(body.get("ref", "")).removeprefix("refs/tags/")
                if tag in st.refs:
                    return _error(422, "Reference already exists", "git/refs")
                sha = str(body.get("sha"))
                kind = "tag" if sha in st.tag_objects else "commit"
                st.refs[tag] = (kind, sha)
                return 201, {"ref": f"refs/tags/{tag}", "object": {"type": kind, "sha": sha}}
        return NOT_FOUND

    def _find_asset(self, asset_id: int) -> Asset | None:
        for r in self.owner.releases.values():
            if asset_id in r.assets:
                return r.assets[asset_id]
        return None

    def _published_conflict(self, tag: str, but: int | None) -> bool:
        return any(r.tag_name == tag and not r.draft and r.id != but
                   for r in self.owner.releases.values())

    def _publish(self, r: Release) -> None:
        st = self.owner
        r.draft = False
        r.published_at = STAMP
        if r.tag_name not in st.refs:  # GitHub makes a lightweight tag at target_commitish
            st.refs[r.tag_name] = ("commit", r.target_commitish)
        st.published_snapshots.append(st.snapshot(r))

    def _create(self, body: dict[str, Any]) -> Any:
        st = self.owner
        tag = body.get("tag_name")
        if not tag:
            return _error(422, "Validation Failed", "releases/releases#create-a-release",
                          [{"resource": "Release", "code": "missing_field",
                            "field": "tag_name"}])
        draft = bool(body.get("draft", False))
        if not draft and self._published_conflict(tag, None):
            return _error(422, "Validation Failed", "releases/releases#create-a-release",
                          [{"resource": "Release", "code": "already_exists",
                            "field": "tag_name"}])
        st.next_id += 1
        r = Release(id=st.next_id, tag_name=tag,
                    target_commitish=body.get("target_commitish", "main"),
                    name=body.get("name") or tag, body=body.get("body", ""), draft=True,
                    prerelease=bool(body.get("prerelease", False)))
        st.releases[r.id] = r
        if not draft:
            self._publish(r)
        return 201, st.release_json(r)

    def _update(self, r: Release, body: dict[str, Any]) -> Any:
        st = self.owner
        for key in ("name", "body", "tag_name", "target_commitish"):
            if key in body:
                setattr(r, key, body[key])
        if "prerelease" in body:
            r.prerelease = bool(body["prerelease"])
        if body.get("draft") is False and r.draft:
            if self._published_conflict(r.tag_name, r.id):
                return _error(422, "Validation Failed", "releases/releases#update-a-release",
                              [{"resource": "Release", "code": "already_exists",
                                "field": "tag_name"}])
            self._publish(r)
        return 200, st.release_json(r)

    def _upload(self, release_id: int, query: dict[str, list[str]]) -> Any:
        st = self.owner
        name = query.get("name", [""])[0]
        length = self.headers.get("Content-Length")
        if length is None:
            return _error(411, "Length Required", "releases/assets#upload-a-release-asset")
        total = int(length)
        with st.lock:
            r = st.releases.get(release_id)
            if r is None:
                self._discard()
                return NOT_FOUND
            if not name:
                self._discard()
                return _error(422, "Validation Failed", "releases/assets",
                              [{"resource": "ReleaseAsset", "code": "missing_field",
                                "field": "name"}])
            if any(a.name == name for a in r.assets.values()):
                taken = True
            else:
                taken = False
                st.next_id += 1
                asset = Asset(id=st.next_id, release_id=r.id, name=name,
                              label=query.get("label", [""])[0],
                              content_type=self.headers.get("Content-Type",
                                                            "application/octet-stream"))
                r.assets[asset.id] = asset
                if not r.draft:
                    st.changes_while_published.append(f"upload {name}")
        if taken:
            self._discard()
            return _error(422, "Validation Failed",
                          "releases/assets#upload-a-release-asset",
                          [{"resource": "ReleaseAsset", "code": "already_exists",
                            "field": "name"}])
        drop_after = st.take("drop", name)
        hang_after = st.take("hang", name)
        cut = drop_after if drop_after is not None else hang_after
        received = bytearray()
        while len(received) < total:
            want = total - len(received)
            if cut is not None:
                want = min(want, int(cut) - len(received))
                if want <= 0:
                    break
            chunk = self.rfile.read(min(want, 65536))
            if not chunk:
                break
            received.extend(chunk)
            with st.lock:
                asset.data = bytes(received)
        if hang_after is not None:
            st.hanging.set()
            st.release_hang.wait(60)
            raise _Drop
        if len(received) < total:
            raise _Drop  # a connection drop mid-upload: the asset stays "starter"
        with st.lock:
            asset.data = bytes(received)
            asset.state = "uploaded"
            return 201, st.asset_json(asset)

    def _download(self, path: str) -> None:
        m = re.fullmatch(r"/download/(\d+)", path)
        asset = self._find_asset(int(m.group(1))) if m else None
        if asset is None or asset.state != "uploaded":
            return self._send(*NOT_FOUND)
        # The storage host gets no token: requests drops it when a redirect changes host/port.
        self._send(200, None, raw=asset.data)
