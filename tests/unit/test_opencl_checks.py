"""The OpenCL checks of kiln/verify/opencl_checks.py on synthetic binaries: the embedded
kernel source found, complete and identical to the tree's, the Adreno prefix for Adreno
entries, the loader named but not linked; the kernel source is the project's
([build.device_code] opencl), for ember and for another project."""

from __future__ import annotations

from pathlib import Path

import pytest
from ember_project import EMBER, NAMES

from kiln.build.toolchains.recipe import load_verify_spec
from kiln.matrix import Entry, load_matrix
from kiln.plan import make_job
from kiln.project import Names
from kiln.verify import Check, VerifyContext
from kiln.verify import opencl_checks as oc

ENTRY = "win-opencl-adreno-arm64"


def entry(repo_root: Path, entry_id: str = ENTRY) -> Entry:
    return load_matrix(repo_root / "matrix").get(entry_id)


KERNELS = "runtime/src/backends/opencl/ember_kernels.cl"


def sources(repo_root: Path) -> oc.KernelSources:
    return oc.KernelSources(kernels=repo_root / KERNELS, shown=KERNELS, option="EMBER_OPENCL")


def library(repo_root: Path, *, kernels: bytes | None = None, adreno: bool = True,
            loader: bytes = b"OpenCL.dll", src: oc.KernelSources | None = None) -> bytes:
    """A fake ember.dll: code, the two embedded sources as embed.cmake lays them out, strings."""
    src = src or sources(repo_root)
    k = src.kernels.read_bytes() if kernels is None else kernels
    pre = src.adreno.read_bytes() if adreno else b""
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


def ctx(repo_root: Path, tmp_path: Path, *, names: Names = NAMES, source: Path | None = None,
        label: str = "") -> VerifyContext:
    job = make_job(entry(repo_root), 1, names)
    return VerifyContext(job=job, stage=tmp_path, spec=load_verify_spec(repo_root / "recipes"),
                         env={}, log_file=tmp_path / "v.log", model=None, reference_ids=None,
                         smoke=EMBER.smoke, layout=EMBER.layout, source=source,
                         source_label=label)


def test_the_sources_in_the_tree_are_found(repo_root: Path, tmp_path: Path) -> None:
    # the build stage passes the project's source directory; without it the check fails
    given = ctx(repo_root, tmp_path, source=repo_root / "runtime", label="runtime")
    assert oc.kernel_sources(given) == sources(repo_root)
    unknown = oc.kernel_sources(ctx(repo_root, tmp_path))
    assert isinstance(unknown, Check) and not unknown.ok
    assert "source directory is not known" in unknown.detail
    assert sources(repo_root).adreno.is_file()
    assert sources(repo_root).adreno_shown == "runtime/src/backends/opencl/adreno.cl"


def test_linking_the_loader_fails(repo_root: Path) -> None:
    b = oc.OpenclBinary("bin/ember.dll", library(repo_root), ("KERNEL32.dll", "OpenCL.dll"))
    checks = oc.check_opencl([b], entry(repo_root), sources(repo_root))
    assert not ok(checks, "no OpenCL at link time")


def test_a_build_without_kernels_fails(repo_root: Path) -> None:
    b = oc.OpenclBinary("bin/ember.dll", b"MZ" + b"\0" * 100, ())
    checks = oc.check_opencl([b], entry(repo_root), sources(repo_root))
    assert [c.name for c in checks if not c.ok] == ["opencl kernels"]
    assert checks[-1].detail == ("no binary of bin/ or lib/ embeds "
                                 "runtime/src/backends/opencl/ember_kernels.cl: the build was "
                                 "not configured with EMBER_OPENCL=ON")


def test_stale_or_incomplete_source_fails(repo_root: Path) -> None:
    text = sources(repo_root).kernels.read_bytes()
    stale = text.replace(b"__kernel EM_MM_ATTR void em_mm_q6_K(", b"__kernel void em_mm_old(")
    b = oc.OpenclBinary("bin/ember.dll", library(repo_root, kernels=stale), ())
    checks = oc.check_opencl([b], entry(repo_root), sources(repo_root))
    assert not ok(checks, ": opencl kernels")
    assert "lacks em_mm_q6_K" in next(c.detail for c in checks
                                      if c.name.endswith(": opencl kernels"))
    assert not ok(checks, ": opencl kernel source")
    # the project's file missing from the tree: nothing to compare with, which fails
    gone = oc.KernelSources(kernels=repo_root / "nope.cl", shown="nope.cl", option="X_OPENCL")
    checks = oc.check_opencl([b], entry(repo_root), gone)
    assert [c.detail for c in checks if not c.ok] == [
        "nope.cl is not in the project's source tree (kiln.toml's [build.device_code] opencl)"]


