"""kiln/build/toolchains/cuda.py without PyPI: the pins, the exact install command a failed install
names, an install made by hand with that command, and the build identity."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from ember_project import EMBER, NAMES

from kiln.build.toolchains import TOOLCHAINS, cuda
from kiln.build.toolchains.base import ToolchainPaths
from kiln.build.toolchains.recipe import load_recipe
from kiln.errors import CommandFailed, ConfigError
from kiln.matrix import load_matrix
from kiln.plan import make_job
from kiln.project import Names


def paths(tmp_path: Path) -> ToolchainPaths:
    return ToolchainPaths(root=tmp_path / "toolchains", zig_cache=tmp_path / "zig")


def test_registered_and_pinned_to_exact_versions() -> None:
    assert isinstance(TOOLCHAINS["cuda"], cuda.CudaToolchain)
    for pins in cuda.CUDA_PINS.values():
        assert all("==" in p and "*" not in p for p in pins)
    assert "nvidia-cuda-nvcc==13.3.73" in cuda.CUDA_PINS["13.3"]
    assert cuda.CUDA_PINS["12.4"] == ("nvidia-cuda-nvrtc-cu12==12.4.127",
                                      "nvidia-cuda-nvcc-cu12==12.4.131")


def test_failed_install_names_the_exact_command(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def no_index(argv: Sequence[str], **kw: Any) -> None:
        raise CommandFailed("pip install CUDA 12.4 device compiler failed with exit code 1",
                            output="ERROR: Could not find a version")

    monkeypatch.setattr(cuda, "run", no_index)
    p = paths(tmp_path)
    with pytest.raises(CommandFailed) as err:
        cuda.install_cuda(p, "12.4", env={})
    want = (f"{sys.executable} -m pip install --no-deps --target "
            f"{p.root / 'cuda-12.4'} nvidia-cuda-nvrtc-cu12==12.4.127 "
            "nvidia-cuda-nvcc-cu12==12.4.131")
    assert cuda.install_command(p, "12.4") == want
    assert want in (err.value.hint or "")
    assert not (p.root / "cuda-12.4").exists()  # nothing half-installed is left
    with pytest.raises(ConfigError, match=r"no device compiler pinned for CUDA 11\.8"):
        cuda.install_cuda(p, "11.8", env={})


def test_an_install_made_by_hand_with_that_command_is_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_run(argv: Sequence[str], **kw: Any) -> None:
        raise AssertionError(f"pip ran: {argv}")

    monkeypatch.setattr(cuda, "run", must_not_run)
    p = paths(tmp_path)
    dest = p.root / "cuda-12.4"
    for tool in cuda._tools(dest, "12.4").values():
        tool.parent.mkdir(parents=True, exist_ok=True)
        tool.write_bytes(b"")
    (dest / "nvidia_cuda_nvrtc_cu12-12.4.127.dist-info").mkdir()
    # one wheel in another version: not what kiln pins, so kiln would install (and fail here)
    (dest / "nvidia_cuda_nvcc_cu12-12.4.99.dist-info").mkdir()
    with pytest.raises(AssertionError, match="pip ran"):
        cuda.install_cuda(p, "12.4", env={})
    (dest / "nvidia_cuda_nvcc_cu12-12.4.131.dist-info").mkdir()
    assert cuda.install_cuda(p, "12.4", env={}) == dest
    assert (dest / cuda.COMPLETE).is_file()


def test_identity_carries_the_device_compiler_pins(repo_root: Path) -> None:
    m = load_matrix(repo_root / "matrix")
    recipe = load_recipe(repo_root / "recipes", "cuda")
    tc = cuda.CudaToolchain()
    a = tc.identity(make_job(m.get("ubuntu-cuda-12.4-x64"), 1, NAMES), recipe)
    b = tc.identity(make_job(m.get("ubuntu-cuda-13.3-x64"), 1, NAMES), recipe)
    assert a.toolchain == "zig+cuda" and a.target == "x86_64-linux-gnu.2.17"
    assert "nvidia-cuda-nvrtc-cu12==12.4.127" in a.version
    assert "nvidia-cuda-nvcc==13.3.73" in b.version and a.version != b.version


# Another project, by hand: kiln.toml's names (kiln/project.py) for a project named demo.
DEMO = Names(name="demo", archive="{name}-{build}-{id}", option_prefix="DEMO_",
             device_code=(("cuda", "gpu/kernels.cu"),))


def test_device_step_takes_the_projects_names(tmp_path: Path, repo_root: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernels are kiln.toml's [build.device_code] cuda, the generated C file and the
    intermediate files are named after the project, the option after its prefix."""
    source = tmp_path / "proj"
    (source / "gpu").mkdir(parents=True)
    (source / "gpu" / "kernels.cu").write_text("__global__ void k() {}\n")
    calls: list[dict[str, Any]] = []

    def compiled(root: Path, version: str, kernels: Path, targets: tuple[str, ...],
                 out_c: Path, work: Path, **kw: str) -> None:
        calls.append({"kernels": kernels, "out_c": out_c, "targets": targets, **kw})

    monkeypatch.setattr(cuda, "install_cuda", lambda p, v, env: tmp_path / "cuda")
    monkeypatch.setattr(cuda, "compile_device_code", compiled)
    job = make_job(load_matrix(repo_root / "matrix").get("ubuntu-cuda-13.3-x64"), 1, DEMO)
    assert dict(job.cmake_options)["DEMO_CUDA"] == "ON"
    check, options = cuda.CudaToolchain().device_step(
        job, paths=paths(tmp_path), source=source, build=tmp_path / "build",
        work=tmp_path / "work")
    blobs = tmp_path / "build" / "demo_cuda_blobs.c"
    assert check == "cuda-13.3" and options == {"DEMO_CUDA_BLOBS": str(blobs)}
    assert calls == [{"kernels": source / "gpu" / "kernels.cu", "out_c": blobs,
                      "targets": tuple(job.entry.gpu_targets), "name": "demo",
                      "origin": "proj/gpu/kernels.cu"}]
    # this repository's project: the device code and names its kiln.toml gives
    assert EMBER.source_dir is not None
    ember_source = EMBER.root / EMBER.source_dir
    ember = make_job(load_matrix(repo_root / "matrix").get("ubuntu-cuda-13.3-x64"), 1, NAMES)
    calls.clear()
    _, options = cuda.CudaToolchain().device_step(
        ember, paths=paths(tmp_path), source=ember_source, build=tmp_path / "build",
        work=tmp_path / "work")
    assert list(options) == [NAMES.option("CUDA_BLOBS")]
    assert calls[0]["kernels"] == ember_source / NAMES.device_source("cuda")
    assert calls[0]["out_c"].name == f"{NAMES.name}_cuda_blobs.c"


