"""Validation: the collected problems, value checks against ``FIELDS``, and the rules
on impossible combinations (``RULES``: predicate on the merged entry, field, message,
fix), most of them read from the catalogue."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from kiln.matrix.catalogue import BACKENDS as CATALOGUE
from kiln.matrix.catalogue import CPU_ARCHES, Placement
from kiln.matrix.model import (
    CMAKE_VAR_RE,
    DISABLED_KEYS,
    PR_URL_RE,
    Disabled,
    FieldSpec,
)
from kiln.matrix.yaml_lines import line_of

__all__ = [
    "RULES",
    "Problems",
    "check_disabled",
    "check_value",
    "suggest",
    "unknown_key",
]


class Problems:
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


def suggest(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else ""


def unknown_key(word: str, valid: Iterable[str]) -> str:
    hint = suggest(word, valid)
    return hint if hint else "valid keys are: " + ", ".join(sorted(valid))


def check_value(spec: FieldSpec, value: object) -> tuple[str, str] | None:
    """Return (message, fix) if ``value`` is not valid for ``spec``."""
    if spec.kind == "string":
        if not isinstance(value, str) or (isinstance(value, bool)):
            shown = repr(value)
            fix = spec.fix or "quote the value"
            return f"expected a string, got {type(value).__name__} {shown}", fix
        if spec.choices is not None and value not in spec.choices:
            hint = suggest(value, spec.choices)
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
                hint = suggest(item, spec.item_choices)
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
            return (f"expected a mapping, got {type(value).__name__}",
                    "write {OPTION: \"ON\"} with the project's CMake option")
        for k, v in value.items():
            if str(k).startswith("CMAKE_"):
                return (f"CMake option {k!r} belongs to the toolchain, not to a matrix entry",
                        "set CMAKE_* variables in the backend's recipe (recipes/<backend>.yaml)")
            if not CMAKE_VAR_RE.fullmatch(str(k)):
                return (f"CMake option {k!r} is not an upper-case CMake variable name",
                        "use the project's option: A-Z, 0-9 and '_', starting with a letter")
            if not isinstance(v, str):
                return f"CMake option {k} must be a string, got {v!r}", "quote it: \"ON\""
        return None
    if spec.kind == "disabled":
        return None  # checked separately, it has its own keys
    raise AssertionError(f"unknown field kind {spec.kind}")


def check_disabled(value: object, file: Path, where: str, problems: Problems,
                    line: int | None) -> Disabled | None:
    if not isinstance(value, dict):
        problems.add(file, line, where, "field 'disabled': expected a mapping",
                     "write disabled: {reason: ..., tracking: https://github.com/O/R/pull/N}")
        return None
    ok = True
    for key in value:
        if key not in DISABLED_KEYS:
            problems.add(file, line_of(value, key), where,
                         f"field 'disabled': unknown key '{key}'; "
                         + unknown_key(key, DISABLED_KEYS))
            ok = False
    reason = value.get("reason")
    tracking = value.get("tracking")
    if not isinstance(reason, str) or not reason.strip():
        problems.add(file, line_of(value, "reason"), where,
                     "field 'disabled.reason': expected a non-empty sentence",
                     "say why the build is disabled")
        ok = False
    if not isinstance(tracking, str) or not PR_URL_RE.fullmatch(tracking):
        problems.add(file, line_of(value, "tracking"), where,
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

RULES: tuple[_Rule, ...] = (
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
