"""Load and validate ``matrix/`` into frozen ``Entry`` values.

The matrix is data: ``defaults.yaml`` (shared defaults, per-OS and per-arch blocks),
``backends.yaml`` (per backend@version profiles) and one file per OS family holding
``defaults:`` and ``entries:``. Merge order, lowest first: global defaults, ``os.<os>``,
``arch.<arch>``, the family file's defaults, the backend profile, the entry.

Validation collects every problem in the whole matrix before failing, and each message names
the file (with line), the entry id, the field, what was expected and how to fix it. Unknown
keys suggest the closest valid key. The field table ``FIELDS`` is the single source of truth:
it drives validation, the ``Entry`` conversion and ``matrix/schema.json`` (see
``json_schema``), so the editor schema cannot drift from what kiln accepts.

PyYAML parses; a small loader subclass records the line of every mapping key so that errors
can point at it.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kiln.catalogue import BACKENDS as CATALOGUE
from kiln.catalogue import CPU_ARCHES, CPU_BASELINES, CPU_FEATURES, Placement
from kiln.errors import MatrixError

__all__ = [
    "ARCHES",
    "BACKENDS",
    "FIELDS",
    "OSES",
    "REQUIREMENT_FIELDS",
    "VERIFY_METHODS",
    "Disabled",
    "Entry",
    "FieldSpec",
    "Matrix",
    "Requirements",
    "json_schema",
    "load_matrix",
]

OSES = ("linux", "macos", "windows", "android")
ARCHES = ("x86_64", "aarch64", "s390x")
DISTROS = ("ubuntu", "openeuler")
# Backends and CPU levels are the catalogue's (kiln/catalogue.py).
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
CMAKE_VAR_RE = re.compile(r"^EMBER_[A-Z0-9_]+$")
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
    FieldSpec("cmake", "map", "Extra EMBER_* CMake options for this entry."),
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


# --------------------------------------------------------------------------------------------
# YAML with line numbers


class _LineMap(dict[str, Any]):
    """A mapping that remembers the line (1-based) of each of its keys."""

    lines: dict[str, int]
    start_line: int
    duplicates: list[tuple[str, int]]


# libyaml's parser when PyYAML has it (several times faster: `kiln plan` and `kiln matrix
# validate` are called many times per CI job), the pure-Python one otherwise. Both are safe
# loaders and both keep the node marks the line numbers come from.
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _LineMap:
    loader.flatten_mapping(node)
    out = _LineMap()
    out.lines = {}
    out.duplicates = []
    out.start_line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        value = loader.construct_object(value_node, deep=True)
        key_s = str(key)
        if key_s in out:
            # A repeated key in one mapping is a silent overwrite in YAML; treat it as an error.
            out.duplicates.append((key_s, key_node.start_mark.line + 1))
            continue
        out[key_s] = value
        out.lines[key_s] = key_node.start_mark.line + 1
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _duplicates(mapping: object) -> list[tuple[str, int]]:
    return list(mapping.duplicates) if isinstance(mapping, _LineMap) else []


def _line(mapping: object, key: str | None = None) -> int | None:
    if not isinstance(mapping, _LineMap):
        return None
    if key is not None and key in mapping.lines:
        return mapping.lines[key]
    return mapping.start_line


# --------------------------------------------------------------------------------------------
# Validation


class _Problems:
    """Collects problems with their location, so that all of them are reported at once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.items: list[str] = []

    def show(self, file: Path) -> str:
        """The file as the user named it: relative to the current directory when inside it."""
        try:
            return str(file.resolve().relative_to(Path.cwd()))
        except ValueError:
            return str(file)

    def add(self, file: Path, line: int | None, where: str, message: str, fix: str = "") -> None:
        loc = self.show(file) + (f":{line}" if line else "")
        text = f"{loc}: {where}: {message}" if where else f"{loc}: {message}"
        if fix:
            text += f" (fix: {fix})"
        self.items.append(text)


