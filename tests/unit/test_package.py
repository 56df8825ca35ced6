"""kiln/package/archive.py: layout, metadata and byte-for-byte reproducibility of the archives."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import pytest
from ember_project import EMBER, EMBER_LAYOUT, NAMES

from kiln.errors import BuildError
from kiln.matrix import load_matrix
from kiln.package.archive import BuildInfo, package, required_files
from kiln.plan import Job, make_job

EPOCH = 1_700_000_000


def job_for(repo_root: Path, entry_id: str) -> Job:
    return make_job(load_matrix(repo_root / "matrix").get(entry_id), 42, NAMES)


def make_stage(root: Path, *, windows: bool = False, macos: bool = False,
               mtime: int = 1) -> Path:
    stage = root / "stage"
    exe = ".exe" if windows else ""
    files = {f"bin/ember-cli{exe}": b"\x7fELF cli", f"bin/ember-bench{exe}": b"\x7fELF bench",
             f"bin/ember-server{exe}": b"\x7fELF server", "include/ember.h": b"/* ember */\n",
             "share/ember/LICENSE": b"MIT License\n",
             "share/ember/licenses/civetweb.md": b"civetweb: MIT\n",
             "share/ember/licenses/cJSON.txt": b"cJSON: MIT\n"}
    if windows:
        files["bin/ember.dll"] = b"MZ dll"
        files["lib/libember.dll.a"] = b"!<arch>\n"
    elif macos:
        files["lib/libember.dylib"] = b"\xcf\xfa\xed\xfe dylib"
    else:
        files["lib/libember.so.0.1.0"] = b"\x7fELF lib"
    for rel, data in files.items():
        p = stage / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        p.chmod(0o775 if rel.startswith("bin/") else 0o664)
        os.utime(p, (mtime, mtime))
    if not windows and not macos:
        (stage / "lib" / "libember.so.0").symlink_to("libember.so.0.1.0")
        (stage / "lib" / "libember.so").symlink_to("libember.so.0")
    return stage


def info_for(job: Job) -> BuildInfo:
    return BuildInfo(id=job.entry.id, build_number=job.build_number, commit="c0ffee" * 6 + "c0ff",
                     source_date_epoch=EPOCH, source_tree="ab" * 32, target=job.target,
                     os=job.entry.os, arch=job.entry.arch, backend=job.entry.backend,
                     toolchain=(("zig", "0.17.1"), ("cmake", "3.25.1")),
                     cflags=("-g0", "-ffile-prefix-map={source}=ember"), ldflags=("-s",),
                     cmake_options=(("CMAKE_BUILD_TYPE", "Release"),), kiln_version="0.1.0")


@pytest.fixture
def license_file(tmp_path: Path) -> Path:
    p = tmp_path / "LICENSE"
    p.write_text("MIT License\n")
    return p


def build(tmp_path: Path, repo_root: Path, entry_id: str, license_file: Path, *,
          sub: str, mtime: int = 1) -> Path:
    job = job_for(repo_root, entry_id)
    root = tmp_path / sub
    stage = make_stage(root, windows=job.entry.os == "windows", macos=job.entry.os == "macos",
                       mtime=mtime)
    dest = root / "out"
    dest.mkdir()
    return package(job, stage, dest_dir=dest, info=info_for(job), license_file=license_file,
                   epoch=EPOCH, layout=EMBER_LAYOUT)


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_tar_gz_layout_owner_mode_mtime(tmp_path: Path, repo_root: Path,
                                        license_file: Path) -> None:
    asset = build(tmp_path, repo_root, "ubuntu-arm64", license_file, sub="a")
    assert asset.name == "ember-b42-bin-ubuntu-arm64.tar.gz"
    with tarfile.open(asset) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    top = "ember-b42-bin-ubuntu-arm64"
    assert names == sorted(names)
    assert f"{top}/bin/ember-cli" in names and f"{top}/LICENSE" in names
    assert f"{top}/BUILD-INFO.json" in names and f"{top}/include/ember.h" in names
    assert f"{top}/bin/ember-server" in names
    assert f"{top}/share/ember/licenses/civetweb.md" in names
    assert f"{top}/share/ember/licenses/cJSON.txt" in names
    for m in members:
        assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", EPOCH)
        if m.isdir() or m.name.endswith(("ember-cli", "ember-bench", "ember-server")):
            assert m.mode == 0o755
        elif m.issym():
            assert m.name.endswith((".so", ".so.0"))
        else:
            assert m.mode == 0o644, m.name
    link = next(m for m in members if m.name.endswith("libember.so.0"))
    assert link.issym() and link.linkname == "libember.so.0.1.0"
    # gzip header: no file name, the fixed mtime
    raw = asset.read_bytes()
    assert int.from_bytes(raw[4:8], "little") == EPOCH and raw[3] & 0x08 == 0


def test_same_inputs_give_identical_bytes(tmp_path: Path, repo_root: Path,
                                          license_file: Path) -> None:
    # Different file mtimes and build directories, same content: the same archive.
    a = build(tmp_path, repo_root, "ubuntu-s390x", license_file, sub="a", mtime=5)
    b = build(tmp_path, repo_root, "ubuntu-s390x", license_file, sub="b", mtime=999_999)
    assert sha(a) == sha(b)
    wa = build(tmp_path, repo_root, "win-cpu-x64", license_file, sub="wa", mtime=5)
    wb = build(tmp_path, repo_root, "win-cpu-x64", license_file, sub="wb", mtime=999_999)
    assert sha(wa) == sha(wb)


def test_zip_for_windows(tmp_path: Path, repo_root: Path, license_file: Path) -> None:
    asset = build(tmp_path, repo_root, "win-cpu-x64", license_file, sub="w")
    assert asset.name == "ember-b42-bin-win-cpu-x64.zip"
    with zipfile.ZipFile(asset) as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        assert names == sorted(names)
        top = "ember-b42-bin-win-cpu-x64"
        assert f"{top}/bin/ember-cli.exe" in names and f"{top}/bin/ember.dll" in names
        assert f"{top}/bin/ember-server.exe" in names
        assert f"{top}/share/ember/licenses/cJSON.txt" in names
        info = json.loads(zf.read(f"{top}/BUILD-INFO.json"))
    assert {i.date_time for i in infos} == {(2023, 11, 14, 22, 13, 20)}
    exe = next(i for i in infos if i.filename.endswith("ember-cli.exe"))
    assert (exe.external_attr >> 16) & 0o777 == 0o755
    assert info["id"] == "win-cpu-x64" and info["build_number"] == 42
    assert info["toolchain"] == {"zig": "0.17.1", "cmake": "3.25.1"}
    assert info["cflags"] == ["-g0", "-ffile-prefix-map={source}=ember"]


def test_build_info_has_no_paths_and_is_sorted_json(tmp_path: Path, repo_root: Path,
                                                    license_file: Path) -> None:
    asset = build(tmp_path, repo_root, "macos-arm64", license_file, sub="m")
    with tarfile.open(asset) as tar:
        f = tar.extractfile("ember-b42-bin-macos-arm64/BUILD-INFO.json")
        assert f is not None
        text = f.read().decode()
    data = json.loads(text)
    assert list(data) == sorted(data)
    assert data["target"] == "aarch64-macos.11.0" and data["source_date_epoch"] == EPOCH
    assert str(tmp_path) not in text


def test_missing_tool_is_a_clear_error(tmp_path: Path, repo_root: Path,
                                       license_file: Path) -> None:
    job = job_for(repo_root, "ubuntu-x64")
    stage = make_stage(tmp_path)
    (stage / "bin" / "ember-bench").unlink()
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(BuildError, match="bin/ember-bench") as err:
        package(job, stage, dest_dir=dest, info=info_for(job), license_file=license_file,
                epoch=EPOCH, layout=EMBER_LAYOUT)
    assert "install()" in (err.value.hint or "")
    assert list(dest.iterdir()) == []


def test_gzip_stream_is_the_tar(tmp_path: Path, repo_root: Path, license_file: Path) -> None:
    asset = build(tmp_path, repo_root, "openeuler-x64", license_file, sub="o")
    with gzip.open(asset) as gz:
        data = gz.read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getnames()[0] == "ember-b42-bin-openeuler-x64"


@pytest.mark.parametrize(("entry_id", "exe"), [("ubuntu-x64", ""), ("win-cpu-arm64", ".exe"),
                                               ("macos-arm64", ""), ("android-arm64", "")])
def test_every_archive_requires_the_server_and_the_third_party_licences(
        repo_root: Path, entry_id: str, exe: str) -> None:
    groups = required_files(job_for(repo_root, entry_id), EMBER_LAYOUT)
    assert (f"bin/ember-server{exe}",) in groups
    assert EMBER.wheel is not None  # what the wheels ship beside the server
    assert EMBER.wheel.server_licenses == ("share/ember/licenses/civetweb.md",
                                           "share/ember/licenses/cJSON.txt")
    for rel in EMBER.wheel.server_licenses:
        assert (rel,) in groups


@pytest.mark.parametrize("missing", ["bin/ember-server", "share/ember/licenses/civetweb.md",
                                     "share/ember/licenses/cJSON.txt"])
def test_an_archive_without_the_server_or_a_licence_is_refused(
        tmp_path: Path, repo_root: Path, license_file: Path, missing: str) -> None:
    job = job_for(repo_root, "ubuntu-x64")
    stage = make_stage(tmp_path)
    (stage / missing).unlink()
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(BuildError, match=missing) as err:
        package(job, stage, dest_dir=dest, info=info_for(job), license_file=license_file,
                epoch=EPOCH, layout=EMBER_LAYOUT)
    assert "[package]" in (err.value.hint or "")
    assert list(dest.iterdir()) == []
