"""kiln/files.py: atomic writes, sha256_file, install_once under races and failures; and the
one cache variable (KILN_CACHE, with KILN_CACHE_DIR deprecated) of kiln/cache.py."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import sys
import threading
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import kiln.build.cache
from kiln.build.cache import BuildCache, CacheLayout, default_cache_dir
from kiln.build.toolchains import cuda, openvino, zig
from kiln.build.toolchains.base import ToolchainPaths
from kiln.files import (
    atomic_write_bytes,
    atomic_write_text,
    file_lock,
    fsync_dir,
    install_once,
    sha256_file,
)


def _race(dest: Path, lock: Path, log: Path, go: Path, threads: int) -> None:
    """One process of the race: ``threads`` threads wait for the start signal, then call
    install_once; every fill that runs appends a line to ``log`` (O_APPEND: the lines of
    several processes do not mix)."""
    def fill(tmp: Path) -> str:
        with log.open("a", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()} {threading.get_ident()}\n")
        time.sleep(0.3)  # a slow install: the others arrive while it runs
        (tmp / "payload").write_text("installed", encoding="utf-8")
        return "v1\n"

    results: list[Path] = []

    def one() -> None:
        deadline = time.monotonic() + 60
        while not go.exists():
            if time.monotonic() > deadline:
                raise SystemExit("no start signal")
            time.sleep(0.001)
        results.append(install_once(dest, lock=lock, fill=fill, marker=".done"))

    workers = [threading.Thread(target=one) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    if results != [dest] * threads:
        raise SystemExit(f"install_once returned {results}")


def test_install_once_fills_exactly_once_when_threads_and_processes_race(
        tmp_path: Path) -> None:
    dest, lock = tmp_path / "cache" / "thing-1.0", tmp_path / "locks" / "thing-1.0.lock"
    log, go = tmp_path / "fills.log", tmp_path / "go"
    # 3 worker processes (spawned: no fork of a threaded pytest) and this one, 4 threads each
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_race, args=(dest, lock, log, go, 4)) for _ in range(3)]
    for p in procs:
        p.start()
    here = threading.Thread(target=_race, args=(dest, lock, log, go, 4))
    here.start()
    time.sleep(1.5)  # let the processes start and wait for the signal
    go.write_text("")
    here.join()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    fills = log.read_text(encoding="utf-8").splitlines()
    assert len(fills) == 1, fills
    assert (dest / "payload").read_text(encoding="utf-8") == "installed"
    assert (dest / ".done").read_text(encoding="utf-8") == "v1\n"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["thing-1.0"]  # no temp dirs


def test_a_fill_that_raises_leaves_nothing_and_a_later_call_succeeds(tmp_path: Path) -> None:
    dest, lock = tmp_path / "tc" / "tool-2", tmp_path / "tc" / ".locks" / "tool-2.lock"
    seen: list[Path] = []

    def broken(tmp: Path) -> str:
        seen.append(tmp)
        assert tmp.is_dir() and not any(tmp.iterdir())  # a fresh, empty directory
        (tmp / "half").write_text("x", encoding="utf-8")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        install_once(dest, lock=lock, fill=broken)
    assert seen and seen[0].parent == dest.parent and seen[0].name.startswith(".tool-2.tmp-")
    assert not dest.exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == [".locks"]

    def good(tmp: Path) -> None:
        (tmp / "bin").mkdir()

    assert install_once(dest, lock=lock, fill=good) == dest
    assert (dest / "bin").is_dir()
    assert (dest / ".kiln-complete").read_text(encoding="utf-8") == ""  # None: empty marker
    # installed: fill is not called again
    assert install_once(dest, lock=lock, fill=broken) == dest
    assert len(seen) == 1


def test_stale_temp_dirs_are_removed_and_an_unmarked_dest_replaced(tmp_path: Path) -> None:
    dest, lock = tmp_path / "zig-9", tmp_path / "zig-9.lock"
    stale = tmp_path / ".zig-9.tmp-123-456"
    (stale / "junk").mkdir(parents=True)
    other = tmp_path / ".zig-10.tmp-1"  # another name's temp dir is not ours to remove
    other.mkdir()
    (dest / "old-file").parent.mkdir()
    (dest / "old-file").write_text("killed mid-install", encoding="utf-8")

    def fill(tmp: Path) -> str:
        (tmp / "new-file").write_text("new", encoding="utf-8")
        return "ziglang==9\n"

    install_once(dest, lock=lock, fill=fill)
    assert not stale.exists() and other.exists()
    assert sorted(p.name for p in dest.iterdir()) == [".kiln-complete", "new-file"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".zig-10.tmp-1", "zig-9",
                                                          "zig-9.lock"]


def test_adopt_marks_an_install_made_by_hand_without_filling(tmp_path: Path) -> None:
    dest, lock = tmp_path / "cuda-1", tmp_path / "cuda-1.lock"

    def fill(tmp: Path) -> str:
        raise AssertionError("filled")

    def adopt(d: Path) -> str | None:
        return "pins\n" if (d / "nvcc").is_file() else None

    with pytest.raises(AssertionError, match="filled"):  # no dest: nothing to adopt
        install_once(dest, lock=lock, fill=fill, adopt=adopt)
    dest.mkdir()
    with pytest.raises(AssertionError, match="filled"):  # not complete: filled
        install_once(dest, lock=lock, fill=fill, adopt=adopt)
    assert dest.is_dir()  # a failed fill leaves what was there
    (dest / "nvcc").write_text("", encoding="utf-8")
    assert install_once(dest, lock=lock, fill=fill, adopt=adopt) == dest
    assert (dest / ".kiln-complete").read_text(encoding="utf-8") == "pins\n"


def test_install_once_re_enters_a_lock_its_caller_holds(tmp_path: Path) -> None:
    dest, lock = tmp_path / "entry", tmp_path / "entry.lock"
    with file_lock(lock):
        install_once(dest, lock=lock, fill=lambda tmp: None, marker="COMPLETE")
    assert (dest / "COMPLETE").is_file()


def test_atomic_writes(tmp_path: Path) -> None:
    path = tmp_path / "SHA256SUMS"
    atomic_write_text(path, "één\n")
    assert path.read_text(encoding="utf-8") == "één\n"
    atomic_write_bytes(path, b"\x00\xff")
    assert path.read_bytes() == b"\x00\xff"
    with pytest.raises(UnicodeEncodeError):  # a lone surrogate cannot be written as UTF-8
        atomic_write_text(path, "ok\udc80")
    assert path.read_bytes() == b"\x00\xff"  # the old content stays whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["SHA256SUMS"]


def test_sha256_file_and_fsync_dir(tmp_path: Path) -> None:
    data = os.urandom((1 << 20) + 17)  # more than one read chunk
    (tmp_path / "blob").write_bytes(data)
    assert sha256_file(tmp_path / "blob") == hashlib.sha256(data).hexdigest()
    fsync_dir(tmp_path)
    with pytest.raises(FileNotFoundError):
        fsync_dir(tmp_path / "missing")


def _fake_pip(argv: Sequence[str], **kw: Any) -> Any:
    """pip and zig as the three toolchains call them, writing what the real ones would."""
    args = [str(a) for a in argv]
    if "download" in args:  # openvino: pip download -d DIR
        d = Path(args[args.index("-d") + 1])
        d.mkdir(parents=True)
        with zipfile.ZipFile(d / "openvino-2026.2.1-cp312-cp312-manylinux_2_28_x86_64.whl",
                             "w") as zf:
            zf.writestr("openvino/libs/libopenvino_c.so.2621", "")
    elif "--target" in args:  # zig, cuda: pip install --target DIR
        target = Path(args[args.index("--target") + 1])
        tools = ([target / "ziglang" / "zig"] if "ziglang==0.17.1" in args
                 else list(cuda._tools(target, "12.4").values()))
        for t in tools:
            t.parent.mkdir(parents=True, exist_ok=True)
            t.write_text("", encoding="utf-8")
    elif args[-1] == "version":
        return SimpleNamespace(stdout="0.17.1\n")
    return None


def test_toolchain_caches_keep_their_layout_markers_and_locks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Caches filled by earlier kilns stay valid: same directories, marker names and
    contents, lock files."""
    for module in (cuda, openvino, zig):
        monkeypatch.setattr(module, "run", _fake_pip)
    paths = ToolchainPaths(root=tmp_path / "toolchains", zig_cache=tmp_path / "zig")
    assert cuda.install_cuda(paths, "12.4", env={}) == paths.root / "cuda-12.4"
    assert (openvino.install_openvino(paths, "2026.2", "linux", env={})
            == paths.root / "openvino-2026.2.1" / "linux")
    installed = zig.ZigToolchain().install(paths, python=sys.executable, env={})
    assert installed.executable == paths.root / "zig-0.17.1" / "ziglang" / "zig"
    got = {str(p.relative_to(paths.root)): p.read_text(encoding="utf-8")
           for p in paths.root.rglob("*") if p.is_file()}
    assert got == {
        ".locks/cuda-12.4.lock": "",
        ".locks/openvino-2026.2.1-linux.lock": "",
        ".locks/zig-0.17.1.lock": "",
        "cuda-12.4/.kiln-complete": ("nvidia-cuda-nvrtc-cu12==12.4.127\n"
                                     "nvidia-cuda-nvcc-cu12==12.4.131\n"),
        "cuda-12.4/nvidia/cuda_nvcc/bin/ptxas": "",
        "cuda-12.4/nvidia/cuda_nvrtc/lib/libnvrtc.so.12": "",
        "openvino-2026.2.1/linux/.kiln-complete": (
            "openvino==2026.2.1 openvino-2026.2.1-cp312-cp312-manylinux_2_28_x86_64.whl\n"),
        "openvino-2026.2.1/linux/libs/libopenvino_c.so.2621": "",
        "zig-0.17.1/.kiln-complete": "ziglang==0.17.1\n",
        "zig-0.17.1/ziglang/zig": "",
    }


