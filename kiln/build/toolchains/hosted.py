"""Toolchains whose host code zig builds and which add one device step of their own.

Every GPU toolchain (CUDA, HIP, Vulkan, OpenVINO) compiles the project's C code exactly as the
CPU entries do, with zig, and differs only in what happens around it: a host tool to check, device
code to compile and embed, a runtime to fetch for the verifier. ``ZigHostedToolchain`` holds the
shared half (install zig, derive the identity and the configured build from zig's) and calls
three hooks, each a no-op by default:

- ``prepare(paths, env)``: before zig is installed (check or fetch host tools);
- ``identity_extras(job)``: what the device step adds to the job's identity (cache key);
- ``device_step(job, ...)``: before zig configures the job (compile device code, fetch
  runtimes); returns the ccache compiler-check suffix and extra CMake options.

What the project calls things comes with the job (``job.names``, from kiln.toml): the CMake
options a hook adds are ``job.names.option(...)``, the device code it compiles is
``device_source``'s, and the files it generates are named after the project.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from kiln.errors import ConfigError
from kiln.package.records import Tool
from kiln.plan import Job
from kiln.project import FILE as PROJECT_FILE
from kiln.project import Names
from kiln.build.toolchains.base import Configured, Identity, Installed, ToolchainPaths
from kiln.build.toolchains.recipe import Recipe
from kiln.build.toolchains.zig import ZigToolchain

__all__ = ["DeviceStep", "ZigHostedToolchain", "device_source"]

# (compiler-check suffix without the leading ':', extra CMake options)
DeviceStep = tuple[str, Mapping[str, str]]


def device_source(names: Names, backend: str, source: Path) -> tuple[Path, str]:
    """The project's device code for ``backend`` (kiln.toml ``[build.device_code]``, relative
    to the source directory ``source``), and how a generated file names it: the source
    directory's name, then the path (``src/kernels.cu`` of ``proj/``: ``proj/src/kernels.cu``).
    A ``ConfigError`` when kiln.toml names none or the file is not there."""
    rel = names.device_source(backend)
    path = source / rel
    if not path.is_file():
        raise ConfigError(f"{path} not found: the {backend} device code of project "
                          f"{names.name}",
                          hint=f"[build.device_code] {backend} in {PROJECT_FILE} names it, "
                               "relative to the project's source directory")
    return path, (Path(source.name) / rel).as_posix()


def _merged(base: tuple[tuple[str, str], ...],
            extra: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    if not extra:
        return base
    options = dict(base)
    options.update(extra)
    return tuple(sorted(options.items()))


class ZigHostedToolchain:
    """zig for the host code plus one device step; subclasses set ``name`` and ``label`` (the
    identity's toolchain name, e.g. ``zig+cuda``) and override the hooks they need."""

    name: str
    label: str
    version = ZigToolchain.version

    def __init__(self) -> None:
        self._zig = ZigToolchain()

    # -- hooks -------------------------------------------------------------------------------

    def prepare(self, paths: ToolchainPaths, env: Mapping[str, str]) -> None:
        """Check or fetch host tools before zig is installed."""

    def identity_extras(self, job: Job) -> tuple[str, Mapping[str, str]]:
        """The version suffix (appended to zig's) and CMake options the device step adds."""
        return "", {}

    def device_step(self, job: Job, *, paths: ToolchainPaths, source: Path, build: Path,
                    work: Path) -> DeviceStep:
        """Runs before zig configures ``job``: compile device code, fetch runtimes."""
        return "", {}

    def device_tools(self, job: Job) -> tuple[Tool, ...]:
        """The device-code compilers the device step runs, at their pinned versions."""
        return ()

    # -- the Toolchain protocol ----------------------------------------------------------------

    def install(self, paths: ToolchainPaths, *, python: str, env: Mapping[str, str],
                log_file: Path | None = None) -> Installed:
        self.prepare(paths, env)
        installed = self._zig.install(paths, python=python, env=env, log_file=log_file)
        return replace(installed, name=self.name)

    def tools(self, job: Job) -> tuple[Tool, ...]:
        return self._zig.tools(job) + self.device_tools(job)

    def identity(self, job: Job, recipe: Recipe) -> Identity:
        ident = self._zig.identity(job, recipe)
        suffix, options = self.identity_extras(job)
        return replace(ident, toolchain=self.label, version=ident.version + suffix,
                       cmake_options=_merged(ident.cmake_options, options))

    def configure(self, installed: Installed, job: Job, recipe: Recipe, *, recipes: Path,
                  paths: ToolchainPaths, source: Path, build: Path,
                  work: Path) -> Configured:
        check, options = self.device_step(job, paths=paths, source=source, build=build,
                                          work=work)
        configured = self._zig.configure(installed, job, recipe, recipes=recipes, paths=paths,
                                         source=source, build=build, work=work)
        return replace(configured,
                       compiler_check=f"{configured.compiler_check}:{check}" if check
                       else configured.compiler_check,
                       cmake_options=_merged(configured.cmake_options, options))
