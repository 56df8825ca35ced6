"""kiln/build/toolchains/vulkan.py and kiln/verify/lavapipe.py without glslc or a GPU: the pins
and how they are checked, the job identity, and how the verifier decides that ember-cli ran on
lavapipe (and not on its CPU path) and what it needs for each platform."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from ember_project import NAMES

import kiln.build.jobs
import kiln.verify
from kiln.build.toolchains import TOOLCHAINS, vulkan
from kiln.build.toolchains.recipe import load_recipe, load_verify_spec
from kiln.errors import ConfigError, ToolMissing
from kiln.matrix import load_matrix
from kiln.plan import make_job
from kiln.project import Names
from kiln.run import Completed
from kiln.verify.lavapipe import LavapipeVerifier, device_check, manifest_for

ROOT = Path(__file__).resolve().parents[2]
IDS = ("ubuntu-vulkan-x64", "ubuntu-vulkan-arm64", "win-vulkan-x64")


def test_registered() -> None:
    assert isinstance(TOOLCHAINS["vulkan"], vulkan.VulkanToolchain)
    assert load_recipe(ROOT / "recipes", "vulkan").toolchain == "vulkan"
    assert isinstance(kiln.verify.VERIFIERS["lavapipe"], LavapipeVerifier)
    # a run-based method: the host build is built first for its reference ids
    assert "lavapipe" in kiln.build.jobs.RUN_METHODS


@pytest.mark.parametrize(("text", "version"), [
    ("shaderc 2023.2-1\nspirv-tools 2022.4+1.3.236.0-1\nglslang 11.13.0-1\n", "2023.2"),
    ("shaderc v2023.8 v2023.8\nspirv-tools v2023.6 v2023.6\n", "2023.8"),
    ("glslangValidator 11\n", None),
])
def test_glslc_version(text: str, version: str | None) -> None:
    assert vulkan.glslc_version(text) == version


def _headers(tmp_path: Path, version: int) -> Path:
    (tmp_path / "vulkan").mkdir()
    (tmp_path / "vulkan" / "vulkan_core.h").write_text(
        f"// comment\n#define VK_HEADER_VERSION {version}\n", encoding="utf-8")
    return tmp_path


def test_headers_are_checked_by_version(tmp_path: Path) -> None:
    assert vulkan.headers_version(tmp_path) is None
    with pytest.raises(ToolMissing) as missing:
        vulkan.VulkanToolchain(tmp_path)._check_headers()
    assert missing.value.hint == "apt-get install -y libvulkan-dev"
    _headers(tmp_path, 231)
    assert vulkan.headers_version(tmp_path) == 231
    with pytest.raises(ConfigError, match=re.escape("1.3.239 or newer")):
        vulkan.VulkanToolchain(tmp_path)._check_headers()


def test_glslc_must_be_the_pinned_release(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vulkan, "require_tool", lambda program, path=None: "/opt/glslc")

    def version(out: str) -> Any:
        def fake(argv: Sequence[str], **kw: Any) -> Completed:
            return Completed(argv=tuple(argv), returncode=0, stdout=out, stderr="")
        return fake

    monkeypatch.setattr(vulkan, "run", version("shaderc v2024.1 v2024.1\n"))
    pin = re.escape("shaderc 2024.1; the Vulkan builds pin 2023.2")
    with pytest.raises(ToolMissing, match=pin):
        vulkan.VulkanToolchain()._glslc({})
    monkeypatch.setattr(vulkan, "run", version("shaderc 2023.2-1\n"))
    assert vulkan.VulkanToolchain()._glslc({}) == "/opt/glslc"


@pytest.mark.parametrize("entry_id", IDS)
def test_identity_carries_both_pins(entry_id: str) -> None:
    m = load_matrix(ROOT / "matrix")
    recipe = load_recipe(ROOT / "recipes", "vulkan")
    job = make_job(m.get(entry_id), 1, NAMES)
    ident = TOOLCHAINS["vulkan"].identity(job, recipe)
    assert ident.toolchain == "zig+glslc"
    assert ident.version.endswith("+glslc-2023.2+vulkan-headers-1.3.239")
    options = dict(ident.cmake_options)
    assert options["EMBER_VULKAN"] == "ON" and options["EMBER_GLSLC_VERSION"] == "2023.2"
    # nothing about where the tools are: the identity is the cache key on every machine
    assert not any("/" in v for v in options.values())


def test_the_options_take_the_projects_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    """glslc, its pinned version and the headers reach the project's CMake under its own
    option prefix (kiln.toml [build] option_prefix)."""
    demo = Names(name="demo", archive="{name}-{build}-{id}", option_prefix="DEMO_")
    job = make_job(load_matrix(ROOT / "matrix").get("ubuntu-vulkan-x64"), 1, demo)
    tc = vulkan.VulkanToolchain(headers=Path("/opt/vk/include"))
    ident = tc.identity(job, load_recipe(ROOT / "recipes", "vulkan"))
    options = dict(ident.cmake_options)
    assert options["DEMO_VULKAN"] == "ON" and options["DEMO_GLSLC_VERSION"] == "2023.2"
    monkeypatch.setattr(vulkan.VulkanToolchain, "_glslc", lambda self, env: "/opt/glslc")
    monkeypatch.setattr(vulkan.VulkanToolchain, "_check_headers", lambda self: None)
    _, step = tc.device_step(job, paths=None, source=Path("/src"),  # type: ignore[arg-type]
                             build=Path("/b"), work=Path("/w"))
    assert step == {"DEMO_GLSLC": "/opt/glslc", "DEMO_GLSLC_VERSION": "2023.2",
                    "DEMO_VULKAN_INCLUDE_DIR": "/opt/vk/include"}


def _json(backend: str, device: str) -> str:
    return "noise\n" + json.dumps({"prompt_ids": [1], "generated_ids": [2],
                                   "backend": backend, "device": device}) + "\n"


def test_device_check_wants_vulkan_on_llvmpipe() -> None:
    lvp = "llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan 1.3.230, f64)"
    assert device_check(_json("vulkan", lvp)).ok
    fell_back = device_check(_json("cpu", "cpu"))
    assert not fell_back.ok and "expected backend vulkan" in fell_back.detail
    assert not device_check(_json("vulkan", "NVIDIA GeForce RTX 4090 (Vulkan 1.3.277, f64)")).ok
    assert not device_check("no json here\n").ok


def test_manifests_and_needs_per_platform() -> None:
    assert manifest_for("x86_64") == Path("/usr/share/vulkan/icd.d/lvp_icd.x86_64.json")
    assert manifest_for("aarch64").name == "lvp_icd.aarch64.json"
    m = load_matrix(ROOT / "matrix")
    spec = load_verify_spec(ROOT / "recipes")
    v = LavapipeVerifier()
    win = {n.program for n in v.needs(m.get("win-vulkan-x64"), spec) if n.program}
    assert win == {"wine", "xvfb-run"}
    linux = v.needs(m.get("ubuntu-vulkan-x64"), spec)
    assert [n.path for n in linux] == ["/usr/share/vulkan/icd.d"]
    assert "mesa-vulkan-drivers" in linux[0].hint
