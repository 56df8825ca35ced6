"""kiln/build/toolchains/cuda.py without PyPI: the pins, the exact install command a failed install
names, an install made by hand with that command, and the build identity."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from kiln.build.toolchains import TOOLCHAINS, cuda
from kiln.build.toolchains.base import ToolchainPaths
from kiln.build.toolchains.recipe import load_recipe
from kiln.errors import CommandFailed, ConfigError
from kiln.matrix import load_matrix
from kiln.plan import make_job


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
    a = tc.identity(make_job(m.get("ubuntu-cuda-12.4-x64"), 1), recipe)
    b = tc.identity(make_job(m.get("ubuntu-cuda-13.3-x64"), 1), recipe)
    assert a.toolchain == "zig+cuda" and a.target == "x86_64-linux-gnu.2.17"
    assert "nvidia-cuda-nvrtc-cu12==12.4.127" in a.version
    assert "nvidia-cuda-nvcc==13.3.73" in b.version and a.version != b.version
