"""zig as the C cross-compiler for every CPU target, from one Linux x86_64 host.

``ziglang==0.17.1`` comes from PyPI and is installed with pip ``--target`` into kiln's cache
(``<cache>/toolchains/zig-0.17.1``), never into the user's environment; a file lock keeps two
kiln processes from installing it at once, and the install goes to a temporary directory that
is renamed into place only once ``zig version`` answers, so a killed install leaves nothing
that looks complete.

Per job, ``configure`` writes small ``cc``/``c++``/``ar``/``ranlib`` wrappers (``zig cc
-target T -mcpu=M``; C++ for the projects that have it) and a CMake toolchain file
rendered from ``recipes/cmake/zig-toolchain.cmake.j2``.
zig's own cache (the libc, mingw and compiler-rt it compiles once per target, about 95 s for
Windows) lives in ``<cache>/zig`` and is shared by every build.
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Mapping
from pathlib import Path

import jinja2

from kiln.errors import CommandFailed, ConfigError
from kiln.files import COMPLETE, install_once
from kiln.package.records import Tool
from kiln.plan import Job
from kiln.run import run
from kiln.build.toolchains.base import Configured, Identity, Installed, ToolchainPaths
from kiln.build.toolchains.recipe import Recipe

__all__ = ["ZIG_VERSION", "ZigToolchain", "cmake_system"]

ZIG_VERSION = "0.17.1"
REQUIREMENT = f"ziglang=={ZIG_VERSION}"
TEMPLATE = "zig-toolchain.cmake.j2"
# Per target system: a file of recipes/cmake/ that CMake reads after its platform files.
RULES = {"Darwin": "darwin-rules.cmake", "Windows": "windows-rules.cmake"}

# CMake's names for the target system and processor (CMAKE_SYSTEM_NAME/PROCESSOR). Android
# builds are static musl Linux executables (no NDK), so CMake sees Linux.
SYSTEM_NAME = {"linux": "Linux", "android": "Linux", "macos": "Darwin", "windows": "Windows"}
PROCESSOR = {
    ("windows", "x86_64"): "AMD64",
    ("windows", "aarch64"): "ARM64",
    ("macos", "aarch64"): "arm64",
}
INSTALL_RPATH = {"Linux": "$ORIGIN/../lib", "Darwin": "@loader_path/../lib", "Windows": ""}


def cmake_system(os_name: str, arch: str) -> tuple[str, str]:
    """(CMAKE_SYSTEM_NAME, CMAKE_SYSTEM_PROCESSOR) of an entry."""
    return SYSTEM_NAME[os_name], PROCESSOR.get((os_name, arch), arch)


def _cmake_quote(value: str) -> str:
    """The inside of a quoted CMake argument."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _fill(flag: str, source: Path, build: Path) -> str:
    return flag.replace("{source}", str(source)).replace("{build}", str(build))


def _write_script(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o755)