def test_build_cache_entries_keep_their_layout(tmp_path: Path) -> None:
    cache = BuildCache(CacheLayout.at(tmp_path / "c"))
    stage = tmp_path / "stage"
    (stage / "lib").mkdir(parents=True)
    (stage / "lib" / "libember.so").write_text("elf", encoding="utf-8")
    key = "0123abcd" * 8
    with cache.lock(key):
        assert cache.store(key, stage, {"entry": "ubuntu-x64"}) == cache.entry_dir(key) / "stage"
    got = {str(p.relative_to(cache.layout.root)): p.read_text(encoding="utf-8")
           for p in cache.layout.root.rglob("*") if p.is_file()}
    assert got == {f"builds/{key}/COMPLETE": "",
                   f"builds/{key}/meta.json": '{\n  "entry": "ubuntu-x64"\n}\n',
                   f"builds/{key}/stage/lib/libember.so": "elf",
                   f"locks/build-{key}.lock": ""}
    # COMPLETE whose stage was deleted is no entry: storing again replaces it
    shutil.rmtree(cache.entry_dir(key) / "stage")
    with cache.lock(key):
        assert cache.lookup(key) is None
        stored = cache.store(key, stage, {"entry": "ubuntu-x64"})
        assert cache.lookup(key) == stored and (stored / "lib" / "libember.so").is_file()


