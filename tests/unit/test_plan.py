from __future__ import annotations

from pathlib import Path

import pytest
from ember_project import NAMES

from kiln.errors import ConfigError, SelectionError
from kiln.matrix import Matrix, load_matrix
from kiln.plan import artifact_name, github_matrix, make_job, plan, select
from kiln.project import Names


@pytest.fixture(scope="module")
def matrix() -> Matrix:
    return load_matrix(Path(__file__).resolve().parents[2] / "matrix")


def ids(entries: object) -> list[str]:
    return [e.id for e in entries]  # type: ignore[attr-defined]


def test_no_selector_means_every_enabled_entry(matrix: Matrix) -> None:
    assert len(select(matrix)) == 25
    assert len(select(matrix, include_disabled=True)) == 27


def test_glob_id_and_union_keep_matrix_order(matrix: Matrix) -> None:
    got = ids(select(matrix, ["win-cpu-*", "macos-*", "ubuntu-x64"]))
    assert got == ["macos-arm64", "macos-x64", "ubuntu-x64", "win-cpu-x64", "win-cpu-arm64"]


def test_attribute_filters(matrix: Matrix) -> None:
    assert ids(select(matrix, ["backend=cuda"])) == [
        "ubuntu-cuda-12.4-x64", "ubuntu-cuda-13.3-x64", "win-cuda-12.4-x64", "win-cuda-13.3-x64"]
    assert ids(select(matrix, ["os=windows,arch=aarch64"])) == [
        "win-cpu-arm64", "win-opencl-adreno-arm64"]
    assert ids(select(matrix, ["gpu_targets=sm_50"])) == [
        "ubuntu-cuda-12.4-x64", "win-cuda-12.4-x64"]
    assert ids(select(matrix, ["verify=qemu"], local=True)) == [
        "ubuntu-arm64", "ubuntu-s390x", "android-arm64", "openeuler-arm64"]


def test_local_and_ci_only(matrix: Matrix) -> None:
    local = select(matrix, local=True)
    ci = select(matrix, ci_only=True)
    assert len(local) + len(ci) == 25
    assert set(ids(ci)) == {"ubuntu-rocm-7.2-x64", "ubuntu-sycl-fp32-x64",
                            "ubuntu-sycl-fp16-x64", "win-sycl-x64", "win-hip-radeon-x64"}
    with pytest.raises(SelectionError):
        select(matrix, local=True, ci_only=True)


def test_disabled_entry_needs_all_and_says_why(matrix: Matrix) -> None:
    with pytest.raises(SelectionError) as info:
        select(matrix, ["macos-arm64-kleidiai"])
    assert "disabled" in info.value.message and "pull/21259" in info.value.message
    assert ids(select(matrix, ["macos-arm64-kleidiai"], include_disabled=True)) == [
        "macos-arm64-kleidiai"]
    # a glob that also hits enabled entries silently drops the disabled one
    assert "macos-arm64-kleidiai" not in ids(select(matrix, ["macos-*"]))


def test_bad_selectors(matrix: Matrix) -> None:
    with pytest.raises(SelectionError) as info:
        select(matrix, ["ubuntu-x46"])
    assert info.value.hint == "did you mean 'ubuntu-x64'?"
    with pytest.raises(SelectionError) as info:
        select(matrix, ["backnd=cuda"])
    assert "did you mean 'backend'?" in (info.value.hint or "")
    with pytest.raises(SelectionError):
        select(matrix, ["backend="])
    with pytest.raises(SelectionError):
        select(matrix, ["backend=metal"])


def test_jobs(matrix: Matrix) -> None:
    jobs = {j.entry.id: j for j in plan(matrix, build_number=4242, include_disabled=True,
                                             names=NAMES)}
    assert len(jobs) == 27
    assert jobs["ubuntu-x64"].artifact == "ember-b4242-bin-ubuntu-x64.tar.gz"
    assert jobs["win-cpu-x64"].artifact == "ember-b4242-bin-win-cpu-x64.zip"
    assert jobs["ubuntu-x64"].target == "x86_64-linux-gnu.2.17"
    cuda = jobs["win-cuda-12.4-x64"]
    opts = dict(cuda.cmake_options)
    assert opts["EMBER_CUDA"] == "ON" and "sm_50" in opts["EMBER_GPU_TARGETS"]
    assert "NVRTC 12.4" in cuda.toolchain and "zig cc" in cuda.toolchain
    assert dict(jobs["ubuntu-sycl-fp16-x64"].cmake_options) == {
        "EMBER_SYCL": "ON", "EMBER_SYCL_F16": "ON"}
    assert "icx" in jobs["ubuntu-sycl-fp16-x64"].toolchain
    data = cuda.to_json()
    assert data["build_number"] == 4242 and data["target"] == "x86_64-windows-gnu"


# Another project's names, by hand: what kiln.toml would give (kiln/project.py).
DEMO = Names(name="demo", archive="{name}-{build}-{id}", option_prefix="DEMO_",
             device_code=(("cuda", "gpu/kernels.cu"),))


def test_kilns_options_take_the_projects_prefix(matrix: Matrix) -> None:
    jobs = {j.entry.id: j for j in plan(matrix, build_number=7, include_disabled=True,
                                         names=DEMO)}
    assert dict(jobs["win-cuda-12.4-x64"].cmake_options) == {
        "DEMO_CUDA": "ON",
        "DEMO_GPU_TARGETS": "sm_50;sm_52;sm_60;sm_61;sm_70;sm_75;sm_80;sm_86;sm_89;sm_90;"
                            "compute_90"}
    assert dict(jobs["ubuntu-rocm-7.2-x64"].cmake_options)["DEMO_HIP"] == "ON"
    assert dict(jobs["ubuntu-x64"].cmake_options) == {}
    # the entry's own options are the matrix's, as written
    assert dict(jobs["ubuntu-sycl-fp16-x64"].cmake_options) == {
        "DEMO_SYCL": "ON", "EMBER_SYCL_F16": "ON"}
    assert jobs["ubuntu-x64"].artifact == "demo-7-ubuntu-x64.tar.gz"
    assert artifact_name(matrix.get("win-cpu-x64"), 7, DEMO) == "demo-7-win-cpu-x64.zip"
    assert jobs["ubuntu-x64"].names is DEMO


def test_a_project_without_a_prefix_builds_cpu_entries_only(matrix: Matrix) -> None:
    bare = Names(name="bare", archive="{name}-b{build}-bin-{id}")
    cpu = plan(matrix, ["backend=cpu"], build_number=3, names=bare)
    assert cpu and all(j.cmake_options == () for j in cpu)
    with pytest.raises(ConfigError) as info:
        plan(matrix, ["ubuntu-x64", "ubuntu-cuda-12.4-x64"], build_number=3, names=bare)
    assert "bare has no [build] option_prefix" in info.value.message
    assert "CUDA" in info.value.message and "option_prefix" in (info.value.hint or "")
    with pytest.raises(ConfigError, match="option_prefix"):
        make_job(matrix.get("ubuntu-vulkan-x64"), 3, bare)


def test_github_matrix(matrix: Matrix) -> None:
    gm = github_matrix(select(matrix, include_disabled=True))
    assert len(gm["include"]) == 25
    rocm = next(i for i in gm["include"] if i["id"] == "ubuntu-rocm-7.2-x64")
    assert rocm["container"].startswith("rocm/") and rocm["runner"]
    assert all(set(i) >= {"id", "runner"} for i in gm["include"])