class ZigToolchain:
    name = "zig"
    version = ZIG_VERSION

    def _dest(self, paths: ToolchainPaths) -> Path:
        return paths.root / f"zig-{self.version}"

    def tools(self, job: Job) -> tuple[Tool, ...]:
        return (Tool(name="zig", version=self.version),)

    def _installed(self, dest: Path) -> Installed:
        return Installed(name=self.name, version=self.version, root=dest,
                         executable=dest / "ziglang" / "zig")

    def install(self, paths: ToolchainPaths, *, python: str, env: Mapping[str, str],
                log_file: Path | None = None) -> Installed:
        def fill(tmp: Path) -> str:
            try:
                run([python, "-m", "pip", "install", "--no-deps", "--no-input",
                     "--disable-pip-version-check", "--no-warn-script-location",
                     "--target", str(tmp), REQUIREMENT],
                    env=env, log_file=log_file, what=f"pip install {REQUIREMENT}")
            except CommandFailed as exc:
                raise CommandFailed(exc.message, output=exc.output,
                                    hint=f"kiln installs {REQUIREMENT} from PyPI into "
                                         f"{paths.root}; check that PyPI is reachable "
                                         "(pip config, proxy)") from exc
            exe = tmp / "ziglang" / "zig"
            got = run([str(exe), "version"], env=env, what="zig version").stdout.strip()
            if got != self.version:
                raise ConfigError(f"{REQUIREMENT} installed zig {got!r}, expected "
                                  f"{self.version}", hint="report this: the wheel changed")
            return f"{REQUIREMENT}\n"

        dest = install_once(self._dest(paths), lock=paths.lock_dir() / f"zig-{self.version}.lock",
                            fill=fill, marker=COMPLETE)
        return self._installed(dest)

    def identity(self, job: Job, recipe: Recipe) -> Identity:
        entry = job.entry
        return Identity(
            toolchain=self.name, version=self.version, target=job.target,
            mcpu=recipe.mcpu_for(entry.cpu_baseline, source=f"recipes/{recipe.backend}.yaml"),
            system=cmake_system(entry.os, entry.arch), cflags=recipe.cflags,
            ldflags=recipe.ldflags_for(entry.os),
            cmake_options=tuple(sorted(self._options(job, recipe).items())))

    def _options(self, job: Job, recipe: Recipe) -> dict[str, str]:
        options = recipe.cmake_for(job.entry.os)
        options.update(dict(job.cmake_options))
        return options

    def configure(self, installed: Installed, job: Job, recipe: Recipe, *, recipes: Path,
                  paths: ToolchainPaths, source: Path, build: Path,
                  work: Path) -> Configured:
        entry = job.entry
        mcpu = recipe.mcpu_for(entry.cpu_baseline, source=f"recipes/{recipe.backend}.yaml")
        system_name, processor = cmake_system(entry.os, entry.arch)
        tdir = work / "toolchain"
        tdir.mkdir(parents=True, exist_ok=True)
        zig = shlex.quote(str(installed.executable))
        cache = shlex.quote(str(paths.zig_cache))
        # zig's caches are set in the wrappers themselves, so that every compiler call (CMake's
        # checks, ccache's preprocessor runs) uses them whatever environment it inherits.
        prefix = (f"#!/bin/sh\n# generated by kiln: zig {self.version} for {job.target}\n"
                  f"ZIG_GLOBAL_CACHE_DIR={cache} ZIG_LOCAL_CACHE_DIR={cache} \\\n  exec {zig}")
        _write_script(tdir / "cc", f'{prefix} cc -target {job.target} -mcpu={mcpu} "$@"\n')
        _write_script(tdir / "c++", f'{prefix} c++ -target {job.target} -mcpu={mcpu} "$@"\n')
        _write_script(tdir / "ar", f'{prefix} ar "$@"\n')
        _write_script(tdir / "ranlib", f'{prefix} ranlib "$@"\n')
        _write_script(tdir / "install_name_tool",
                      "#!/bin/sh\necho 'kiln: install_name_tool must not edit a linked binary "
                      "(it would break its code signature)' >&2\nexit 1\n")
        rules = ""
        if system_name in RULES:
            shutil.copyfile(recipes / "cmake" / RULES[system_name], tdir / RULES[system_name])
            rules = _cmake_quote(str(tdir / RULES[system_name]))
        cflags = tuple(_fill(f, source, build) for f in recipe.cflags)
        ldflags = recipe.ldflags_for(entry.os)
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(recipes / "cmake")),
                                 undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                 autoescape=False)
        text = env.get_template(TEMPLATE).render(
            entry_id=entry.id, zig_version=self.version, target=job.target, mcpu=mcpu,
            system_name=system_name, processor=processor,
            cc=_cmake_quote(str(tdir / "cc")), cxx=_cmake_quote(str(tdir / "c++")),
            ar=_cmake_quote(str(tdir / "ar")),
            ranlib=_cmake_quote(str(tdir / "ranlib")),
            install_name_tool=_cmake_quote(str(tdir / "install_name_tool")),
            cflags=_cmake_quote(" ".join(cflags)), ldflags=_cmake_quote(" ".join(ldflags)),
            install_rpath=_cmake_quote(INSTALL_RPATH[system_name]),
            rules_override=rules,
        )
        toolchain_file = tdir / "toolchain.cmake"
        toolchain_file.write_text(text, encoding="utf-8")
        return Configured(
            toolchain_file=toolchain_file,
            compiler_check=f"string:zig-{self.version}:{job.target}:{mcpu}",
            cmake_options=tuple(sorted(self._options(job, recipe).items())),
        )