def _suggest(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else ""


def _unknown_key(word: str, valid: Iterable[str]) -> str:
    hint = _suggest(word, valid)
    return hint if hint else "valid keys are: " + ", ".join(sorted(valid))


def _check_value(spec: FieldSpec, value: object) -> tuple[str, str] | None:
    """Return (message, fix) if ``value`` is not valid for ``spec``."""
    if spec.kind == "string":
        if not isinstance(value, str) or (isinstance(value, bool)):
            shown = repr(value)
            fix = spec.fix or "quote the value"
            return f"expected a string, got {type(value).__name__} {shown}", fix
        if spec.choices is not None and value not in spec.choices:
            hint = _suggest(value, spec.choices)
            allowed = ", ".join(spec.choices)
            return (f"unknown value '{value}'" + (f"; {hint}" if hint else ""),
                    f"use one of: {allowed}")
        if spec.pattern is not None and not spec.pattern.fullmatch(value):
            return f"'{value}' is not a valid {spec.name}", spec.fix or (
                f"it must match {spec.pattern.pattern}")
        return None
    if spec.kind == "list":
        if not isinstance(value, list):
            return f"expected a list, got {type(value).__name__} {value!r}", "write [a, b, c]"
        for item in value:
            if not isinstance(item, str):
                return f"expected strings in the list, got {item!r}", "quote each item"
            if spec.item_choices is not None and item not in spec.item_choices:
                hint = _suggest(item, spec.item_choices)
                return (f"unknown item '{item}'" + (f"; {hint}" if hint else ""),
                        "use items from: " + ", ".join(spec.item_choices))
            if spec.item_pattern is not None and not spec.item_pattern.fullmatch(item):
                return (f"'{item}' is not a valid {spec.name} item",
                        "use sm_XX, compute_XX, gfxNNNN, spirv-X.Y or opencl-c-X.Y")
        if len(set(value)) != len(value):
            return f"duplicate items in {value}", "list each item once"
        return None
    if spec.kind == "map":
        if not isinstance(value, dict):
            return f"expected a mapping, got {type(value).__name__}", "write {EMBER_X: \"ON\"}"
        for k, v in value.items():
            if not CMAKE_VAR_RE.fullmatch(str(k)):
                return f"CMake option '{k}' is not an EMBER_* option", "prefix it with EMBER_"
            if not isinstance(v, str):
                return f"CMake option {k} must be a string, got {v!r}", "quote it: \"ON\""
        return None
    if spec.kind == "disabled":
        return None  # checked separately, it has its own keys
    raise AssertionError(f"unknown field kind {spec.kind}")


def _check_disabled(value: object, file: Path, where: str, problems: _Problems,
                    line: int | None) -> Disabled | None:
    if not isinstance(value, dict):
        problems.add(file, line, where, "field 'disabled': expected a mapping",
                     "write disabled: {reason: ..., tracking: https://github.com/O/R/pull/N}")
        return None
    ok = True
    for key in value:
        if key not in DISABLED_KEYS:
            problems.add(file, _line(value, key), where,
                         f"field 'disabled': unknown key '{key}'; "
                         + _unknown_key(key, DISABLED_KEYS))
            ok = False
    reason = value.get("reason")
    tracking = value.get("tracking")
    if not isinstance(reason, str) or not reason.strip():
        problems.add(file, _line(value, "reason"), where,
                     "field 'disabled.reason': expected a non-empty sentence",
                     "say why the build is disabled")
        ok = False
    if not isinstance(tracking, str) or not PR_URL_RE.fullmatch(tracking):
        problems.add(file, _line(value, "tracking"), where,
                     f"field 'disabled.tracking': '{tracking}' is not an https URL of a pull "
                     "request",
                     "link the pull request that re-enables it, e.g. "
                     "https://github.com/OWNER/REPO/pull/123")
        ok = False
    if not ok:
        return None
    assert isinstance(reason, str) and isinstance(tracking, str)
    return Disabled(reason=" ".join(reason.split()), tracking=tracking)


# Impossible combinations: (predicate on the merged raw entry, field, message, fix).
_Pred = Callable[[Mapping[str, Any]], bool]
_Rule = tuple[_Pred, str, str, str]


def _outside(backend: str, fld: str, place: Placement) -> _Pred:
    return lambda e: e["backend"] == backend and not place.allows(e[fld])


def _placement_rules() -> tuple[_Rule, ...]:
    """Where each backend exists (the catalogue's ``oses`` and ``arches``); an entry has one
    backend, so its OS rule is checked before its architecture rule."""
    return tuple((_outside(b.name, fld, place), "backend", place.message, place.fix)
                 for b in CATALOGUE for fld, place in (("os", b.oses), ("arch", b.arches))
                 if place.values is not None)


def _built_here(backend: str, strict: bool) -> _Pred:
    return lambda e: (e["build"] == "local" and e["backend"] == backend
                      and (strict or e.get("disabled") is None))


def _ci_only_rules() -> tuple[_Rule, ...]:
    """Backends the release host cannot build (``ci_only`` in the catalogue); a strict one is
    refused on disabled entries too."""
    return tuple((_built_here(b.name, b.ci_only_strict), "build", b.ci_only, "set build: ci-only")
                 for b in CATALOGUE if b.ci_only is not None)


def _level_outside(arch: str, names: tuple[str, ...]) -> _Pred:
    return lambda e: e["arch"] == arch and e["cpu_baseline"] not in names


def _features_off(arch: str) -> _Pred:
    names = tuple(f.name for a in CPU_ARCHES if a.arch == arch for f in a.features)
    return lambda e: any(f in names for f in e["cpu_dispatch"]) and e["arch"] != arch


def _cpu_rules() -> tuple[_Rule, ...]:
    """Each architecture's cpu_baseline levels, and its cpu_dispatch features on no other."""
    return (
        *((_level_outside(a.arch, a.baselines), "cpu_baseline",
           f"'{{cpu_baseline}}' is not {a.noun}", a.baseline_hint()) for a in CPU_ARCHES),
        (_features_off("aarch64"), "cpu_dispatch", "Arm features on a {arch} entry",
         "list x86 features (sse4.2, avx2...)"),
        (_features_off("x86_64"), "cpu_dispatch", "x86 features on a {arch} entry",
         "list features of {arch}"),
    )


def _lacks_target(backend: str, prefix: str) -> _Pred:
    return lambda e: (e["backend"] == backend
                      and not any(t.startswith(prefix) for t in e["gpu_targets"]))


_NO_DEVICE_CODE = tuple(b.name for b in CATALOGUE if not b.device_code)


def _device_code_rules() -> tuple[_Rule, ...]:
    """The device targets a backend's entry must list, and backends that embed none."""
    return (
        *((_lacks_target(b.name, b.required_target[0]), "gpu_targets",
           f"a {b.label} entry needs at least one {b.required_target[1]} target",
           b.required_target[2]) for b in CATALOGUE if b.required_target is not None),
        (lambda e: e["backend"] in _NO_DEVICE_CODE and bool(e["gpu_targets"]),
         "gpu_targets", "a {backend} entry embeds no device code", "remove gpu_targets"),
    )


_VERSIONED = tuple(b.name for b in CATALOGUE if b.versioned)

_RULES: tuple[_Rule, ...] = (
    *_placement_rules(),
    (lambda e: e["os"] == "macos" and e["arch"] == "s390x",
     "arch", "macOS does not run on s390x", "use aarch64 or x86_64"),
    (lambda e: e["os"] in ("windows", "android") and e["arch"] == "s390x",
     "arch", "{os} does not run on s390x", "use aarch64 or x86_64"),
    (lambda e: e["verify"] == "wine" and (e["os"] != "windows" or e["arch"] != "x86_64"),
     "verify", "wine verification needs a Windows x86_64 entry (this is {os}/{arch})",
     "use verify: inspect, or qemu/native for Linux"),
    (lambda e: e["verify"] == "native" and (e["os"] != "linux" or e["arch"] != "x86_64"),
     "verify", "native verification runs on the Linux x86_64 host (this is {os}/{arch})",
     "use qemu (Linux/Android), wine (Windows x64) or inspect"),
    (lambda e: e["verify"] == "qemu" and e["os"] not in ("linux", "android"),
     "verify", "qemu-user runs Linux binaries only (this is {os})", "use inspect or wine"),
    (lambda e: e["verify"] == "lavapipe" and e["backend"] != "vulkan",
     "verify", "lavapipe runs Vulkan builds only (backend is {backend})", "use native or qemu"),
    (lambda e: e["verify"] == "openvino-cpu" and e["backend"] != "openvino",
     "verify", "the OpenVINO CPU plugin runs OpenVINO builds only (backend is {backend})",
     "use native"),
    (lambda e: e["verify"] == "openvino-cpu" and (e["os"] != "linux" or e["arch"] != "x86_64"),
     "verify", "{verify} runs on the Linux x86_64 host only (this is {os}/{arch})",
     "use inspect"),
    # lavapipe also runs Windows x86_64 Vulkan builds, under wine (kiln/verify/lavapipe.py)
    (lambda e: e["verify"] == "lavapipe"
     and (e["os"], e["arch"]) not in (("linux", "x86_64"), ("windows", "x86_64")),
     "verify", "lavapipe runs Linux x86_64 builds, and Windows x86_64 ones under wine "
     "(this is {os}/{arch})", "use inspect"),
    (lambda e: e["os"] == "windows" and e["archive"] != "zip",
     "archive", "Windows assets are zip archives", "set archive: zip"),
    (lambda e: e["os"] != "windows" and e["archive"] != "tar.gz",
     "archive", "{os} assets are tar.gz archives", "set archive: tar.gz"),
    (lambda e: e["os"] == "linux" and e.get("distro") is None,
     "distro", "Linux entries need a distro (it decides the glibc floor)",
     "set distro: ubuntu or openeuler"),
    (lambda e: e["os"] != "linux" and e.get("distro") is not None,
     "distro", "distro applies to Linux entries only", "remove it"),
    (lambda e: e["os"] == "linux" and e["libc"] == "none",
     "libc", "Linux entries link a libc", "set libc: glibc or musl"),
    (lambda e: e["os"] in ("macos", "windows") and e["libc"] != "none",
     "libc", "{os} entries use the system C library", "set libc: none"),
    (lambda e: e["os"] == "android" and e["libc"] != "musl",
     "libc", "Android entries are static musl (zig ships no bionic)", "set libc: musl"),
    (lambda e: e["libc"] == "glibc" and e.get("libc_floor") is None,
     "libc_floor", "glibc entries need a floor", "set libc_floor: \"2.17\""),
    (lambda e: e["libc"] != "glibc" and e.get("libc_floor") is not None,
     "libc_floor", "a glibc floor only applies to glibc entries", "remove it"),
    (lambda e: e["os"] in ("macos", "android") and e.get("min_os") is None,
     "min_os", "{os} entries need a minimum OS version", "set min_os"),
    (lambda e: e["backend"] in _VERSIONED and e.get("backend_version") is None,
     "backend_version", "the {backend} backend needs a version", "set backend_version"),
    (lambda e: e["backend"] not in _VERSIONED and e.get("backend_version") is not None,
     "backend_version", "the {backend} backend has no version", "remove it"),
    *_ci_only_rules(),
    *_cpu_rules(),
    *_device_code_rules(),
)


def _read_yaml(path: Path, problems: _Problems) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        problems.add(path, None, "", f"cannot read: {exc.strerror}")
        return None
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        problems.add(path, line, "", f"not valid YAML: {problem}", "fix the YAML syntax")
        return None


def _check_fields(block: Mapping[str, Any], file: Path, where: str, problems: _Problems,
                  allowed: Iterable[str]) -> dict[str, Any]:
    """Keep the valid fields of one block; report unknown keys and bad values."""
    allowed = tuple(allowed)
    out: dict[str, Any] = {}
    for dup_key, dup_line in _duplicates(block):
        problems.add(file, dup_line, where, f"key '{dup_key}' appears twice",
                     "keep one of them")
    for key, value in block.items():
        line = _line(block, key)
        if key not in allowed:
            problems.add(file, line, where, f"unknown key '{key}'; " + _unknown_key(key, allowed))
            continue
        spec = FIELD_BY_NAME[key]
        if value is None:
            problems.add(file, line, where, f"field '{key}' is empty", "give it a value or "
                         "remove the key")
            continue
        if spec.kind == "disabled":
            out[key] = value
            continue
        bad = _check_value(spec, value)
        if bad is not None:
            problems.add(file, line, where, f"field '{key}': {bad[0]}", bad[1])
            continue
        out[key] = value
    return out


def _defaults_block(doc: object, key: str, file: Path, problems: _Problems,
                    sub_keys: tuple[str, ...] | None = None) -> dict[str, dict[str, Any]]:
    """Read ``key: {<name>: {field: value}}`` blocks (os, arch, profiles) of defaults files."""
    if not isinstance(doc, dict) or key not in doc:
        return {}
    block = doc[key]
    if not isinstance(block, dict):
        problems.add(file, _line(doc, key), key, "expected a mapping")
        return {}
    out: dict[str, dict[str, Any]] = {}
    for name, fields in block.items():
        where = f"{key}.{name}"
        if sub_keys is not None and name not in sub_keys:
            problems.add(file, _line(block, name), where,
                         f"unknown {key} '{name}'; " + _unknown_key(name, sub_keys))
            continue
        if fields is None:
            fields = {}
        if not isinstance(fields, dict):
            problems.add(file, _line(block, name), where, "expected a mapping of fields")
            continue
        allowed = [f.name for f in FIELDS if f.name not in ("id", "disabled")]
        out[str(name)] = _check_fields(fields, file, where, problems, allowed)
    return out


def load_matrix(root: Path | str = "matrix") -> Matrix:
    """Load, merge and validate every file in ``root``. Raises ``MatrixError`` with all
    problems found."""
    root = Path(root)
    problems = _Problems(root)
    if not root.is_dir():
        raise MatrixError([f"{root}: no such directory (fix: pass the matrix directory, "
                           "e.g. `kiln matrix validate matrix/`)"], root=str(root))

    defaults_path = root / DEFAULTS_FILE
    backends_path = root / BACKENDS_FILE
    global_defaults: dict[str, Any] = {}
    os_defaults: dict[str, dict[str, Any]] = {}
    arch_defaults: dict[str, dict[str, Any]] = {}
    profiles: dict[str, dict[str, Any]] = {}
    not_in_defaults = ("id", "disabled", "os", "arch")
    families: list[str] = []

    if defaults_path.is_file():
        doc = _read_yaml(defaults_path, problems)
        if doc is not None and not isinstance(doc, dict):
            problems.add(defaults_path, None, "", "expected a mapping at the top level")
        elif isinstance(doc, dict):
            for key in doc:
                if key not in DEFAULTS_KEYS:
                    problems.add(defaults_path, _line(doc, key), "",
                                 f"unknown top-level key '{key}'; "
                                 + _unknown_key(key, DEFAULTS_KEYS))
            fam = doc.get("families")
            if isinstance(fam, list) and all(isinstance(f, str) for f in fam):
                families = [str(f) for f in fam]
            else:
                problems.add(defaults_path, _line(doc, "families"), "families",
                             "expected a list of family file names (without .yaml)",
                             "write families: [macos, ubuntu, ...]")
            block = doc.get("defaults")
            if isinstance(block, dict):
                global_defaults = _check_fields(
                    block, defaults_path, "defaults", problems,
                    [f.name for f in FIELDS if f.name not in not_in_defaults])
            os_defaults = _defaults_block(doc, "os", defaults_path, problems, OSES)
            arch_defaults = _defaults_block(doc, "arch", defaults_path, problems, ARCHES)
    else:
        problems.add(defaults_path, None, "", "missing", "create matrix/defaults.yaml")

    if backends_path.is_file():
        doc = _read_yaml(backends_path, problems)
        if isinstance(doc, dict):
            for key in doc:
                if key not in ("profiles",):
                    problems.add(backends_path, _line(doc, key), "",
                                 f"unknown top-level key '{key}'; "
                                 + _unknown_key(key, ("profiles",)))
            profiles = _defaults_block(doc, "profiles", backends_path, problems)
            for name in list(profiles):
                backend = name.split("@", 1)[0]
                if backend not in BACKENDS:
                    problems.add(backends_path, None, f"profiles.{name}",
                                 f"unknown backend '{backend}'; "
                                 + (_suggest(backend, BACKENDS) or "use one of "
                                    + ", ".join(BACKENDS)))

    present = sorted(p.stem for p in root.glob("*.yaml")
                     if p.name not in (DEFAULTS_FILE, BACKENDS_FILE))
    for stem in present:
        if stem not in families and defaults_path.is_file():
            problems.add(root / f"{stem}.yaml", None, "",
                         "not listed in defaults.yaml `families`, so its entries would be ignored",
                         f"add '{stem}' to families in matrix/defaults.yaml")
    for stem in families:
        if stem not in present:
            problems.add(defaults_path, _line(doc, "families") if defaults_path.is_file()
                         else None, "families", f"lists '{stem}' but matrix/{stem}.yaml does "
                         "not exist", "create the file or remove the name")
    family_files = [root / f"{stem}.yaml" for stem in families if stem in present]
    if not family_files:
        problems.add(root, None, "", "no entry files (*.yaml besides defaults.yaml)",
                     "add e.g. matrix/ubuntu.yaml with an `entries:` list")

    seen: dict[str, tuple[Path, int | None]] = {}
    entries: list[Entry] = []
    entry_fields = [f.name for f in FIELDS]
    for path in family_files:
        doc = _read_yaml(path, problems)
        if doc is None:
            continue
        if not isinstance(doc, dict):
            problems.add(path, None, "", "expected a mapping with `defaults:` and `entries:`")
            continue
        for key in doc:
            if key not in ("defaults", "entries"):
                problems.add(path, _line(doc, key), "", f"unknown top-level key '{key}'; "
                             + _unknown_key(key, ("defaults", "entries")))
        file_defaults: dict[str, Any] = {}
        block = doc.get("defaults")
        if block is not None:
            if isinstance(block, dict):
                file_defaults = _check_fields(
                    block, path, "defaults", problems,
                    [f.name for f in FIELDS if f.name not in ("id", "disabled")])
            else:
                problems.add(path, _line(doc, "defaults"), "defaults", "expected a mapping")
        raw_entries = doc.get("entries")
        if not isinstance(raw_entries, list):
            problems.add(path, _line(doc, "entries"), "entries",
                         "expected a list of entries", "write `entries:` then `- id: ...` items")
            continue
        for index, raw in enumerate(raw_entries):
            if not isinstance(raw, dict):
                problems.add(path, None, f"entries[{index}]", "expected a mapping")
                continue
            raw_id = raw.get("id")
            where = f"entry '{raw_id}'" if isinstance(raw_id, str) else f"entries[{index}]"
            line = _line(raw, "id")
            if isinstance(raw_id, str):
                if raw_id in seen:
                    first_path, first_line = seen[raw_id]
                    problems.add(path, line, where,
                                 f"duplicate id '{raw_id}' (first defined in "
                                 f"{problems.show(first_path)}:{first_line})",
                                 "give every entry its own id")
                    continue
                seen[raw_id] = (path, line)
            own = _check_fields(raw, path, where, problems, entry_fields)
            entry = _merge_entry(own, file_defaults, global_defaults, os_defaults,
                                 arch_defaults, profiles, raw, path, where, problems)
            if entry is not None:
                entries.append(entry)

    if problems.items:
        raise MatrixError(problems.items, root=str(root))
    return Matrix(root=root, entries=tuple(entries))


def _merge_entry(own: dict[str, Any], file_defaults: Mapping[str, Any],
                 global_defaults: Mapping[str, Any],
                 os_defaults: Mapping[str, Mapping[str, Any]],
                 arch_defaults: Mapping[str, Mapping[str, Any]],
                 profiles: Mapping[str, Mapping[str, Any]],
                 raw: Mapping[str, Any], path: Path, where: str,
                 problems: _Problems) -> Entry | None:
    if any(k in FIELD_BY_NAME and k not in own for k in raw):
        # Some of the entry's own fields were invalid and are already reported; checking what
        # is missing or inconsistent without them would only add noise.
        return None
    before = len(problems.items)
    layered: dict[str, Any] = dict(global_defaults)
    os_name = own.get("os", file_defaults.get("os"))
    arch_name = own.get("arch", file_defaults.get("arch"))
    if isinstance(os_name, str):
        layered.update(os_defaults.get(os_name, {}))
    if isinstance(arch_name, str):
        layered.update(arch_defaults.get(arch_name, {}))
    layered.update(file_defaults)
    backend = own.get("backend", layered.get("backend"))
    version = own.get("backend_version", layered.get("backend_version"))
    if isinstance(backend, str) and backend != "cpu":
        key = f"{backend}@{version}" if version else backend
        if key in profiles:
            layered.update(profiles[key])
        elif version is not None and "backend_version" in own:
            known = sorted(k for k in profiles if k.startswith(f"{backend}@"))
            problems.add(path, _line(raw, "backend_version"), where,
                         f"field 'backend_version': no profile '{key}' in backends.yaml",
                         "add the profile or use one of: " + (", ".join(known) or "(none)"))
    layered.update(own)

    for spec in FIELDS:
        if spec.required and spec.name not in layered:
            problems.add(path, _line(raw), where, f"missing required field '{spec.name}'",
                         f"add {spec.name}: ..." + (f" (one of: {', '.join(spec.choices)})"
                                                    if spec.choices else ""))
    if len(problems.items) > before:
        return None

    disabled: Disabled | None = None
    if "disabled" in own:
        disabled = _check_disabled(own["disabled"], path, where, problems,
                                   _line(raw, "disabled"))
    layered.setdefault("cpu_dispatch", [])
    layered.setdefault("gpu_targets", [])
    layered.setdefault("cmake", {})
    for rule, fld, message, fix in _RULES:
        if rule(layered):
            problems.add(path, _line(raw, fld) or _line(raw, "id"), where,
                         f"field '{fld}': " + message.format(**{
                             k: layered.get(k) for k in FIELD_BY_NAME}), fix.format(**{
                                 k: layered.get(k) for k in FIELD_BY_NAME}))
    if len(problems.items) > before:
        return None
    cmake = layered["cmake"]
    return Entry(
        id=layered["id"], os=layered["os"], arch=layered["arch"],
        distro=layered.get("distro"), backend=layered["backend"],
        backend_version=layered.get("backend_version"), libc=layered["libc"],
        libc_floor=layered.get("libc_floor"), min_os=layered.get("min_os"),
        cpu_baseline=layered["cpu_baseline"], cpu_dispatch=tuple(layered["cpu_dispatch"]),
        gpu_targets=tuple(layered["gpu_targets"]), min_driver=layered.get("min_driver"),
        build=layered["build"], runner=layered["runner"], container=layered.get("container"),
        verify=layered["verify"], verify_note=_oneline(layered.get("verify_note")),
        archive=layered["archive"],
        cmake=tuple(sorted((str(k), str(v)) for k, v in cmake.items())),
        disabled=disabled, notes=_oneline(layered.get("notes")),
        source=path.name,
    )


def _oneline(text: str | None) -> str | None:
    return None if text is None else " ".join(text.split())


# --------------------------------------------------------------------------------------------
# JSON Schema for editors (generated from FIELDS; `kiln matrix schema` writes it)


def _field_schema(spec: FieldSpec) -> dict[str, Any]:
    out: dict[str, Any]
    if spec.kind == "string":
        out = {"type": "string"}
        if spec.choices:
            out["enum"] = list(spec.choices)
        if spec.pattern is not None:
            out["pattern"] = spec.pattern.pattern
    elif spec.kind == "list":
        item: dict[str, Any] = {"type": "string"}
        if spec.item_choices:
            item["enum"] = list(spec.item_choices)
        if spec.item_pattern is not None:
            item["pattern"] = spec.item_pattern.pattern
        out = {"type": "array", "items": item, "uniqueItems": True}
    elif spec.kind == "map":
        out = {"type": "object", "propertyNames": {"pattern": CMAKE_VAR_RE.pattern},
               "additionalProperties": {"type": "string"}}
    else:
        out = {"type": "object", "additionalProperties": False,
               "required": list(DISABLED_KEYS),
               "properties": {"reason": {"type": "string", "minLength": 1},
                              "tracking": {"type": "string", "pattern": PR_URL_RE.pattern}}}
    out["description"] = spec.description
    return out


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) accepted by editors for every file in ``matrix/``."""
    fields = {f.name: _field_schema(f) for f in FIELDS}
    partial = {"type": "object", "additionalProperties": False,
               "properties": {k: v for k, v in fields.items() if k not in ("id", "disabled")}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://kiln.invalid/matrix.schema.json",
        "title": "kiln build matrix file",
        "description": "Generated by `kiln matrix schema` from kiln/matrix.py; do not edit.",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "families": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            "defaults": {"$ref": "#/$defs/partial"},
            "os": {"type": "object", "additionalProperties": False,
                   "properties": {o: {"$ref": "#/$defs/partial"} for o in OSES}},
            "arch": {"type": "object", "additionalProperties": False,
                     "properties": {a: {"$ref": "#/$defs/partial"} for a in ARCHES}},
            "profiles": {"type": "object",
                         "propertyNames": {"pattern": "^(" + "|".join(BACKENDS)
                                           + r")(@\d+(\.\d+){0,2})?$"},
                         "additionalProperties": {"$ref": "#/$defs/partial"}},
            "entries": {"type": "array", "items": {"$ref": "#/$defs/entry"}},
        },
        "$defs": {
            "partial": partial,
            "entry": {"type": "object", "additionalProperties": False, "required": ["id"],
                      "properties": fields},
        },
    }
