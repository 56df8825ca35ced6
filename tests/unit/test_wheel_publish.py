"""The PEP 503 publisher against an in-memory index (no server, no network): per-variant index
paths, idempotent re-runs, a lost upload answer, a conflicting file, the legacy upload form,
PEP 503 page parsing and URL parsing."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from ember_project import EMBER

from kiln.errors import ConfigError, PublishError
from kiln.matrix import load_matrix
from kiln.package.records import Tool, Verification, record_for
from kiln.package.wheel import wheel_files, wheel_target, write_wheel
from kiln.publish import LocalRelease, PublishOptions, publisher_for
from kiln.publish.pypi_index import PyPIIndexPublisher, parse_project_page, pypi_index_publisher
from kiln.release.manifest import ReleaseAsset, ReleaseManifest

REPO = Path(__file__).resolve().parents[2]
MATRIX = load_matrix(REPO / "matrix")
ROOT = "http://127.0.0.1:8080"


@dataclass
class Response:
    status_code: int
    text: str = ""
    content: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    def iter_content(self, _size: int) -> Iterator[bytes]:
        yield self.content


class FakeIndex:
    """pypiserver's behaviour, per index path: simple pages with sha256 fragments, 409 on an
    existing file, 404 for an unknown project."""

    def __init__(self) -> None:
        self.files: dict[str, dict[str, bytes]] = {}
        self.headers: dict[str, str] = {}
        self.auth: Any = None
        self.posts: list[tuple[str, list[tuple[str, str]]]] = []
        self.lose_next_answer = False
        self.failures = 0

    def request(self, method: str, url: str, **kw: Any) -> Response:
        if self.failures:
            self.failures -= 1
            raise requests.ConnectionError("connection reset")
        assert url.startswith(ROOT + "/")
        path = url[len(ROOT) + 1:]
        parts = path.split("/")
        index = ""
        if parts[0] not in ("", "simple", "packages"):
            index, parts = parts[0], parts[1:]
        store = self.files.setdefault(index, {})
        if method == "POST":
            assert parts == [""]
            name, fh, _ = kw["files"]["content"]
            self.posts.append((index, kw["data"]))
            if name in store:
                return Response(409, f"Package {name!r} already exists!")
            store[name] = fh.read()
            if self.lose_next_answer:
                self.lose_next_answer = False
                raise requests.ConnectionError("answer lost")
            return Response(200)
        if parts[:2] == ["simple", "ember"]:
            if not store:
                return Response(404, "Not Found")
            links = "".join(f'<a href="../../packages/{n}#sha256='
                            f'{hashlib.sha256(d).hexdigest()}">{n}</a><br>'
                            for n, d in sorted(store.items()))
            return Response(200, f"<html><body>{links}</body></html>")
        if parts[0] == "packages":
            return Response(200, content=store[parts[1]])
        return Response(404)


def make_release(tmp_path: Path, entries: tuple[str, ...]) -> LocalRelease:
    stage = tmp_path / "stage"
    (stage / "lib").mkdir(parents=True)
    (stage / "bin").mkdir()
    (stage / "lib" / "libember.so").write_bytes(b"\x7fELF fake")
    (stage / "bin" / "ember.dll").write_bytes(b"MZ fake")
    (stage / "LICENSE").write_text("MIT\n")
    binding = tmp_path / "ember"
    binding.mkdir()
    (binding / "__init__.py").write_text("")
    directory = tmp_path / "release"
    directory.mkdir()
    assets = []
    for entry_id in entries:
        e = MATRIX.get(entry_id)
        target = wheel_target(e, EMBER)
        assert target is not None
        path = directory / target.filename(9)
        write_wheel(wheel_files(e, stage, binding=binding, build_number=9, commit="c" * 40,
                                project=EMBER),
                    path, 1767323045)
        rec = record_for(e, path, kind="wheel", build_number=9, commit="c" * 40,
                         toolchain=(Tool(name="zig", version="0.17.1"),),
                         verification=Verification(method="auditwheel", ok=True, detail=""))
        assets.append(ReleaseAsset(record=rec, url=f"https://example.invalid/{path.name}"))
    manifest = ReleaseManifest(project="ember", tag="b9", build_number=9, commit="c" * 40,
                               date="2026-01-02T03:04:05Z", base_url="https://example.invalid/",
                               assets=tuple(assets), missing=(), disabled=())
    return LocalRelease(directory=directory, manifest=manifest,
                        files={a.record.name: a.record.sha256 for a in assets}, notes="")


def publisher(fake: FakeIndex) -> PyPIIndexPublisher:
    return PyPIIndexPublisher(ROOT + "/", auth=None, session=fake,  # type: ignore[arg-type]
                              backoff=0.0)


def test_variants_go_to_their_own_index_and_a_rerun_uploads_nothing(tmp_path: Path) -> None:
    release = make_release(tmp_path, ("ubuntu-x64", "ubuntu-cuda-12.4-x64",
                                      "win-vulkan-x64"))
    fake = FakeIndex()
    first = publisher(fake).publish(release)
    assert len(first.uploaded) == 3 and not first.already_published
    assert sorted(fake.files[""]) == [
        "ember-0.0.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"]
    assert sorted(fake.files["cu124"]) == [
        "ember-0.0.9+cu124-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"]
    assert sorted(fake.files["vulkan"]) == ["ember-0.0.9+vulkan-py3-none-win_amd64.whl"]
    assert first.url == f"{ROOT}/simple/"
    posts = len(fake.posts)
    again = publisher(fake).publish(release)
    assert again.already_published and len(again.kept) == 3 and len(fake.posts) == posts


def test_upload_form_is_twine_compatible(tmp_path: Path) -> None:
    release = make_release(tmp_path, ("ubuntu-x64",))
    fake = FakeIndex()
    publisher(fake).publish(release)
    _, form = fake.posts[0]
    fields = dict(form)
    assert fields[":action"] == "file_upload" and fields["protocol_version"] == "1"
    assert fields["name"] == "ember" and fields["version"] == "0.0.9"
    assert fields["filetype"] == "bdist_wheel" and fields["pyversion"] == "py3"
    assert fields["metadata_version"] == "2.1"
    assert fields["sha256_digest"] == release.manifest.assets[0].record.sha256
    assert "# ember (ubuntu-x64)" in fields["description"]


def test_a_lost_answer_is_not_a_duplicate(tmp_path: Path) -> None:
    release = make_release(tmp_path, ("ubuntu-x64",))
    fake = FakeIndex()
    fake.lose_next_answer = True
    result = publisher(fake).publish(release)
    assert len(fake.files[""]) == 1
    assert result.kept == tuple(fake.files[""]) and not result.uploaded


def test_transient_failures_are_retried_then_reported(tmp_path: Path) -> None:
    release = make_release(tmp_path, ("ubuntu-x64",))
    fake = FakeIndex()
    fake.failures = 2
    assert len(publisher(fake).publish(release).uploaded) == 1
    fake = FakeIndex()
    fake.failures = 100
    with pytest.raises(PublishError, match="after 4 attempts"):
        publisher(fake).publish(release)


def test_another_file_under_the_same_name_is_refused(tmp_path: Path) -> None:
    release = make_release(tmp_path, ("ubuntu-x64",))
    fake = FakeIndex()
    name = release.manifest.assets[0].record.name
    fake.files[""] = {name: b"something else"}
    with pytest.raises(PublishError, match="another sha256"):
        publisher(fake).publish(release)
    assert fake.files[""][name] == b"something else"


def test_a_release_without_wheels_is_an_error(tmp_path: Path) -> None:
    release = make_release(tmp_path, ())
    with pytest.raises(PublishError, match="holds no wheels"):
        publisher(FakeIndex()).publish(release)


def test_project_page_parsing() -> None:
    page = ('<a href="../../packages/ember-1-py3-none-any.whl#sha256=' + "A" * 64
            + '">ember-1-py3-none-any.whl</a>'
            '<a href="https://files.example/ember-2-py3-none-any.whl">ember-2-py3-none-any.whl'
            '</a>')
    files = parse_project_page(page, "http://h/cu124/simple/ember/")
    one = files["ember-1-py3-none-any.whl"]
    assert one.url == "http://h/cu124/packages/ember-1-py3-none-any.whl"
    assert one.sha256 == "a" * 64
    assert files["ember-2-py3-none-any.whl"].sha256 is None


def test_urls_and_credentials() -> None:
    p = publisher_for("pypi-index+http://127.0.0.1:8080/", PublishOptions(env={}))
    assert isinstance(p, PyPIIndexPublisher) and p.root == "http://127.0.0.1:8080"
    assert p.index_url("cu124") == "http://127.0.0.1:8080/cu124/"
    assert p.project_url("", "Ember_Py") == "http://127.0.0.1:8080/simple/ember-py/"
    creds = {"TWINE_USERNAME": "u", "TWINE_PASSWORD": "p"}
    secure = pypi_index_publisher("pypi.example/ember", secure=True, env=creds,
                                  log=lambda _m: None)
    assert secure.session.auth == ("u", "p")
    with pytest.raises(ConfigError, match="plain http"):
        pypi_index_publisher("pypi.example/", secure=False, env=creds, log=lambda _m: None)
    with pytest.raises(ConfigError):
        pypi_index_publisher("", secure=True, env={}, log=lambda _m: None)
