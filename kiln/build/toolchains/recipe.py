"""Load ``recipes/``: per-backend build recipes and the verification data, parsed once.

``recipes/<backend>.yaml`` says which toolchain builds the backend and with which CMake
options and flags; ``recipes/verify.yaml`` names the model, prompt and emulators of the run
checks and the libraries ``inspect`` allows. Both are data; the code that uses them is in
``kiln/build/toolchains/`` and ``kiln/verify/``. Unknown keys are errors that suggest the
closest key, like the matrix's.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kiln.errors import ConfigError

__all__ = [
    "QemuSpec",
    "Recipe",
    "RunSpec",
    "VerifySpec",
    "load_recipe",
    "load_verify_spec",
    "recipe_path",
]

RECIPE_KEYS = ("toolchain", "cmake", "cmake_os", "cflags", "ldflags", "ldflags_os", "mcpu")
VERIFY_KEYS = ("run", "qemu", "allowed_libraries", "backend_libraries")
RUN_KEYS = ("models", "prompt", "n_predict", "threads", "timeout_s", "reference")
QEMU_KEYS = ("program", "sysroot", "sysroot_package")


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """How one backend is configured: toolchain, CMake options, flags (with placeholders)."""

    backend: str
    toolchain: str
    cmake: tuple[tuple[str, str], ...]
    cmake_os: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]
    cflags: tuple[str, ...]
    ldflags: tuple[str, ...]
    ldflags_os: tuple[tuple[str, tuple[str, ...]], ...]
    mcpu: tuple[tuple[str, str], ...]
    sha256: str

    def cmake_for(self, os_name: str) -> dict[str, str]:
        out = dict(self.cmake)
        out.update(dict(dict(self.cmake_os).get(os_name, ())))
        return out

    def ldflags_for(self, os_name: str) -> tuple[str, ...]:
        return self.ldflags + dict(self.ldflags_os).get(os_name, ())

    def mcpu_for(self, baseline: str, *, source: str) -> str:
        table = dict(self.mcpu)
        if baseline not in table:
            raise ConfigError(f"{source}: no 'mcpu' for cpu_baseline '{baseline}'",
                              hint=f"add '{baseline}: <zig cpu name>' under mcpu:")
        return table[baseline]


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    models: tuple[str, ...]
    prompt: str
    n_predict: int
    threads: int
    timeout_s: float
    reference: str


@dataclass(frozen=True, kw_only=True)
class QemuSpec:
    program: str
    sysroot: str
    sysroot_package: str


@dataclass(frozen=True, kw_only=True)
class VerifySpec:
    run: RunSpec
    qemu: tuple[tuple[str, QemuSpec], ...]
    allowed_libraries: tuple[tuple[str, tuple[str, ...]], ...]
    # backend -> os -> libraries that backend's binaries may also need (a vendor runtime the
    # user installs, e.g. SYCL's, which cannot be opened at run time like the others)
    backend_libraries: tuple[tuple[str, tuple[tuple[str, tuple[str, ...]], ...]], ...] = ()
    sha256: str

    def qemu_for(self, arch: str) -> QemuSpec | None:
        return dict(self.qemu).get(arch)

    def allowed_for(self, os_name: str, backend: str | None = None) -> tuple[str, ...]:
        extra = dict(dict(self.backend_libraries).get(backend or "", ())).get(os_name, ())
        return dict(self.allowed_libraries).get(os_name, ()) + extra


def recipe_path(recipes: Path, backend: str) -> Path:
    return recipes / f"{backend}.yaml"


def _load(path: Path) -> tuple[dict[str, Any], str]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}",
                          hint="run kiln from a checkout that has recipes/") from exc
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data, hashlib.sha256(raw).hexdigest()


def _check_keys(path: Path, where: str, data: Mapping[str, Any], valid: tuple[str, ...]) -> None:
    for key in data:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "valid keys: " + ", ".join(valid)
            raise ConfigError(f"{path}: {where}unknown key '{key}'", hint=hint)


def _str_map(path: Path, field: str, value: object) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: field '{field}' must be a mapping")
    out = []
    for k, v in value.items():
        if isinstance(v, bool) or not isinstance(v, str | int):
            raise ConfigError(f"{path}: field '{field}.{k}' must be a string",
                              hint='quote it, e.g. "ON"')
        out.append((str(k), str(v)))
    return tuple(sorted(out))


def _str_list(path: Path, field: str, value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{path}: field '{field}' must be a list of strings")
    return tuple(value)


def load_recipe(recipes: Path, backend: str) -> Recipe:
    """``recipes/<backend>.yaml``; its sha256 covers the CMake templates too."""
    path = recipe_path(recipes, backend)
    data, digest = _load(path)
    _check_keys(path, "", data, RECIPE_KEYS)
    toolchain = data.get("toolchain")
    if not isinstance(toolchain, str):
        raise ConfigError(f"{path}: field 'toolchain' is required (e.g. toolchain: zig)")
    cmake_os = data.get("cmake_os") or {}
    ldflags_os = data.get("ldflags_os") or {}
    if not isinstance(cmake_os, dict) or not isinstance(ldflags_os, dict):
        raise ConfigError(f"{path}: 'cmake_os' and 'ldflags_os' map an OS name to values")
    h = hashlib.sha256(digest.encode())
    for template in sorted((recipes / "cmake").glob("*")):
        if template.is_file():
            h.update(template.name.encode() + b"\0" + template.read_bytes())
    return Recipe(
        backend=backend, toolchain=toolchain,
        cmake=_str_map(path, "cmake", data.get("cmake")),
        cmake_os=tuple(sorted((str(k), _str_map(path, f"cmake_os.{k}", v))
                              for k, v in cmake_os.items())),
        cflags=_str_list(path, "cflags", data.get("cflags")),
        ldflags=_str_list(path, "ldflags", data.get("ldflags")),
        ldflags_os=tuple(sorted((str(k), _str_list(path, f"ldflags_os.{k}", v))
                                for k, v in ldflags_os.items())),
        mcpu=_str_map(path, "mcpu", data.get("mcpu")),
        sha256=h.hexdigest(),
    )


def load_verify_spec(recipes: Path) -> VerifySpec:
    path = recipes / "verify.yaml"
    data, digest = _load(path)
    _check_keys(path, "", data, VERIFY_KEYS)
    run = data.get("run")
    if not isinstance(run, dict):
        raise ConfigError(f"{path}: field 'run' is required")
    _check_keys(path, "run: ", run, RUN_KEYS)
    try:
        spec_run = RunSpec(models=_str_list(path, "run.models", run.get("models")),
                           prompt=str(run["prompt"]), n_predict=int(run["n_predict"]),
                           threads=int(run.get("threads", 1)),
                           timeout_s=float(run.get("timeout_s", 300)),
                           reference=str(run["reference"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: field 'run' needs models, prompt, n_predict and reference "
                          f"({exc})") from exc
    qemu_raw = data.get("qemu") or {}
    qemu = []
    for arch, spec in qemu_raw.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"{path}: qemu.{arch} must be a mapping")
        _check_keys(path, f"qemu.{arch}: ", spec, QEMU_KEYS)
        qemu.append((str(arch), QemuSpec(program=str(spec["program"]),
                                         sysroot=str(spec["sysroot"]),
                                         sysroot_package=str(spec["sysroot_package"]))))
    allowed = data.get("allowed_libraries") or {}
    per_backend = data.get("backend_libraries") or {}
    if not isinstance(per_backend, dict) or not all(isinstance(v, dict)
                                                    for v in per_backend.values()):
        raise ConfigError(f"{path}: 'backend_libraries' maps a backend to {{os: [libraries]}}",
                          hint="e.g. backend_libraries: {sycl: {linux: [libsycl.so.8]}}")
    return VerifySpec(
        run=spec_run, qemu=tuple(sorted(qemu)),
        allowed_libraries=tuple(sorted((str(k), _str_list(path, f"allowed_libraries.{k}", v))
                                       for k, v in allowed.items())),
        backend_libraries=tuple(sorted(
            (str(b), tuple(sorted((str(k), _str_list(path, f"backend_libraries.{b}.{k}", v))
                                  for k, v in by_os.items())))
            for b, by_os in per_backend.items())),
        sha256=digest,
    )
