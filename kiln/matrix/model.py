"""The matrix's values: the field table ``FIELDS`` (the single source of truth for
validation, the ``Entry`` conversion and the JSON Schema), ``Requirements``, ``Entry``
and ``Matrix``; the allowed values and patterns of every field."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln.matrix.catalogue import BACKENDS as CATALOGUE
from kiln.matrix.catalogue import CPU_BASELINES, CPU_FEATURES

__all__ = [
    "ARCHES",
    "ARCHIVES",
    "BACKENDS",
    "BACKENDS_FILE",
    "BUILD_WHERE",
    "CMAKE_VAR_RE",
    "CPU_FEATURE_NAMES",
    "DEFAULTS_FILE",
    "DEFAULTS_KEYS",
    "DISABLED_KEYS",
    "DISTROS",
    "FIELDS",
    "FIELD_BY_NAME",
    "GPU_TARGET_RE",
    "ID_RE",
    "LIBCS",
    "OSES",
    "PR_URL_RE",
    "REQUIREMENT_FIELDS",
    "RUNNER_RE",
    "VERIFY_METHODS",
    "VERSION_RE",
    "Disabled",
    "Entry",
    "FieldSpec",
    "Matrix",
    "Requirements",
]

OSES = ("linux", "macos", "windows", "android")
ARCHES = ("x86_64", "aarch64", "s390x")
DISTROS = ("ubuntu", "openeuler")
# Backends and CPU levels are the catalogue's (kiln/matrix/catalogue.py).
BACKENDS = tuple(b.name for b in CATALOGUE)
BUILD_WHERE = ("local", "ci-only")
# The methods kiln.verify registers (VERIFIERS); kiln.verify imports this module, so the names
# are listed here and tests/unit/test_catalogue.py holds the two lists equal.
VERIFY_METHODS = ("native", "qemu", "wine", "lavapipe", "openvino-cpu", "inspect")
ARCHIVES = ("tar.gz", "zip")
LIBCS = ("glibc", "musl", "none")

# The patterns keep ^...$ because the JSON schema (json_schema) publishes them, where $ is the
# end of the value; Python uses them with fullmatch only: re.match(...$) would also accept a
# value followed by a newline ($ matches before a trailing newline), which then breaks the
# YAML that `kiln ci` writes.
ID_RE = re.compile(r"^[a-z0-9]+(?:[.-][a-z0-9]+)*$")
VERSION_RE = re.compile(r"^\d+(?:\.\d+){0,2}$")
# A pull request on GitHub (or a merge request on GitLab), over https, nothing after the number.
PR_URL_RE = re.compile(
    r"^https://(?:github\.com/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/pull/\d+"
    r"|gitlab\.com/[A-Za-z0-9_./-]+/-/merge_requests/\d+)$"
)
RUNNER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# A matrix entry's own CMake options: the project's variables, upper case (which also keeps
# newlines, spaces and '=' out of the -D arguments and the CI workflow); not CMAKE_*, which
# belong to the toolchain (recipes/ and the toolchain files kiln writes).
CMAKE_VAR_RE = re.compile(r"^(?!CMAKE_)[A-Z][A-Z0-9_]*$")
# gpu targets: CUDA real (sm_XX) and virtual (compute_XX), AMD gfx, SPIR-V and OpenCL C levels.
GPU_TARGET_RE = re.compile(r"^(?:sm_\d{2,3}[af]?|compute_\d{2,3}|gfx[0-9a-f]{3,4}|spirv-\d\.\d"
                           r"|opencl-c-\d\.\d)$")
CPU_FEATURE_NAMES = tuple(f.name for f in CPU_FEATURES)


@dataclass(frozen=True)
class FieldSpec:
    """One entry field: its JSON type, constraints, and documentation."""

    name: str
    kind: str  # "string" | "list" | "map" | "disabled"
    description: str
    required: bool = False
    choices: tuple[str, ...] | None = None
    pattern: re.Pattern[str] | None = None
    item_choices: tuple[str, ...] | None = None
    item_pattern: re.Pattern[str] | None = None
    fix: str = ""


FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("id", "string", "Primary key: CLI selector, artifact name, CI job name.",
              required=True, pattern=ID_RE,
              fix="use lower-case words joined by '-' (dots allowed inside versions)"),
    FieldSpec("os", "string", "Operating system the artifact runs on.", required=True,
              choices=OSES),
    FieldSpec("arch", "string", "CPU architecture.", required=True, choices=ARCHES),
    FieldSpec("distro", "string", "Linux distribution family (sets the glibc floor).",
              choices=DISTROS),
    FieldSpec("backend", "string", "Compute backend compiled in besides the CPU.",
              required=True, choices=BACKENDS),
    FieldSpec("backend_version", "string", "Version of the backend's toolkit (cuda 12.4...).",
              pattern=VERSION_RE, fix="write it as a quoted version string such as \"12.4\""),
    FieldSpec("libc", "string", "C library the binaries link against.", required=True,
              choices=LIBCS),
    FieldSpec("libc_floor", "string", "Oldest glibc the binaries run on (glibc only).",
              pattern=VERSION_RE, fix="write it as a quoted version such as \"2.17\""),
    FieldSpec("min_os", "string",
              "Minimum OS version: macOS version, Windows major version, Android API level.",
              pattern=VERSION_RE, fix="write it as a quoted version such as \"11.0\""),
    FieldSpec("cpu_baseline", "string", "The CPU level the code is compiled for (no -march).",
              required=True, choices=CPU_BASELINES),
    FieldSpec("cpu_dispatch", "list", "Kernel levels chosen at run time when the CPU has them.",
              item_choices=CPU_FEATURE_NAMES),
    FieldSpec("gpu_targets", "list",
              "Device code embedded: sm_XX cubins, compute_XX PTX, gfx code objects, SPIR-V.",
              item_pattern=GPU_TARGET_RE),
    FieldSpec("min_driver", "string", "Oldest GPU driver the device code runs on.",
              pattern=VERSION_RE),
    FieldSpec("build", "string", "Where it builds: 'local' (this host) or 'ci-only'.",
              required=True, choices=BUILD_WHERE),
    FieldSpec("runner", "string", "GitHub Actions runner label for the CI job.", required=True,
              pattern=RUNNER_RE),
    FieldSpec("container", "string", "Container image the CI job runs in, where one is needed.",
              pattern=re.compile(r"^[a-z0-9][a-z0-9./_-]*(?::[A-Za-z0-9._-]+)?$"),
              fix="write an image reference such as 'rocm/dev-ubuntu-24.04:7.2'"),
    FieldSpec("verify", "string", "How the built binaries are verified.", required=True,
              choices=VERIFY_METHODS),
    FieldSpec("verify_note", "string", "What the verification achieves, in a sentence."),
    FieldSpec("archive", "string", "Archive format of the release asset.", required=True,
              choices=ARCHIVES),
    FieldSpec("cmake", "map", "Extra CMake options for this entry: the project's upper-case "
              "variables, not CMAKE_* (the toolchain's)."),
    FieldSpec("disabled", "disabled",
              "Present on disabled entries: {reason, tracking: <https URL of the pull request>}."),
    FieldSpec("notes", "string", "Free text shown in `kiln matrix list` and the release notes."),
)
FIELD_BY_NAME: Mapping[str, FieldSpec] = {f.name: f for f in FIELDS}
DISABLED_KEYS = ("reason", "tracking")
DEFAULTS_FILE = "defaults.yaml"
DEFAULTS_KEYS = ("families", "defaults", "os", "arch")
BACKENDS_FILE = "backends.yaml"


@dataclass(frozen=True, kw_only=True)
class Disabled:
    reason: str
    tracking: str


@dataclass(frozen=True, kw_only=True)
class Requirements:
    """What a build needs from the machine that runs it: platform, C library and its floor,
    oldest OS, CPU level, GPU backend, targets and driver floor.

    Declared once and shared: a matrix ``Entry`` is a ``Requirements`` plus how and where it
    builds, and a release asset's record (``kiln.package.records.AssetRecord``) is the same
    ``Requirements`` plus the file's name, size and verification, so the facts an installer
    ranks by are the facts the matrix declared, field for field."""

    os: str
    arch: str
    backend: str
    backend_version: str | None
    libc: str
    libc_floor: str | None
    min_os: str | None
    cpu_baseline: str
    cpu_dispatch: tuple[str, ...]
    gpu_targets: tuple[str, ...]
    min_driver: str | None

    def requirements(self) -> Requirements:
        """This value's requirements alone (from an ``Entry`` or a record)."""
        return Requirements(**{name: getattr(self, name) for name in REQUIREMENT_FIELDS})

    @property
    def backend_label(self) -> str:
        return self.backend if self.backend_version is None else (
            f"{self.backend} {self.backend_version}")

    @property
    def floor(self) -> str:
        """Human summary of what the host needs at least: glibc, macOS, Windows, Android."""
        if self.os == "linux":
            return f"glibc {self.libc_floor}" if self.libc == "glibc" else "musl (static)"
        if self.os == "android":
            return f"Android API {self.min_os}"
        if self.os == "macos":
            return f"macOS {self.min_os}"
        return f"Windows {self.min_os}"


