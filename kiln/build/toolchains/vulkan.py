"""Vulkan entries: zig for the host code (exactly as the cpu backend) + glslc for the shaders.

kiln's Vulkan builds assume a backend that opens the loader (``libvulkan.so.1`` /
``vulkan-1.dll``) at run time and takes every entry point from ``vkGetInstanceProcAddr`` (the
headers are used with ``VK_NO_PROTOTYPES``), so nothing links against Vulkan and every target
cross-compiles with zig like the CPU build. The device code is GLSL that the project's CMake
compiles to SPIR-V with glslc at build time and embeds in the library: SPIR-V is the same for
every OS and CPU, so one host compiler serves Linux x86_64, Linux aarch64 and Windows. kiln
passes the project's CMake (``<option_prefix>`` from kiln.toml ``[build]``) the glslc to use
(``<option_prefix>GLSLC``), its pinned version (``<option_prefix>GLSLC_VERSION``) and the
headers' directory (``<option_prefix>VULKAN_INCLUDE_DIR``).

Where the two host tools come from (decided here, once): neither ships in a registry kiln can
install into its cache (shaderc has no PyPI wheel with the glslc binary, and the Khronos headers
package on PyPI is not pinned to a loader release), so both are Debian packages of the build
host, and kiln pins and checks them instead of installing them:

- ``glslc`` (package ``glslc``) at exactly ``GLSLC_VERSION``; CMake re-checks it
  (``<option_prefix>GLSLC_VERSION``) so a build with another glslc fails instead of embedding
  different SPIR-V;
- the Vulkan headers (package ``libvulkan-dev``) at ``VULKAN_HEADERS_VERSION`` or newer: only
  ``vulkan/vulkan_core.h`` and ``vk_platform.h`` (+ ``vk_video/``) are used, copied into the
  build tree by CMake so that zig's cross compiles see them without the rest of the host's
  ``/usr/include``. Nothing is vendored into the repository.

Both versions are part of the job's identity (cache key, BUILD-INFO.json).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from kiln.errors import ConfigError, ToolMissing
from kiln.package.records import Tool
from kiln.plan import Job
from kiln.run import install_hint, require_tool, run
from kiln.build.toolchains.base import ToolchainPaths
from kiln.build.toolchains.hosted import DeviceStep, ZigHostedToolchain

__all__ = ["GLSLC_VERSION", "VULKAN_HEADERS_VERSION", "VulkanToolchain", "glslc_version",
           "headers_version"]

GLSLC_VERSION = "2023.2"          # shaderc release of Debian 12's glslc 2023.2-1
VULKAN_HEADERS_VERSION = 239      # VK_HEADER_VERSION of Debian 12's libvulkan-dev 1.3.239
HEADERS_DIR = Path("/usr/include")
HEADERS_PACKAGE = "apt-get install -y libvulkan-dev"


def glslc_version(text: str) -> str | None:
    """The shaderc release in ``glslc --version`` output: Debian prints ``shaderc 2023.2-1``,
    upstream builds ``shaderc v2023.2 v2023.2``."""
    m = re.search(r"shaderc v?(\d+\.\d+)", text)
    return m.group(1) if m else None


def headers_version(include: Path) -> int | None:
    """``VK_HEADER_VERSION`` of the headers under ``include``, or None when they are absent."""
    core = include / "vulkan" / "vulkan_core.h"
    if not core.is_file():
        return None
    m = re.search(r"^#define VK_HEADER_VERSION (\d+)", core.read_text(encoding="utf-8"),
                  re.MULTILINE)
    return int(m.group(1)) if m else None


class VulkanToolchain(ZigHostedToolchain):
    """Registered as ``vulkan`` (recipes/vulkan.yaml): zig for the host code, the host's pinned
    glslc and Vulkan headers for the shaders."""

    name = "vulkan"
    label = "zig+glslc"

    def __init__(self, headers: Path = HEADERS_DIR) -> None:
        super().__init__()
        self._headers = headers

    def _glslc(self, env: Mapping[str, str]) -> str:
        glslc = require_tool("glslc", path=env.get("PATH"))
        got = glslc_version(run([glslc, "--version"], env=env, what="glslc --version").stdout)
        if got != GLSLC_VERSION:
            raise ToolMissing(f"glslc at {glslc} is shaderc {got or '(unknown)'}; the Vulkan "
                              f"builds pin {GLSLC_VERSION}",
                              hint=f"{install_hint('glslc')} (Debian 12), or change "
                                   "GLSLC_VERSION in kiln/build/toolchains/vulkan.py after checking "
                                   "the shaders with the new one")
        return glslc

    def _check_headers(self) -> None:
        got = headers_version(self._headers)
        if got is None:
            raise ToolMissing(f"the Vulkan headers are not installed "
                              f"({self._headers / 'vulkan' / 'vulkan_core.h'} is missing)",
                              hint=HEADERS_PACKAGE)
        if got < VULKAN_HEADERS_VERSION:
            raise ConfigError(f"the Vulkan headers in {self._headers} are 1.x.{got}; "
                              f"1.3.{VULKAN_HEADERS_VERSION} or newer is needed",
                              hint=HEADERS_PACKAGE)

    def prepare(self, paths: ToolchainPaths, env: Mapping[str, str]) -> None:
        self._glslc(env)
        self._check_headers()

    def device_tools(self, job: Job) -> tuple[Tool, ...]:
        # The Vulkan headers are a floor (VULKAN_HEADERS_VERSION or newer), not a pin: the
        # shaders' compiler is what makes the embedded bytes.
        return (Tool(name="glslc", version=GLSLC_VERSION),)

    def identity_extras(self, job: Job) -> tuple[str, Mapping[str, str]]:
        return (f"+glslc-{GLSLC_VERSION}+vulkan-headers-1.3.{VULKAN_HEADERS_VERSION}",
                {job.names.option("GLSLC_VERSION"): GLSLC_VERSION})

    def device_step(self, job: Job, *, paths: ToolchainPaths, source: Path, build: Path,
                    work: Path) -> DeviceStep:
        option = job.names.option
        glslc = self._glslc(os.environ)
        self._check_headers()
        return (f"glslc-{GLSLC_VERSION}:vulkan-headers-{VULKAN_HEADERS_VERSION}",
                {option("GLSLC"): glslc, option("GLSLC_VERSION"): GLSLC_VERSION,
                 option("VULKAN_INCLUDE_DIR"): str(self._headers)})