# --------------------------------------------------------------------------------------------
# The cache variable: KILN_CACHE; KILN_CACHE_DIR still works, with a deprecation notice


@pytest.fixture
def fresh_notice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kiln.build.cache, "_noticed", False)


def test_kiln_cache_is_read_without_a_notice(fresh_notice: None,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert default_cache_dir({"KILN_CACHE": "/k", "HOME": "/h"}) == Path("/k")
    assert capsys.readouterr().err == ""


def test_kiln_cache_dir_still_works_and_names_kiln_cache(
        fresh_notice: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert default_cache_dir({"KILN_CACHE_DIR": "/old", "HOME": "/h"}) == Path("/old")
    err = capsys.readouterr().err
    assert err == "kiln: warning: KILN_CACHE_DIR is deprecated (use KILN_CACHE instead)\n"


def test_kiln_cache_wins_over_kiln_cache_dir(fresh_notice: None,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    env = {"KILN_CACHE": "/new", "KILN_CACHE_DIR": "/old", "HOME": "/h"}
    assert default_cache_dir(env) == Path("/new")
    assert capsys.readouterr().err == ("kiln: warning: KILN_CACHE_DIR is deprecated "
                                       "(ignored, KILN_CACHE is set)\n")


def test_the_notice_is_printed_once_per_process(fresh_notice: None,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(3):
        assert default_cache_dir({"KILN_CACHE_DIR": "~/old"}) == Path("~/old").expanduser()
    assert capsys.readouterr().err.splitlines() == [
        "kiln: warning: KILN_CACHE_DIR is deprecated (use KILN_CACHE instead)"]
