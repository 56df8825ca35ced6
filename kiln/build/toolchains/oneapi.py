"""SYCL entries: Intel's oneAPI DPC++ compilers (``icx`` / ``icpx``), found where CI put them.

No package registry ships a SYCL compiler (PyPI has Intel's runtime, ``intel-sycl-rt``, not
the compiler), so unlike zig and CUDA this toolchain is never installed by kiln: the SYCL
entries are ``ci-only``, and their CI job brings the compiler — Linux jobs run in the matrix's
``intel/oneapi-basekit`` container, whose image puts the compilers on ``PATH``; the Windows
job installs the Base Toolkit with Intel's installer and loads ``setvars.bat`` into the job's
environment (``ci/config.yaml`` ``setup``). ``install`` here only finds the compilers on the
``PATH`` of the environment it is given, asks the C++ driver for its version, and refuses with
the install hint when they are missing or are not the matrix's pinned release
(``backend_version``, the same for every SYCL entry: ``ONEAPI_VERSION``).

Per job, ``configure`` writes a CMake toolchain file that names the two compilers. It is a
native build (no ``CMAKE_SYSTEM_NAME``): SYCL device code is compiled and linked by the same
driver as the host code, so there is nothing to cross-compile. The toolchain file is written
from this module rather than from a template in ``recipes/cmake/``, because every file there is
part of every build's cache key, and this one matters only to the SYCL builds.
On Linux the recipe's flags and ``-march`` for the entry's ``cpu_baseline`` are passed; on
Windows ``icx`` takes MSVC-style options, so none of the recipe's GCC-style flags are.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from kiln.errors import ConfigError, SelectionError, ToolMissing
from kiln.package.records import Tool
from kiln.plan import Job
from kiln.run import run
from kiln.build.toolchains.base import Configured, Identity, Installed, ToolchainPaths
from kiln.build.toolchains.recipe import Recipe
from kiln.build.toolchains.zig import cmake_system

__all__ = [
    "CONTAINER",
    "ONEAPI_VERSION",
    "OneApiCompilers",
    "OneApiToolchain",
    "cxx_name",
    "install_hint",
    "locate",
    "parse_version",
    "toolchain_file_text",
    "version_matches",
]

# The oneAPI release every SYCL entry of the matrix pins (backend_version); a unit test keeps
# the two in step, and the container below is that release's image.
ONEAPI_VERSION = "2025.3"
CONTAINER = "intel/oneapi-basekit:2025.3.0-0-devel-ubuntu24.04"

# `icpx --version` on Linux: "Intel(R) oneAPI DPC++/C++ Compiler 2025.3.0 (2025.3.0.20251010)";
# `icx --version` on Windows: "Intel(R) oneAPI DPC++/C++ Compiler for applications running on
# Intel(R) 64, Version 2025.3.0 Build 20251010".
VERSION_RE = re.compile(r"Intel\(R\) oneAPI DPC\+\+/C\+\+ Compiler\b.*?\b(\d{4}\.\d+(?:\.\d+)*)")

Which = Callable[[str, str | None], str | None]
Probe = Callable[[str, Mapping[str, str]], str]


def parse_version(text: str) -> str | None:
    """The release in a compiler's ``--version`` output, or None when it is not oneAPI DPC++."""
    m = VERSION_RE.search(text)
    return m.group(1) if m else None


def version_matches(found: str, pinned: str) -> bool:
    """``2025.3.1`` is release ``2025.3``; ``2025.30`` is not."""
    return found == pinned or found.startswith(pinned + ".")


def install_hint(windows: bool) -> str:
    if windows:
        return (f"install the Intel oneAPI Base Toolkit {ONEAPI_VERSION} (its DPC++/C++ compiler "
                "component) with Intel's offline installer, then run kiln from a shell where "
                r"'C:\Program Files (x86)\Intel\oneAPI\setvars.bat' has been called; the "
                "generated release workflow does both (ci/config.yaml setup.win-sycl-x64)")
    return (f"run kiln in the {CONTAINER} container (what the generated release workflow "
            "does), or install Intel oneAPI DPC++ "
            f"{ONEAPI_VERSION} (apt package intel-oneapi-compiler-dpcpp-cpp from Intel's "
            "repository) and 'source /opt/intel/oneapi/setvars.sh' before running kiln")


