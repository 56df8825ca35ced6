"""What kiln needs to know of a Mach-O file, read with LIEF: the architecture, the minimum macOS
and the dylibs it loads.

One reader for the wheel check (``kiln.package.wheel.check_macos``: a macOS wheel's library
against its ``macosx_<min>_<arch>`` tag) and the binary inspection of a build
(``kiln.verify.inspect``), so the two cannot disagree about the same file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kiln.errors import VerifyError

__all__ = ["MACHO_CPU", "MachOFacts", "macho_facts", "read_macho"]

# Mach-O CPU types, named as macOS wheel tags and ``lipo`` name them.
MACHO_CPU = {0x01000007: "x86_64", 0x0100000C: "arm64"}
# The load commands that make dyld load a dylib (LC_ID_DYLIB, the file's own name, is not one).
_LOADS = ("LOAD_DYLIB", "LOAD_WEAK_DYLIB", "REEXPORT_DYLIB", "LAZY_LOAD_DYLIB",
          "LOAD_UPWARD_DYLIB")


@dataclass(frozen=True, kw_only=True)
class MachOFacts:
    arch: str  # "arm64" | "x86_64" | the CPU type in hex
    minos: tuple[int, int, int] | None  # LC_BUILD_VERSION's minos, else LC_VERSION_MIN_MACOSX
    dylibs: tuple[str, ...]  # in load-command order


def macho_facts(binary: Any) -> MachOFacts:
    """The facts of one parsed ``lief.MachO.Binary`` (one architecture of a file)."""
    import lief

    cpu = int(binary.header.cpu_type)
    minos: tuple[int, int, int] | None = None
    build_version, version_min = binary.build_version, binary.version_min
    if build_version is not None:
        minos = _triple(build_version.minos)
    elif version_min is not None:
        minos = _triple(version_min.version)
    loads = {getattr(lief.MachO.LoadCommand.TYPE, name) for name in _LOADS}
    dylibs = tuple(str(lib.name) for lib in binary.libraries if lib.command in loads)
    return MachOFacts(arch=MACHO_CPU.get(cpu, hex(cpu)), minos=minos, dylibs=dylibs)


def _triple(values: Any) -> tuple[int, int, int]:
    major, minor, patch = (int(v) for v in values)
    return major, minor, patch


def read_macho(data: bytes) -> MachOFacts:
    """The facts of a thin Mach-O file held in ``data``; a ``VerifyError`` for anything else
    (a universal file included: a macOS wheel's tag names one architecture)."""
    import lief

    lief.logging.disable()
    fat = lief.MachO.parse(data)
    if fat is None or fat.size != 1 or fat.at(0) is None:
        raise VerifyError("not a thin Mach-O file",
                          hint="macOS wheels carry one architecture; build thin libraries")
    return macho_facts(fat.at(0))
