"""The OpenCL checks of kiln/verify/opencl_checks.py on synthetic binaries: the embedded
kernel source found, complete and identical to the tree's, the Adreno prefix for Adreno
entries, the loader named but not linked."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.matrix import Entry, load_matrix
from kiln.verify import opencl_checks as oc

ENTRY = "win-opencl-adreno-arm64"


def entry(repo_root: Path, entry_id: str = ENTRY) -> Entry:
    return load_matrix(repo_root / "matrix").get(entry_id)


def sources(repo_root: Path) -> Path:
    return repo_root / "runtime" / "src" / "backends" / "opencl"


def library(repo_root: Path, *, kernels: bytes | None = None, adreno: bool = True,
            loader: bytes = b"OpenCL.dll") -> bytes:
    """A fake ember.dll: code, the two embedded sources as embed.cmake lays them out, strings."""
    src = sources(repo_root)
    k = (src / "ember_kernels.cl").read_bytes() if kernels is None else kernels
    pre = (src / "adreno.cl").read_bytes() if adreno else b""
    embedded = k + b"\0" + (pre + b"\0" if adreno else b"")
    return b"MZ\x90\x00" + b"\x00" * 64 + embedded + loader + b"\0"


def ok(checks: list, name_end: str) -> bool:
    found = [c for c in checks if c.name.endswith(name_end)]
    assert found, [c.name for c in checks]
    return all(c.ok for c in found)


def test_a_good_build_passes_every_check(repo_root: Path) -> None:
    b = oc.OpenclBinary("bin/ember.dll", library(repo_root), ("KERNEL32.dll", "msvcrt.dll"))
    checks = oc.check_opencl([b], entry(repo_root), sources(repo_root))
    assert all(c.ok for c in checks), [(c.name, c.detail) for c in checks]
    names = {c.name for c in checks}
    assert {"bin/ember.dll: opencl kernels", "bin/ember.dll: opencl kernel source",
            "bin/ember.dll: adreno kernel prefix", "bin/ember.dll: opencl loader",
            "bin/ember.dll: no OpenCL at link time"} <= names
    line = oc.summary(checks)
    assert "identical to runtime/src/backends/opencl/ember_kernels.cl" in line
    assert "OpenCL.dll" in line


def test_the_sources_in_the_tree_are_found() -> None:
    d = oc.source_dir()
    assert d is not None and (d / "adreno.cl").is_file()


def test_linking_the_loader_fails(repo_root: Path) -> None:
    b = oc.OpenclBinary("bin/ember.dll", library(repo_root), ("KERNEL32.dll", "OpenCL.dll"))
    checks = oc.check_opencl([b], entry(repo_root), sources(repo_root))
    assert not ok(checks, "no OpenCL at link time")


def test_a_build_without_kernels_fails(repo_root: Path) -> None:
    b = oc.OpenclBinary("bin/ember.dll", b"MZ" + b"\0" * 100, ())
    checks = oc.check_opencl([b], entry(repo_root), sources(repo_root))
    assert [c.name for c in checks if not c.ok] == ["opencl kernels"]


def test_stale_or_incomplete_source_fails(repo_root: Path) -> None:
    text = (sources(repo_root) / "ember_kernels.cl").read_bytes()
    stale = text.replace(b"__kernel EM_MM_ATTR void em_mm_q6_K(", b"__kernel void em_mm_old(")
    b = oc.OpenclBinary("bin/ember.dll", library(repo_root, kernels=stale), ())
    checks = oc.check_opencl([b], entry(repo_root), sources(repo_root))
    assert not ok(checks, ": opencl kernels")
    assert not ok(checks, ": opencl kernel source")
    # without a source tree the structure is still checked
    checks = oc.check_opencl([b], entry(repo_root), None)
    assert not ok(checks, ": opencl kernels") and ok(checks, ": opencl kernel source")


@pytest.mark.parametrize("adreno, loader", [(False, b"OpenCL.dll"), (True, b"nothing.dll")])
def test_adreno_prefix_and_loader_are_required(repo_root: Path, adreno: bool,
                                                loader: bytes) -> None:
    b = oc.OpenclBinary("bin/ember.dll", library(repo_root, adreno=adreno, loader=loader), ())
    checks = oc.check_opencl([b], entry(repo_root), sources(repo_root))
    failed = [c.name for c in checks if not c.ok]
    want = "bin/ember.dll: opencl loader" if adreno else "bin/ember.dll: adreno kernels"
    assert failed == [want]