def cxx_name(windows: bool) -> str:
    """The C++ driver that compiles SYCL: icpx on Linux; on Windows icx is both."""
    return "icx" if windows else "icpx"


@dataclass(frozen=True, kw_only=True)
class OneApiCompilers:
    cc: Path
    cxx: Path
    version: str


def _probe(compiler: str, env: Mapping[str, str]) -> str:
    done = run([compiler, "--version"], env=env, check=False,
               what=f"{Path(compiler).name} --version")
    return done.stdout + done.stderr


def locate(env: Mapping[str, str], *, windows: bool, which: Which | None = None,
           probe: Probe = _probe) -> OneApiCompilers:
    """Find icx and the C++ driver on ``env``'s PATH and check they are the pinned release.

    ``which`` and ``probe`` (runs ``<compiler> --version``) are parameters so that tests need
    no compiler and start no program."""
    find: Which = which if which is not None else (lambda name, path: shutil.which(name, path=path))
    path = env.get("PATH")
    found: dict[str, str] = {}
    for name in dict.fromkeys(("icx", cxx_name(windows))):
        where = find(name, path)
        if where is None:
            raise ToolMissing(
                f"the oneAPI DPC++ compiler '{name}' is not on PATH: SYCL entries build with "
                "Intel's icx/icpx, which no package registry ships",
                hint=install_hint(windows))
        found[name] = where
    cxx = found[cxx_name(windows)]
    out = probe(cxx, env)
    version = parse_version(out)
    if version is None:
        first = out.strip().splitlines()[0] if out.strip() else "(no output)"
        raise ToolMissing(
            f"'{cxx} --version' does not identify Intel oneAPI DPC++ (it says: {first})",
            hint=install_hint(windows))
    if not version_matches(version, ONEAPI_VERSION):
        raise ConfigError(
            f"{cxx} is oneAPI DPC++ {version}, but the matrix pins the SYCL entries to "
            f"oneAPI {ONEAPI_VERSION} (backend_version)",
            hint=f"use oneAPI {ONEAPI_VERSION} ({CONTAINER} on Linux), or move the pin: "
                 "backend_version of the SYCL entries in matrix/ and ONEAPI_VERSION in "
                 "kiln/build/toolchains/oneapi.py together")
    return OneApiCompilers(cc=Path(found["icx"]), cxx=Path(cxx), version=version)


def _cmake_quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def toolchain_file_text(*, project: str, entry_id: str, version: str, cc: Path, cxx: Path,
                        cflags: tuple[str, ...], ldflags: tuple[str, ...], windows: bool) -> str:
    """The CMake toolchain file of one SYCL job of ``project`` (paths as given; flags already
    filled in)."""
    c = _cmake_quote(" ".join(cflags))
    ld = _cmake_quote(" ".join(ldflags))
    lines = [
        f"# Generated by kiln (kiln/build/toolchains/oneapi.py) for {entry_id}; do not edit.",
        f"# oneAPI DPC++ {version} builds {project} natively, SYCL device code included.",
        "",
        f'set(CMAKE_C_COMPILER "{_cmake_quote(cc.as_posix())}")',
        f'set(CMAKE_CXX_COMPILER "{_cmake_quote(cxx.as_posix())}")',
        f'set(CMAKE_C_FLAGS_INIT "{c}")',
        f'set(CMAKE_CXX_FLAGS_INIT "{c}")',
        f'set(CMAKE_EXE_LINKER_FLAGS_INIT "{ld}")',
        f'set(CMAKE_SHARED_LINKER_FLAGS_INIT "{ld}")',
    ]
    if not windows:
        lines += [
            "",
            "# Link once with the rpath the installed files need (no edit after linking).",
            "set(CMAKE_BUILD_WITH_INSTALL_RPATH ON)",
            'set(CMAKE_INSTALL_RPATH "$ORIGIN/../lib")',
        ]
    return "\n".join(lines) + "\n"


