"""The HIP kernels (runtime/src/backends/hip/ember_kernels.hip, the CUDA source for hipcc) compile
with Debian's hipcc into a code-object bundle for the gfx targets of the matrix's hip profile
that this hipcc knows, and kiln/build/toolchains/hip.py reads exactly those back out of it. The
ROCm 7.2 entries themselves build in CI (ci-only): kiln refuses any other hipcc version."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kiln.build.toolchains import hip
from kiln.build.toolchains.base import ToolchainPaths
from kiln.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "runtime" / "src" / "backends" / "hip" / "ember_kernels.hip"
# Debian's ROCm 5.2 hipcc knows these of backends.yaml's hip@7.2 list (gfx942, gfx110x and
# gfx120x need a newer LLVM: they are compiled by the ci-only ROCm 7.2 jobs).
TARGETS = ["gfx908", "gfx90a", "gfx1030"]

pytestmark = pytest.mark.integration


@pytest.fixture
def hipcc() -> Path:
    found = shutil.which("hipcc")
    if found is None:
        pytest.skip("hipcc is not installed: apt-get install -y hipcc")
    return Path(found)


def test_hip_kernels_compile(hipcc: Path, tmp_path: Path) -> None:
    data = hip.compile_bundle(hipcc, SOURCE, TARGETS, tmp_path / "ember_kernels.hsaco",
                              env=dict(os.environ))
    assert data.startswith(hip.BUNDLE_MAGIC)
    found = hip.scan_bundles(b"host code before" + data + b"and after")
    assert hip.check_gfx_targets(found, TARGETS) == []
    # every kernel the host side launches is in every code object
    for name in (b"em_matmul_q4_K", b"em_matmul_bf16", b"em_attention", b"em_rope",
                 b"em_rmsnorm", b"em_kv_store", b"em_swiglu", b"em_add"):
        assert data.count(name) >= len(TARGETS), name
    out = tmp_path / "ember_hip_blobs.c"
    hip.emit_c(data, TARGETS, out, toolchain="hipcc test", origin=SOURCE.name)
    assert "em_hip_n_blobs = 1;" in out.read_text()


def test_other_hip_versions_are_refused(hipcc: Path, tmp_path: Path) -> None:
    done = subprocess.run([str(hipcc), "--version"], capture_output=True, text=True,
                          env=dict(os.environ, HIP_PLATFORM="amd"), check=False)
    version = hip.parse_hip_version(done.stdout)
    if version is not None and version.startswith(hip.HIP_VERSION + "."):
        pytest.skip(f"this hipcc is HIP {version}, the version kiln builds with")
    env = {**os.environ, "ROCM_PATH": str(hipcc.parent.parent)}
    with pytest.raises(ConfigError) as err:
        hip.HipToolchain().install(
            ToolchainPaths(root=tmp_path / "toolchains", zig_cache=tmp_path / "zig"),
            python="python3", env=env)
    assert f"is HIP {version}" in err.value.message
    assert "rocm/dev-ubuntu-24.04:7.2-complete" in (err.value.hint or "")
