"""``kiln publish`` of hostile release directories: a manifest whose tag or asset names would
lead the publisher out of the mirror, names that disagree with the signed identity, and a
mirror with a planted link. Each is refused with the documented exit code, naming the field
and value, and the mirror (and its parent) are byte-for-byte unchanged.

The hostile directories are signed with the project's own key (the SHA256SUMS is rewritten and
re-signed), so the signature check alone does not stop them: a compromised build step or a
careless script holds that key as well."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from github_standin import StandIn
from test_release_cli import Project, make_release_dir

from kiln.errors import PublishError
from kiln.files import sha256_file
from kiln.publish import LocalRelease, load_release
from kiln.publish.directory import DirectoryPublisher
from kiln.publish.github import GitHubPublisher, Retry
from kiln.release.manifest import MANIFEST_NAME, SIGNATURE_NAME, SUMS_NAME, format_sums

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("minisign") is None, reason="minisign is not installed"),
]


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (the lock file too): kind, mode and content or link target."""
    out: dict[str, str] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            if p.is_symlink():
                out[rel] = f"link {os.readlink(p)}"
            elif p.is_dir():
                out[rel] = f"dir {st.st_mode:o}"
            else:
                out[rel] = f"file {st.st_mode:o} {hashlib.sha256(p.read_bytes()).hexdigest()}"
    return out


def resign(project: Project, release: Path, comment: str) -> None:
    """Rewrite SHA256SUMS for the directory's files and sign it with the project's key."""
    digests = {p.name: sha256_file(p) for p in release.iterdir()
               if p.name not in (SUMS_NAME, SIGNATURE_NAME)}
    (release / SUMS_NAME).write_text(format_sums(digests), encoding="utf-8")
    subprocess.run(["minisign", "-S", "-s", str(project.key), "-m", str(release / SUMS_NAME),
                    "-x", str(release / SIGNATURE_NAME), "-t", comment],
                   check=True, capture_output=True)