REQUIREMENT_FIELDS = tuple(f.name for f in dataclasses.fields(Requirements))


@dataclass(frozen=True, kw_only=True)
class Entry(Requirements):
    """One platform configuration, fully merged and validated: its ``Requirements`` plus how
    and where it builds and is verified."""

    id: str
    distro: str | None
    build: str
    runner: str
    container: str | None
    verify: str
    verify_note: str | None
    archive: str
    cmake: tuple[tuple[str, str], ...]
    disabled: Disabled | None
    notes: str | None
    source: str = field(compare=False)

    @property
    def enabled(self) -> bool:
        return self.disabled is None

    @property
    def local(self) -> bool:
        return self.build == "local"

    @property
    def zig_target(self) -> str:
        """The ``zig cc -target`` triple, with the libc floor or minimum OS built in."""
        if self.os == "linux":
            if self.libc == "musl":
                return f"{self.arch}-linux-musl"
            return f"{self.arch}-linux-gnu.{self.libc_floor}"
        if self.os == "android":
            return f"{self.arch}-linux-musl"
        if self.os == "macos":
            return f"{self.arch}-macos.{self.min_os}"
        return f"{self.arch}-windows-gnu"

    def attribute(self, name: str) -> str | None:
        """An attribute as a string, for selectors such as ``backend=cuda``."""
        if name == "enabled":
            return "true" if self.enabled else "false"
        if name == "disabled":
            return "false" if self.enabled else "true"
        if name not in FIELD_BY_NAME or name in ("cmake",):
            return None
        value = getattr(self, name)
        if isinstance(value, tuple):
            return ",".join(str(v) for v in value)
        return None if value is None else str(value)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-ready dict with every field, plus derived ``target`` and ``enabled``."""
        out: dict[str, Any] = {}
        for spec in FIELDS:
            value = getattr(self, spec.name)
            if spec.kind == "list":
                value = list(value)
            elif spec.kind == "map":
                value = dict(value)
            elif spec.kind == "disabled" and value is not None:
                value = {"reason": value.reason, "tracking": value.tracking}
            out[spec.name] = value
        out["target"] = self.zig_target
        out["enabled"] = self.enabled
        return out


@dataclass(frozen=True)
class Matrix:
    root: Path
    entries: tuple[Entry, ...]

    def __iter__(self) -> Any:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(e.id for e in self.entries)

    @property
    def enabled(self) -> tuple[Entry, ...]:
        return tuple(e for e in self.entries if e.enabled)

    @property
    def disabled(self) -> tuple[Entry, ...]:
        return tuple(e for e in self.entries if not e.enabled)

    def get(self, entry_id: str) -> Entry:
        for e in self.entries:
            if e.id == entry_id:
                return e
        raise KeyError(entry_id)
