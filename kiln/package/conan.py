"""Conan packages of a release: which archive becomes which binary package of the project
(a Conan package named after it: kiln.toml's project.name).

The recipe is ``recipes/conanfile.py`` (prebuilt binaries: settings os, arch, build_type and an
option ``backend``). This module holds what kiln decides about it, without running Conan:

- ``conan_version``: ``0.0.<N>`` for tag ``b<N>``, the same version as the wheels;
- ``package_for``: the Conan settings and backend option of an archive's entry, or why it has
  no package (Android: a static musl build, which Conan's Android settings (the NDK's bionic)
  would misdescribe);
- ``select_packages``: one archive per (os, arch, backend). Where two entries share them (the
  Ubuntu and openEuler CPU builds) the one with the oldest glibc floor is taken, since it runs
  wherever the other does, and the other is reported as skipped.

Conan runs in ``kiln.publish.conan``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kiln.matrix import Entry
from kiln.matrix.catalogue import wheel_variant
from kiln.package.records import AssetRecord

__all__ = [
    "CONAN_ARCH",
    "CONAN_OS",
    "ConanPackage",
    "backend_option",
    "conan_version",
    "package_for",
    "select_packages",
]

CONAN_OS = {"linux": "Linux", "macos": "Macos", "windows": "Windows"}
CONAN_ARCH = {"x86_64": "x86_64", "aarch64": "armv8", "s390x": "s390x"}
BUILD_TYPE = "Release"


def conan_version(build_number: int) -> str:
    return f"0.0.{build_number}"


def backend_option(entry: Entry) -> str:
    """The recipe's ``backend`` option value: the backend's wheel variant in the catalogue
    (``cu124``, ``rocm7.2``, ``syclfp16``), or the backend's own name where it has none (the
    CPU, the recipe's default)."""
    return wheel_variant(entry.backend, entry.backend_version, entry.cmake) or entry.backend


@dataclass(frozen=True, kw_only=True)
class ConanPackage:
    """One binary package to export: the archive it comes from and its settings."""

    record: AssetRecord
    name: str         # the Conan package: the project's name
    os: str           # Conan's name: Linux, Macos, Windows
    arch: str         # x86_64, armv8, s390x
    build_type: str
    backend: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.os, self.arch, self.build_type, self.backend)

    def settings_args(self) -> list[str]:
        return ["-s", f"os={self.os}", "-s", f"arch={self.arch}", "-s",
                f"build_type={self.build_type}", "-o", f"{self.name}/*:backend={self.backend}"]


def package_for(record: AssetRecord, entry: Entry, *, name: str) -> ConanPackage | str:
    """The package of an archive of project ``name``, or the reason it has none."""
    if record.kind != "archive":
        return f"{record.name} is a {record.kind}, not an archive"
    if entry.os not in CONAN_OS:
        return (f"{entry.id}: {entry.os} builds are static musl executables without a shared "
                "library; Conan's settings for it describe NDK (bionic) builds")
    if entry.os == "linux" and entry.libc != "glibc":
        return f"{entry.id}: only glibc Linux builds are packaged"
    if entry.arch not in CONAN_ARCH:
        return f"{entry.id}: no Conan arch for {entry.arch}"
    return ConanPackage(record=record, name=name, os=CONAN_OS[entry.os],
                        arch=CONAN_ARCH[entry.arch],
                        build_type=BUILD_TYPE, backend=backend_option(entry))


def _floor(record: AssetRecord) -> tuple[int, ...]:
    if not record.libc_floor:
        return (0,)
    return tuple(int(p) for p in record.libc_floor.split("."))


def select_packages(pairs: Sequence[tuple[AssetRecord, Entry]], *, name: str
                    ) -> tuple[tuple[ConanPackage, ...], tuple[str, ...]]:
    """The packages of project ``name`` to export (sorted by settings) and the reasons for
    what is left out."""
    chosen: dict[tuple[str, str, str, str], ConanPackage] = {}
    skipped: list[str] = []
    for record, entry in pairs:
        if record.kind != "archive":
            continue
        pkg = package_for(record, entry, name=name)
        if isinstance(pkg, str):
            skipped.append(pkg)
            continue
        other = chosen.get(pkg.key)
        if other is None:
            chosen[pkg.key] = pkg
            continue
        keep, drop = sorted((other, pkg), key=lambda p: (_floor(p.record), p.record.entry_id))
        chosen[pkg.key] = keep
        skipped.append(f"{drop.record.entry_id}: same os, arch and backend as "
                       f"{keep.record.entry_id}, whose older glibc floor "
                       f"({keep.record.libc_floor}) covers it")
    return tuple(chosen[k] for k in sorted(chosen)), tuple(sorted(skipped))