@pytest.mark.parametrize("adreno, loader", [(False, b"OpenCL.dll"), (True, b"nothing.dll")])
def test_adreno_prefix_and_loader_are_required(repo_root: Path, adreno: bool,
                                                loader: bytes) -> None:
    b = oc.OpenclBinary("bin/ember.dll", library(repo_root, adreno=adreno, loader=loader), ())
    checks = oc.check_opencl([b], entry(repo_root), sources(repo_root))
    failed = [c.name for c in checks if not c.ok]
    want = "bin/ember.dll: opencl loader" if adreno else "bin/ember.dll: adreno kernels"
    assert failed == [want]


# --------------------------------------------------------------------------------------------
# Another project: its own kernel file, header, kernels and option


DEMO_KERNELS = b"""// demo.cl: the demo project's OpenCL kernels
__kernel void demo_add(__global float *a) { a[0] += 1.0f; }
__kernel void demo_mul(__global float *a) { a[0] *= 2.0f; }
"""
DEMO_ADRENO = b"""// adreno prefix of the demo project (cl_qcom_reqd_sub_group_size)
#pragma OPENCL EXTENSION cl_qcom_reqd_sub_group_size : enable
"""
DEMO = Names(name="demo", archive="{name}-b{build}-bin-{id}", option_prefix="DEMO_",
             device_code=(("opencl", "kern/demo.cl"),))


def demo_tree(tmp_path: Path) -> Path:
    src = tmp_path / "native"
    (src / "kern").mkdir(parents=True)
    (src / "kern" / "demo.cl").write_bytes(DEMO_KERNELS)
    (src / "kern" / "adreno.cl").write_bytes(DEMO_ADRENO)
    return src


def test_another_projects_kernels_are_checked_against_its_own_file(repo_root: Path,
                                                                   tmp_path: Path) -> None:
    c = ctx(repo_root, tmp_path, names=DEMO, source=demo_tree(tmp_path), label="native")
    src = oc.kernel_sources(c)
    assert isinstance(src, oc.KernelSources)
    assert src.shown == "native/kern/demo.cl" and src.option == "DEMO_OPENCL"
    b = oc.OpenclBinary("bin/demo.dll", library(repo_root, src=src), ())
    checks = oc.check_opencl([b], c.entry, src)
    assert all(x.ok for x in checks), [(x.name, x.detail) for x in checks]
    line = oc.summary(checks)
    assert "identical to native/kern/demo.cl" in line and "native/kern/adreno.cl" in line
    assert "2 kernels" in next(x.detail for x in checks if x.name.endswith("opencl kernels"))
    # ember's kernels are not the demo project's
    wrong = oc.OpenclBinary("bin/demo.dll", library(repo_root), ())
    failed = [x.detail for x in oc.check_opencl([wrong], c.entry, src) if not x.ok]
    assert failed == ["no binary of bin/ or lib/ embeds native/kern/demo.cl: the build was not "
                      "configured with DEMO_OPENCL=ON"]
    # a stale copy: found by its first line, then compared byte for byte
    stale = DEMO_KERNELS.replace(b"demo_mul", b"demo_old")
    b = oc.OpenclBinary("bin/demo.dll", library(repo_root, src=src, kernels=stale), ())
    failed = [x.detail for x in oc.check_opencl([b], c.entry, src) if not x.ok]
    assert failed[0] == "the embedded source lacks demo_mul"
    assert failed[1].startswith("differs from native/kern/demo.cl")


def test_a_project_without_opencl_device_code_fails_naming_the_table(repo_root: Path,
                                                                     tmp_path: Path) -> None:
    no_code = Names(name="demo", archive="{name}-b{build}-bin-{id}", option_prefix="DEMO_")
    got = oc.kernel_sources(ctx(repo_root, tmp_path, names=no_code))
    assert isinstance(got, Check) and not got.ok
    assert "no device code for opencl" in got.detail and "[build.device_code]" in got.detail
    # the source directory unknown (not given, and kiln's checkout holds another project)
    got = oc.kernel_sources(ctx(repo_root, tmp_path, names=DEMO))
    assert isinstance(got, Check) and not got.ok and "kern/demo.cl" in got.detail
