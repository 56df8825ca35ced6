"""``kiln release`` then ``kiln verify`` end to end: real git and minisign, synthetic archives
(the helpers of ``test_release_cli``). A release passes with its key pinned; changing one byte
of the provenance or of an archive fails it with exit code 12 and a message naming the file;
the provenance is signed so that ``minisign -V`` accepts it on its own."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from test_release_cli import Project, make_release_dir

pytestmark = pytest.mark.integration


@pytest.fixture
def release(tmp_path: Path) -> tuple[Project, Path]:
    if shutil.which("minisign") is None:
        pytest.skip("minisign is not installed (scripts/apt-packages.txt)")
    return make_release_dir(tmp_path)


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_fresh_release_verifies(release: tuple[Project, Path],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    project, out = release
    pub = project.key.with_suffix(".pub")
    code, text, err = project.kiln(["verify", str(out), "--key", str(pub)], capsys)
    assert code == 0, err
    assert "checks passed" in text and "FAILED" not in text
    assert "warning" not in err
    code, text, err = project.kiln(["verify", str(out), "--json"], capsys)
    assert code == 0, err
    report = json.loads(text)
    assert report["ok"] and report["key"] == "release"
    assert report["tag"] == f"b{project.number}" and report["commit"] == project.head
    assert {c["name"] for c in report["checks"]} >= {"signature", "checksums", "manifest",
                                                     "provenance"}
    assert "warning" in err and "--key" in err  # only the release's own key was used
    # What a user runs by hand (docs/verify.md).
    subprocess.run(["minisign", "-V", "-p", "minisign.pub", "-m", "provenance.intoto.json"],
                   cwd=out, check=True, capture_output=True)
    statement = json.loads((out / "provenance.intoto.json").read_text())
    sums = dict(reversed(line.split("  ", 1)) for line in
                (out / "SHA256SUMS").read_text().splitlines())
    assert {s["name"]: s["digest"]["sha256"] for s in statement["subject"]} == {
        name: digest for name, digest in sums.items() if name.startswith("ember-b")}
    assert str(project.root) not in (out / "provenance.intoto.json").read_text()


def test_one_changed_byte_of_the_provenance_fails(release: tuple[Project, Path],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    project, out = release
    _flip(out / "provenance.intoto.json", 200)
    code, text, err = project.kiln(["verify", str(out), "--key",
                                    str(project.key.with_suffix(".pub"))], capsys)
    assert code == 12
    assert "provenance.intoto.json" in err
    assert "FAILED" in text


def test_one_changed_byte_of_an_archive_fails(release: tuple[Project, Path],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    project, out = release
    archive = next(out.glob("ember-b*.tar.gz"))
    _flip(archive, 40)
    code, _, err = project.kiln(["verify", str(out), "--key",
                                 str(project.key.with_suffix(".pub"))], capsys)
    assert code == 12
    assert f"{archive.name}: sha256 differs" in err


def test_another_key_fails(release: tuple[Project, Path], tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    project, out = release
    other = tmp_path / "other"
    other.mkdir()
    subprocess.run(["minisign", "-G", "-W", "-s", str(other / "k"), "-p", str(other / "k.pub")],
                   check=True, capture_output=True)
    code, _, err = project.kiln(["verify", str(out), "--key", str(other / "k.pub")], capsys)
    assert code == 12 and "does not verify SHA256SUMS with the pinned key" in err