class OneApiToolchain:
    name = "oneapi"
    version = ONEAPI_VERSION

    def __init__(self, *, host_windows: bool | None = None, which: Which | None = None,
                 probe: Probe = _probe) -> None:
        self._host_windows = sys.platform == "win32" if host_windows is None else host_windows
        self._which = which
        self._probe = probe

    def install(self, paths: ToolchainPaths, *, python: str, env: Mapping[str, str],
                log_file: Path | None = None) -> Installed:
        """Nothing is installed (no registry has it): find the compilers CI put on PATH."""
        found = locate(env, windows=self._host_windows, which=self._which, probe=self._probe)
        return Installed(name=self.name, version=found.version, root=found.cxx.parent,
                         executable=found.cc)

    def _flags(self, job: Job, recipe: Recipe) -> tuple[tuple[str, ...], tuple[str, ...]]:
        entry = job.entry
        if entry.os == "windows":
            return (), ()
        mcpu = recipe.mcpu_for(entry.cpu_baseline, source=f"recipes/{recipe.backend}.yaml")
        return (*recipe.cflags, f"-march={mcpu}"), recipe.ldflags_for(entry.os)

    def _options(self, job: Job, recipe: Recipe) -> dict[str, str]:
        options = recipe.cmake_for(job.entry.os)
        options.update(dict(job.cmake_options))
        return options

    def tools(self, job: Job) -> tuple[Tool, ...]:
        return (Tool(name="icx", version=self.version),)

    def identity(self, job: Job, recipe: Recipe) -> Identity:
        entry = job.entry
        cflags, ldflags = self._flags(job, recipe)
        mcpu = "" if entry.os == "windows" else recipe.mcpu_for(
            entry.cpu_baseline, source=f"recipes/{recipe.backend}.yaml")
        return Identity(toolchain=self.name, version=self.version, target=job.target, mcpu=mcpu,
                        system=cmake_system(entry.os, entry.arch), cflags=cflags,
                        ldflags=ldflags,
                        cmake_options=tuple(sorted(self._options(job, recipe).items())))

    def configure(self, installed: Installed, job: Job, recipe: Recipe, *, recipes: Path,
                  paths: ToolchainPaths, source: Path, build: Path,
                  work: Path) -> Configured:
        entry = job.entry
        if entry.backend_version is None or not version_matches(installed.version,
                                                                 entry.backend_version):
            raise ConfigError(
                f"'{entry.id}' pins oneAPI {entry.backend_version} (backend_version), but the "
                f"compiler found is oneAPI DPC++ {installed.version}",
                hint=install_hint(entry.os == "windows"))
        windows = entry.os == "windows"
        if windows != self._host_windows:
            raise SelectionError(
                f"'{entry.id}' is a {entry.os} build and oneAPI DPC++ builds natively only; "
                "this kiln runs on another OS",
                hint="build it on its own CI runner (kiln build <id> --on-ci-runner there)")
        cc = installed.executable
        cxx = cc if windows else cc.with_name(cxx_name(False))
        cflags, ldflags = self._flags(job, recipe)
        filled = tuple(f.replace("{source}", str(source)).replace("{build}", str(build))
                       for f in cflags)
        tdir = work / "toolchain"
        tdir.mkdir(parents=True, exist_ok=True)
        toolchain_file = tdir / "toolchain.cmake"
        toolchain_file.write_text(
            toolchain_file_text(project=job.names.name, entry_id=entry.id,
                                version=installed.version, cc=cc, cxx=cxx,
                                cflags=filled, ldflags=ldflags, windows=windows),
            encoding="utf-8")
        return Configured(toolchain_file=toolchain_file,
                          compiler_check=f"string:oneapi-{installed.version}:{job.target}",
                          cmake_options=tuple(sorted(self._options(job, recipe).items())))
