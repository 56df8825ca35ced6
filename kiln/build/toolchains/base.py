"""The ``Toolchain`` protocol and the values toolchains hand to the build."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kiln.package.records import Tool
from kiln.plan import Job
from kiln.build.toolchains.recipe import Recipe

__all__ = ["Configured", "Identity", "Installed", "Toolchain", "ToolchainPaths"]


@dataclass(frozen=True, kw_only=True)
class ToolchainPaths:
    """Where toolchains and their own caches live inside kiln's cache."""

    root: Path        # <cache>/toolchains: one directory per name-version
    zig_cache: Path   # zig's global cache (compiled libc, compiler-rt): slow to fill, kept

    def lock_dir(self) -> Path:
        return self.root / ".locks"


@dataclass(frozen=True, kw_only=True)
class Installed:
    """A toolchain ready to use."""

    name: str
    version: str
    root: Path
    executable: Path


@dataclass(frozen=True, kw_only=True)
class Identity:
    """Everything about a job's compiler and flags that changes its output, without paths:
    part of the cache key and of BUILD-INFO.json."""

    toolchain: str                    # "zig"
    version: str                      # "0.17.1"
    target: str                       # "aarch64-linux-gnu.2.17"
    mcpu: str
    system: tuple[str, str]           # CMAKE_SYSTEM_NAME, CMAKE_SYSTEM_PROCESSOR
    cflags: tuple[str, ...]           # with the {source}/{build} placeholders
    ldflags: tuple[str, ...]
    cmake_options: tuple[tuple[str, str], ...]

    def to_json(self) -> dict[str, object]:
        return {"toolchain": self.toolchain, "version": self.version, "target": self.target,
                "mcpu": self.mcpu, "system": list(self.system), "cflags": list(self.cflags),
                "ldflags": list(self.ldflags),
                "cmake_options": [list(kv) for kv in self.cmake_options]}


@dataclass(frozen=True, kw_only=True)
class Configured:
    """What one job's build needs from its toolchain, written into the job's work dir."""

    toolchain_file: Path
    compiler_check: str               # ccache's identity of the compiler (no paths)
    cmake_options: tuple[tuple[str, str], ...]


class Toolchain(Protocol):
    """One toolchain family."""

    name: str
    version: str

    def install(self, paths: ToolchainPaths, *, python: str, env: Mapping[str, str],
                log_file: Path | None = None) -> Installed:
        """Install (once, under a lock) into ``paths.root``; return what was installed."""
        ...

    def identity(self, job: Job, recipe: Recipe) -> Identity:
        """Everything about this job's compiler that changes its output, without paths."""
        ...

    def configure(self, installed: Installed, job: Job, recipe: Recipe, *, recipes: Path,
                  paths: ToolchainPaths, source: Path, build: Path,
                  work: Path) -> Configured:
        """Write the toolchain file and wrappers for ``job`` under ``work``."""
        ...

    def tools(self, job: Job) -> tuple[Tool, ...]:
        """The programs that build ``job``, each at its pinned version, for the asset's
        record and the SBOM."""
        ...
