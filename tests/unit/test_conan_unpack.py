"""The Conan publisher unpacks release archives with the installer's checks
(``kiln.files.safe_unpack``), bounded by the record's ``unpacked_size``."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from kiln.errors import IntegrityError, PublishError
from kiln.files import safe_unpack
from kiln.publish.conan import _unpack


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def _file(name: str, mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info


def test_unpacks_the_single_top_directory(tmp_path: Path) -> None:
    a = _tar(tmp_path / "ember-b1-bin-x.tar.gz",
             [(_file("ember-b1-bin-x/bin/ember-cli", 0o755), b"#!x"),
              (_file("ember-b1-bin-x/README"), b"hi")])
    top = _unpack(a, tmp_path / "out", max_bytes=5)
    assert top == tmp_path / "out" / "ember-b1-bin-x"
    assert (top / "bin" / "ember-cli").read_bytes() == b"#!x"
    assert (top / "bin" / "ember-cli").stat().st_mode & 0o777 == 0o755


def test_refuses_more_than_the_recorded_unpacked_size(tmp_path: Path) -> None:
    a = _tar(tmp_path / "ember-b1-bin-x.tar.gz",
             [(_file("ember-b1-bin-x/zeros"), b"\0" * 4096)])
    with pytest.raises(IntegrityError, match="unpacks to more than the 100 bytes"):
        _unpack(a, tmp_path / "out", max_bytes=100)
    assert not (tmp_path / "out" / "ember-b1-bin-x" / "zeros").exists()


def test_refuses_a_hard_link_and_a_set_user_id_file(tmp_path: Path) -> None:
    link = tarfile.TarInfo("ember-b1-bin-x/bin/other")
    link.type = tarfile.LNKTYPE
    link.linkname = "ember-b1-bin-x/bin/ember-cli"
    a = _tar(tmp_path / "ember-b1-bin-x.tar.gz",
             [(_file("ember-b1-bin-x/bin/ember-cli", 0o755), b"x"), (link, b"")])
    with pytest.raises(IntegrityError, match="is a hard link"):
        _unpack(a, tmp_path / "out", max_bytes=1 << 20)
    b = _tar(tmp_path / "ember-b2-bin-x.tar.gz",
             [(_file("ember-b2-bin-x/bin/ember-cli", 0o4755), b"x")])
    with pytest.raises(IntegrityError, match="set-user-ID"):
        _unpack(b, tmp_path / "out2", max_bytes=1 << 20)


def test_a_damaged_archive_is_a_publish_error(tmp_path: Path) -> None:
    a = tmp_path / "ember-b1-bin-x.tar.gz"
    a.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(PublishError, match=r"cannot unpack ember-b1-bin-x\.tar\.gz"):
        _unpack(a, tmp_path / "out", max_bytes=1 << 20)


def test_safe_unpack_refuses_an_unknown_archive_type(tmp_path: Path) -> None:
    a = tmp_path / "ember.rar"
    a.write_bytes(b"x")
    (tmp_path / "out").mkdir()
    with pytest.raises(IntegrityError, match=r"neither a \.tar\.gz nor a \.zip"):
        safe_unpack(a, tmp_path / "out", max_bytes=1)
