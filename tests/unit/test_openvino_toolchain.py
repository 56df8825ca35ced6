"""kiln/build/toolchains/openvino.py and kiln/verify/openvino_cpu.py without PyPI: the pin, the
exact command a failed download names, unpacking a wheel (only libs/ and the C headers are
kept), and how the verifier decides that ember-cli ran on OpenVINO's CPU plugin."""

from __future__ import annotations

import json
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from ember_project import NAMES

import kiln.build.jobs
import kiln.verify
from kiln.build.toolchains import TOOLCHAINS, openvino
from kiln.build.toolchains.base import ToolchainPaths
from kiln.build.toolchains.recipe import load_recipe
from kiln.errors import CommandFailed, ConfigError
from kiln.matrix import load_matrix
from kiln.plan import make_job
from kiln.verify.openvino_cpu import OpenvinoCpuVerifier, device_check

ROOT = Path(__file__).resolve().parents[2]


def paths(tmp_path: Path) -> ToolchainPaths:
    return ToolchainPaths(root=tmp_path / "toolchains", zig_cache=tmp_path / "zig")


def fake_wheel(folder: Path, os_name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lib = "libopenvino_c.so.2621" if os_name == "linux" else "openvino_c.dll"
    with zipfile.ZipFile(folder / "openvino-2026.2.1-21919-cp312-cp312-x.whl", "w") as zf:
        zf.writestr(f"openvino/libs/{lib}", b"\x7fELF")
        zf.writestr("openvino/libs/libopenvino_intel_cpu_plugin.so", b"plugin")
        zf.writestr("openvino/include/openvino/c/ov_core.h", "/* header */\n")
        zf.writestr("openvino/include/openvino/core/node.hpp", "// C++, not kept\n")
        zf.writestr("openvino/__init__.py", "# the Python package, not kept\n")


def test_registered_and_pinned_to_an_exact_version() -> None:
    assert isinstance(TOOLCHAINS["openvino"], openvino.OpenvinoToolchain)
    assert openvino.OPENVINO_PINS == {"2026.2": "2026.2.1"}
    assert isinstance(kiln.verify.VERIFIERS["openvino-cpu"], OpenvinoCpuVerifier)
    # a run-based method: the host build is built first for its reference ids
    assert "openvino-cpu" in kiln.build.jobs.RUN_METHODS


def test_download_unpacks_only_the_runtime_and_the_c_headers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def pip(argv: Sequence[str], **kw: Any) -> None:
        calls.append([str(a) for a in argv])
        fake_wheel(Path(argv[argv.index("-d") + 1]), "linux")

    monkeypatch.setattr(openvino, "run", pip)
    p = paths(tmp_path)
    root = openvino.install_openvino(p, "2026.2", "linux", env={})
    assert root == p.root / "openvino-2026.2.1" / "linux"
    assert (root / "libs" / "libopenvino_c.so.2621").is_file()
    assert (root / "libs" / "libopenvino_intel_cpu_plugin.so").is_file()
    assert (root / "include" / "openvino" / "c" / "ov_core.h").is_file()
    assert not (root / "include" / "openvino" / "core").exists()
    assert not (root / "__init__.py").exists() and not (root / "wheel").exists()
    assert openvino.runtime_library(root, "linux") == root / "libs" / "libopenvino_c.so.2621"
    assert calls[0][-1] == "openvino==2026.2.1"
    assert "manylinux_2_28_x86_64" in calls[0] and "--only-binary=:all:" in calls[0]
    # installed once: a second call does not download
    assert openvino.install_openvino(p, "2026.2", "linux", env={}) == root
    assert len(calls) == 1


def test_failed_download_names_the_exact_command(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def no_index(argv: Sequence[str], **kw: Any) -> None:
        raise CommandFailed("pip download failed with exit code 1", output="no such version")

    monkeypatch.setattr(openvino, "run", no_index)
    p = paths(tmp_path)
    with pytest.raises(CommandFailed) as err:
        openvino.install_openvino(p, "2026.2", "windows", env={})
    want = openvino.install_command(p, "2026.2", "windows")
    assert want.startswith(f"{sys.executable} -m pip download --no-deps")
    assert "--platform win_amd64" in want and want.endswith("openvino==2026.2.1")
    assert want in (err.value.hint or "")
    assert not (p.root / "openvino-2026.2.1" / "windows").exists()
    with pytest.raises(ConfigError, match=r"no OpenVINO runtime pinned for '2025\.1'"):
        openvino.install_openvino(p, "2025.1", "linux", env={})
    with pytest.raises(ConfigError, match="not macos"):
        openvino.install_openvino(p, "2026.2", "macos", env={})


def test_a_wheel_without_the_c_library_is_refused(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def pip(argv: Sequence[str], **kw: Any) -> None:
        fake_wheel(Path(argv[argv.index("-d") + 1]), "linux")  # no openvino_c.dll in it

    monkeypatch.setattr(openvino, "run", pip)
    with pytest.raises(ConfigError, match=r"has no libs/openvino_c\.dll"):
        openvino.install_openvino(paths(tmp_path), "2026.2", "windows", env={})


def test_identity_carries_the_pin_and_both_entries_use_the_recipe() -> None:
    m = load_matrix(ROOT / "matrix")
    recipe = load_recipe(ROOT / "recipes", "openvino")
    assert recipe.toolchain == "openvino"
    for eid in ("ubuntu-openvino-2026.2-x64", "win-openvino-2026.2-x64"):
        job = make_job(m.get(eid), 1, NAMES)
        ident = TOOLCHAINS["openvino"].identity(job, recipe)
        assert ident.toolchain == "zig+openvino"
        assert ident.version.endswith("+openvino-2026.2.1")
        assert ("EMBER_OPENVINO", "ON") in ident.cmake_options


def _json(backend: str, device: str) -> str:
    return "noise\n" + json.dumps({"prompt_ids": [1], "generated_ids": [2], "backend": backend,
                                   "device": device}) + "\n"


def test_device_check_wants_the_cpu_plugin_in_f32() -> None:
    ok = device_check(_json("openvino", "Intel(R) Xeon(R) (OpenVINO 2026.2.1, CPU plugin, f32)"))
    assert ok.ok, ok.detail
    assert not device_check(_json("cpu", "cpu")).ok
    assert not device_check(_json("openvino", "Intel(R) Xeon(R) (OpenVINO 2026.2.1, CPU plugin, "
                                              "bf16)")).ok
    assert not device_check(_json("openvino", "Intel(R) Arc (OpenVINO 2026.2.1, GPU plugin, "
                                              "f32)")).ok
    none = device_check("ember-cli: error\n")
    assert not none.ok and "no JSON" in none.detail