def tamper(project: Project, release: Path, *, tag: str | None = None,
           rename: Callable[[str], str] = lambda n: n, comment_tag: str | None = None) -> None:
    """Give the release another manifest tag and/or asset names, and re-sign it (by default
    with a trusted comment naming the new tag, so the check under test is the one that
    fires)."""
    manifest: dict[str, Any] = json.loads((release / MANIFEST_NAME).read_text())
    if tag is not None:
        manifest["tag"] = tag
    for asset in manifest["assets"]:
        new = rename(asset["name"])
        if new != asset["name"]:
            (release / asset["name"]).rename(release / new)  # a name with '/' fails here
            asset["name"] = new
    (release / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    # (minisign takes the comment as one line)
    shown = (comment_tag if comment_tag is not None else manifest["tag"]).replace("\n", "")
    resign(project, release, f"{manifest['project']} {shown} commit {manifest['commit']} "
                             f"date {manifest['date']}")


@pytest.fixture
def published(tmp_path: Path) -> tuple[Project, Path, Path]:
    """A release already published to a mirror (so `latest` exists), and its directory."""
    project, release = make_release_dir(tmp_path)
    mirror = tmp_path / "site" / "mirror"
    code, _, _ = project.kiln(["publish", str(release), "--to", f"file://{mirror}"])
    assert code == 0
    return project, release, mirror


def refused(project: Project, release: Path, mirror: Path, capsys: pytest.CaptureFixture[str],
            code: int, *needles: str) -> None:
    """``kiln publish`` exits with ``code``, says every needle, and changes nothing."""
    site = mirror.parent
    before = snapshot(site)
    got, _, err = project.kiln(["publish", str(release), "--to", f"file://{mirror}"], capsys)
    assert got == code, err
    for needle in needles:
        assert needle in err, err
    assert "Traceback" not in err
    assert snapshot(site) == before


@pytest.mark.parametrize("tag", ["./../escaped", "../../x", "../escaped", "b1/../../x",
                                 "b12\n", "B12", "b", "b1234567890", ".", ""])
def test_a_manifest_tag_that_is_not_a_tag_is_refused(
        published: tuple[Project, Path, Path], capsys: pytest.CaptureFixture[str],
        tag: str) -> None:
    project, release, mirror = published
    tamper(project, release, tag=tag)
    refused(project, release, mirror, capsys, 9, "field 'tag'", repr(tag))
    assert not (mirror.parent / "escaped").exists()
    assert not (mirror.parent.parent / "x").exists()


@pytest.mark.parametrize(("name", "code", "needle"), [
    ("ember-b{n}-bin-..hidden.tar.gz", 9, "'ember-b{n}-bin-..hidden.tar.gz'"),
    ("-ember-b{n}.tar.gz", 9, "'-ember-b{n}.tar.gz'"),
    ("ember-b{n}-bin-x y.zip", 9, "'ember-b{n}-bin-x y.zip'"),
    # A newline splits the SHA256SUMS line: the second half is no sha256sum line.
    ("ember-b{n}-bin-x\n.zip", 12, "not a sha256sum line: '.zip'"),
])
def test_an_asset_name_that_is_not_a_plain_file_name_is_refused(
        published: tuple[Project, Path, Path], capsys: pytest.CaptureFixture[str],
        name: str, code: int, needle: str) -> None:
    project, release, mirror = published
    first = sorted(json.loads((release / MANIFEST_NAME).read_text())["assets"],
                   key=lambda a: a["name"])[0]["name"]
    new = name.format(n=project.number)
    tamper(project, release, rename=lambda n: new if n == first else n)
    refused(project, release, mirror, capsys, code, needle.format(n=project.number))


@pytest.mark.parametrize(("name", "why"), [("../outside", "starts with '.'"),
                                         ("lib/outside", "contains '/'"),
                                         ("lib\\outside", "contains '\\\\'")])
def test_a_name_that_leaves_the_directory_in_sha256sums_is_refused(
        published: tuple[Project, Path, Path], capsys: pytest.CaptureFixture[str], name: str,
        why: str) -> None:
    project, release, mirror = published
    sums = (release / SUMS_NAME).read_text()
    digest = sums.split()[0]
    (release / SUMS_NAME).write_text(sums + f"{digest}  {name}\n")
    subprocess.run(["minisign", "-S", "-s", str(project.key), "-m", str(release / SUMS_NAME),
                    "-x", str(release / SIGNATURE_NAME)], check=True, capture_output=True)
    refused(project, release, mirror, capsys, 12, repr(name), why)


def test_asset_names_must_carry_the_manifest_tag(
        published: tuple[Project, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    project, release, mirror = published
    n = project.number
    tamper(project, release, rename=lambda name: name.replace(f"-b{n}-", f"-b{n + 1}-"))
    refused(project, release, mirror, capsys, 9, ".name'", f"b{n + 1}",
            f"does not carry the release's tag b{n}")


def test_the_manifest_tag_must_be_the_signed_one(
        published: tuple[Project, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """A release relabelled as another tag (names and manifest consistent) but signed for the
    old one: the signed comment decides."""
    project, release, mirror = published
    n = project.number
    tamper(project, release, tag=f"b{n + 7}", comment_tag=f"b{n}",
           rename=lambda name: name.replace(f"-b{n}-", f"-b{n + 7}-"))
    # The manifest's build_number must follow the tag as well.
    manifest = json.loads((release / MANIFEST_NAME).read_text())
    manifest["build_number"] = n + 7
    for a in manifest["assets"]:
        a["build_number"] = n + 7
    (release / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    resign(project, release, f"ember b{n} commit {manifest['commit']} date {manifest['date']}")
    refused(project, release, mirror, capsys, 9, "trusted comment", f"b{n + 7}")


def test_the_release_is_signed_with_project_tag_commit_and_date(
        published: tuple[Project, Path, Path]) -> None:
    project, release, _ = published
    manifest = json.loads((release / MANIFEST_NAME).read_text())
    lines = (release / SIGNATURE_NAME).read_text().splitlines()
    assert lines[2] == (f"trusted comment: ember b{project.number} commit {project.head} "
                        f"date {manifest['date']}")
    assert manifest["date"] == "2026-01-02T03:04:05Z"


def hostile(release: LocalRelease, **changes: Any) -> LocalRelease:
    """A checked release with values replaced after the check (as other code could build a
    ``LocalRelease``): the publishers must refuse it themselves."""
    manifest = dataclasses.replace(release.manifest, **changes)
    return dataclasses.replace(release, manifest=manifest)


@pytest.mark.parametrize("tag", ["../escaped", "./../escaped", "b1/../../x", "b3\n"])
def test_the_directory_publisher_refuses_a_tag_outside_the_mirror(
        published: tuple[Project, Path, Path], tag: str) -> None:
    project, release_dir, mirror = published
    release = hostile(load_release(release_dir, env=project.env), tag=tag)
    before = snapshot(mirror.parent)
    with pytest.raises(PublishError) as info:
        DirectoryPublisher(mirror).publish(release)
    assert repr(tag) in info.value.message and info.value.exit_code == 10
    assert snapshot(mirror.parent) == before


def test_the_directory_publisher_refuses_a_file_name_outside_the_mirror(
        published: tuple[Project, Path, Path]) -> None:
    project, release_dir, mirror = published
    release = load_release(release_dir, env=project.env)
    files = dict(release.files)
    files["../../planted"] = files.pop("RELEASE_NOTES.md")
    before = snapshot(mirror.parent)
    with pytest.raises(PublishError, match=re.escape("'../../planted'")):
        DirectoryPublisher(mirror).publish(dataclasses.replace(release, files=files))
    assert snapshot(mirror.parent) == before


def test_a_link_planted_in_the_mirror_does_not_lead_the_copy_out(tmp_path: Path) -> None:
    """`mirror/b<N>` is a symbolic link to a directory outside: publishing b<N> must not write
    through it."""
    project, release_dir = make_release_dir(tmp_path)
    mirror = tmp_path / "mirror"
    outside = tmp_path / "outside"
    outside.mkdir()
    mirror.mkdir()
    (mirror / f"b{project.number}").symlink_to(outside)
    before = snapshot(tmp_path / "mirror"), snapshot(outside)
    with pytest.raises(PublishError, match="outside"):
        DirectoryPublisher(mirror).publish(load_release(release_dir, env=project.env))
    assert (snapshot(mirror), snapshot(outside)) == before


def test_the_github_publisher_sends_nothing_for_a_hostile_tag(tmp_path: Path) -> None:
    project, release_dir = make_release_dir(tmp_path)
    release = hostile(load_release(release_dir, env=project.env), tag="../../heads/main")
    s = StandIn("ember-ml", "ember", "ghp_standin")
    s.commits.add(project.head)
    with s.running():
        pub = GitHubPublisher("ember-ml", "ember", token="ghp_standin", api_url=s.api_url,
                              retry=Retry(attempts=1, backoff=0.01, timeout=10))
        with pytest.raises(PublishError, match=re.escape("'../../heads/main'")):
            pub.publish(release)
    assert s.requests == [] and s.refs == {} and s.releases == {}
