"""Measured floors in ``kiln release``: a build that needs more than its matrix entry promises
fails the release, the floors land in the signed index, and the notes say when one changed
since the previous release (docs/floors.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from elf_stub import elf_with_versions
from test_release_cli import LOCAL, Project, git, make_artifact, make_project

from kiln.release.index import parse_index

CI_ONLY = ("*",)  # every entry not given below may be missing


def _release(project: Project, capsys: pytest.CaptureFixture[str], *, entry: str,
             glibc: str, out: str) -> tuple[int, str, Path]:
    art = project.root / f"art-{out}"
    for entry_id in LOCAL:
        if entry_id != entry:
            make_artifact(art / entry_id, entry_id, number=project.number, commit=project.head)
    # an aarch64 ELF library that needs GLIBC_<glibc> (the floors reader needs no compiler)
    make_artifact(art / entry, entry, number=project.number, commit=project.head,
                  library=elf_with_versions({"libc.so.6": ["GLIBC_2.17", f"GLIBC_{glibc}"]}))
    target = project.root / out
    code, _, err = project.kiln(["release", "--artifacts", str(art), "--out", str(target),
                                 "--allow-missing", *CI_ONLY, "--no-git-tag"], capsys)
    return code, err, target


def test_a_floor_above_the_promise_fails_the_release(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    project = make_project(tmp_path)
    code, err, out = _release(project, capsys, entry="ubuntu-arm64", glibc="2.34", out="rel")
    assert code == 9, err
    assert ("ubuntu-arm64: lib/libember.so needs GLIBC_2.34 but the matrix promises glibc "
            "2.17") in err
    assert not out.exists()
    # The same build within its promise is released, and its floor is in the signed index.
    code, err, out = _release(project, capsys, entry="ubuntu-arm64", glibc="2.17", out="ok")
    assert code == 0, err
    index = parse_index((out / "index.json").read_bytes(), source="index.json")
    asset = next(a for a in index.releases[0].assets if a.record.entry_id == "ubuntu-arm64")
    assert asset.floors["glibc"] == "2.17"
    assert "floor :: glibc :: 2.17" in asset.properties()


def test_the_notes_say_when_a_floor_rose(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    project = make_project(tmp_path)
    code, err, _ = _release(project, capsys, entry="openeuler-arm64", glibc="2.17", out="one")
    assert code == 0, err
    first = project.repo / "release_notes" / f"b{project.number}.floors.json"
    assert json.loads(first.read_text())["openeuler-arm64"]["glibc"] == "2.17"
    git(project.repo, project.env, "tag", "-a", f"b{project.number}", "-m", "one")
    git(project.repo, project.env, "add", "-A")
    git(project.repo, project.env, "commit", "-q", "-m", "gguf: mmap (#56)")
    code, err, out = _release(project, capsys, entry="openeuler-arm64", glibc="2.27", out="two")
    assert code == 0, err
    notes = (out / "RELEASE_NOTES.md").read_text()
    assert "What the builds need changed since" in notes
    assert "openeuler-arm64: glibc floor rose from 2.17 to 2.27" in notes
