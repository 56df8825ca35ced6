"""What kiln needs to know of a Mach-O file, read with LIEF: the architecture, the minimum macOS
and the dylibs it loads; and its code signature (``read_code_signature``: the blob that
LC_CODE_SIGNATURE points at, parsed here because LIEF does not check it).

One reader for the wheel check (``kiln.package.wheel.check_macos``: a macOS wheel's library
against its ``macosx_<min>_<arch>`` tag) and the binary inspection of a build
(``kiln.verify.inspect``), so the two cannot disagree about the same file.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any

from kiln.errors import VerifyError

__all__ = ["CS_ADHOC", "MACHO_CPU", "CodeSignature", "MachOFacts", "macho_facts",
           "read_code_signature", "read_macho"]

# Mach-O CPU types, named as macOS wheel tags and ``lipo`` name them.
MACHO_CPU = {0x01000007: "x86_64", 0x0100000C: "arm64"}
# CodeDirectory flag of a signature made without a certificate (what zig's linker writes).
CS_ADHOC = 0x2
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


@dataclass(frozen=True, kw_only=True)
class CodeSignature:
    """The code signature blob of a Mach-O file: its CodeDirectory's flags and identifier, and
    ``problem`` (None when every page hash matches the file)."""

    flags: int
    identifier: str
    hash_type: str
    problem: str | None

    @property
    def adhoc(self) -> bool:
        return bool(self.flags & CS_ADHOC)

    @property
    def state(self) -> str:
        """"ad-hoc" | "signed" (hashes match; with or without a certificate) or
        "invalid: <why>"."""
        if self.problem is not None:
            return f"invalid: {self.problem}"
        return "ad-hoc" if self.adhoc else "signed"


def read_code_signature(data: bytes, offset: int, size: int) -> CodeSignature:
    """Parse the signature at ``offset`` (LC_CODE_SIGNATURE's dataoff / datasize) of the file
    ``data`` and check its page hashes.

    The blob format (big-endian): a SuperBlob (magic 0xfade0cc0, length, count, then (type,
    offset) pairs) whose CodeDirectory (magic 0xfade0c02: version, flags, hashOffset, identOffset,
    nSpecialSlots, nCodeSlots, codeLimit, hashSize, hashType, platform, pageSize) lists the hash
    of each page of the file up to codeLimit.
    """
    def bad(problem: str, flags: int = 0, ident: str = "", algo: str = "") -> CodeSignature:
        return CodeSignature(flags=flags, identifier=ident, hash_type=algo, problem=problem)

    blob = data[offset:offset + size]
    if len(blob) < 12 or struct.unpack(">I", blob[:4])[0] != 0xFADE0CC0:
        return bad("no SuperBlob at LC_CODE_SIGNATURE's offset")
    count = struct.unpack(">I", blob[8:12])[0]
    for i in range(count):
        if len(blob) < 20 + 8 * i:
            break
        slot_type, slot_off = struct.unpack(">II", blob[12 + 8 * i:20 + 8 * i])
        if slot_type != 0:  # CSSLOT_CODEDIRECTORY
            continue
        cd = blob[slot_off:]
        if len(cd) < 44 or struct.unpack(">I", cd[:4])[0] != 0xFADE0C02:
            return bad("the CodeDirectory slot holds no CodeDirectory")
        (_, _, _, flags, hash_offset, ident_offset, _, n_code, code_limit) = struct.unpack(
            ">9I", cd[:36])
        hash_size, hash_type, _, page_log2 = struct.unpack(">4B", cd[36:40])
        ident = cd[ident_offset:].split(b"\0", 1)[0].decode("utf-8", "replace")
        algo = {1: "sha1", 2: "sha256"}.get(hash_type)
        if algo is None:
            return bad(f"unknown hash type {hash_type}", flags, ident)
        page = 1 << page_log2 if page_log2 else code_limit
        for slot in range(n_code):
            start = slot * page
            want = cd[hash_offset + slot * hash_size:hash_offset + (slot + 1) * hash_size]
            got = hashlib.new(algo, data[start:min(start + page, code_limit)]).digest()
            if got[:hash_size] != want:
                return bad(f"page {slot} (offset {start}) does not match its hash: the file "
                           "was changed after signing", flags, ident, algo)
        return CodeSignature(flags=flags, identifier=ident, hash_type=algo, problem=None)
    return bad("no CodeDirectory")