def test_device_step_without_the_device_code_is_refused_before_installing(
        tmp_path: Path, repo_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_install(*a: Any, **kw: Any) -> Path:
        raise AssertionError("installed a device compiler for nothing")

    monkeypatch.setattr(cuda, "install_cuda", must_not_install)
    entry = load_matrix(repo_root / "matrix").get("ubuntu-cuda-12.4-x64")
    no_code = make_job(entry, 1, Names(name="demo", archive="{name}-{build}-{id}",
                                       option_prefix="DEMO_"))
    with pytest.raises(ConfigError) as info:
        cuda.CudaToolchain().device_step(no_code, paths=paths(tmp_path), source=tmp_path,
                                         build=tmp_path / "b", work=tmp_path / "w")
    assert "names no device code for cuda" in info.value.message
    assert "[build.device_code]" in (info.value.hint or "")
    missing = make_job(entry, 1, DEMO)
    with pytest.raises(ConfigError) as info:
        cuda.CudaToolchain().device_step(missing, paths=paths(tmp_path), source=tmp_path,
                                         build=tmp_path / "b", work=tmp_path / "w")
    assert f"{tmp_path / 'gpu' / 'kernels.cu'} not found" in info.value.message


def test_intermediate_files_are_named_after_the_project(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []

    def fake(argv: Sequence[str], what: str) -> None:
        out = Path(argv[argv.index("-o") + 1])
        made.append(out.name)
        out.write_bytes(b"x")

    monkeypatch.setattr(cuda.cuda_device, "_run", fake)
    cuda.cuda_device.compile_nvcc(Path("nvcc"), tmp_path / "k.cu", ["sm_80", "compute_90"],
                                  tmp_path / "obj", name="demo")
    assert made == ["demo_sm_80.cubin", "demo_compute_90.ptx"]
