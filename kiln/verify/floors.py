"""Compatibility floors measured from the binaries of a release asset, not read from the matrix.

For every executable and shared library of an unpacked archive (ELF, PE, Mach-O; static
archives, object files, symbolic links and data are skipped) ``measure_tree`` reads:

- ``glibc`` / ``glibcxx``: the highest ``GLIBC_x.y`` and ``GLIBCXX_x.y.z`` version the file
  needs (ELF ``.gnu.version_r``, read with pyelftools);
- ``macos``: the minimum macOS of a Mach-O file (LC_BUILD_VERSION ``minos``, else
  LC_VERSION_MIN_MACOSX), with the reader of ``kiln.package.macho``;
- ``windows``: a PE file's subsystem version (optional header Major/MinorSubsystemVersion,
  "major.minor"): the oldest Windows that loads it (6.1 = Windows 7, 10.0 = Windows 10);
  the PE machine goes into ``machines``;
- ``android_api``: the API level of the ``.note.android.ident`` ELF note (owner "Android",
  type 1, a 32-bit level). Android builds made as static musl executables (the matrix's
  android entries) have no such note: their floor is the kernel's system-call ABI, not an API
  level, and ``android_api`` stays None;
- ``x86_64_level``: the x86-64 psABI level (v1..v4) of the code that runs without run-time
  dispatch, below.

The tree's floors are the maximum over its files; ``where`` names the file that set each one.

x86-64 level: the rule
----------------------
A project's SIMD kernels (here: ``runtime/src/cpu/quants_x86.c``) are compiled for the
baseline target; each carries the ``target`` attribute of its level and is reached only
through that level's ``static const em_kernels`` table of function pointers, which
``kernels.c`` hands out after ``cpu_features.c`` has asked CPUID (and XGETBV) what the CPU
and OS run. Release binaries are
stripped and some kernels are not named after their level (``dot_f32_z``), so symbol names
cannot tell the two kinds of code apart; how the code is *reached* can, and that is visible
in any binary:

1. Functions: the FUNC symbols of ``.symtab`` when the file has them, else the unwind table
   (ELF ``.eh_frame`` FDEs, PE ``.pdata``), which every compiled function has, stripped or
   not. Code outside every function counts as reached.
2. ``objdump -d`` disassembles the code; a function *references* another when one of its
   instructions calls or jumps to it directly or takes its address (a RIP-relative ``lea``
   or ``mov``, an immediate).
3. The roots are the entry point, the exported functions, the constructors and destructors
   (``.init_array``/``.fini_array``, PE TLS callbacks), and every function referenced from
   code outside a function. A function that no instruction references and that is no root
   is reachable only through a pointer stored in data: a dispatch table. It and every
   function referenced only from such functions (transitively) is *dispatched* and does not
   count; everything else counts.
4. Each counted instruction is classified by the level that introduced it, from its
   encoding first: an EVEX prefix (0x62, which in 64-bit mode is never BOUND) or a VEX-encoded
   opmask instruction (``k*``) is AVX-512 -> v4; any other VEX prefix (0xC4/0xC5, never
   LES/LDS in 64-bit mode) is AVX, AVX2, FMA, F16C, BMI1 or BMI2 -> v3; legacy-encoded LZCNT
   and MOVBE -> v3; SSE3, SSSE3, SSE4.1, SSE4.2 (CRC32 included), POPCNT, CMPXCHG16B and
   LAHF/SAHF -> v2; everything else -> v1. Two exceptions keep the rule honest about what
   runs: TZCNT (F3 0F BC) executes as BSF on every x86-64 and compilers emit it for non-zero
   inputs only, so it is v1; XGETBV is executed by the feature probe only after CPUID
   reported OSXSAVE, so it is v1 too. Extensions that belong to no level (AVX-VNNI,
   AVX512-VNNI/BF16/FP16) count at the level of their encoding (v3 for VEX, v4 for EVEX).

The rule is conservative about direct references (a kernel that someone calls directly
counts, as it should: nothing checked the CPU before that call) and trusts data-only
references to be dispatch. Code compiled above the baseline as a whole (``-march=x86-64-v3``)
shows in ``main`` and everything it calls, so it cannot hide. Mach-O x86-64 code is not
disassembled (the binutils here read ELF and PE only): its level stays None.
"""

from __future__ import annotations

import re
import shutil
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from kiln.errors import IntegrityError, VerifyError
from kiln.files import safe_unpack
from kiln.matrix.catalogue import CPU_ARCH_BY_NAME
from kiln.matrix.model import Requirements
from kiln.package.macho import macho_facts
from kiln.run import require_tool, run

__all__ = [
    "FLOOR_FIELDS",
    "Floors",
    "Instruction",
    "check_promise",
    "classify_instruction",
    "describe_changes",
    "dispatched_functions",
    "measure_archive",
    "measure_file",
    "measure_tree",
    "parse_objdump",
    "read_android_note",
    "windows_nt_version",
    "x86_64_level",
]

# The floors, in the order of the dataclass; ``where`` says which file set each one.
FLOOR_FIELDS = ("glibc", "glibcxx", "macos", "windows", "x86_64_level", "android_api")
# An unpacked release archive is far below this; a bigger one is refused.
MAX_UNPACKED = 4 << 30

_GLIBC = re.compile(r"GLIBC_(\d+(?:\.\d+)+)")
_GLIBCXX = re.compile(r"GLIBCXX_(\d+(?:\.\d+)+)")
_LEVEL = re.compile(r"v[1-4]")
# The matrix's x86-64 baselines (the catalogue's level names, in order) as psABI levels v1..v4.
_X86_BASELINE = {name: f"v{i + 1}" for i, name in enumerate(CPU_ARCH_BY_NAME["x86_64"].names)}
# Windows versions as the matrix names them, and the NT version a PE's subsystem names.
_WINDOWS_NT = {"vista": "6.0", "7": "6.1", "8": "6.2", "8.1": "6.3", "10": "10.0", "11": "10.0"}


def _vkey(text: str) -> tuple[int, ...]:
    parts = [int(p) for p in text.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def _higher(a: str | None, b: str | None) -> bool:
    """Whether version ``b`` is above ``a`` (None is below everything)."""
    if b is None:
        return False
    return a is None or _vkey(b) > _vkey(a)


@dataclass(frozen=True, kw_only=True)
class Floors:
    """What the binaries of one asset need at least; None where nothing needs it."""

    glibc: str | None = None         # "2.17"
    glibcxx: str | None = None       # "3.4.21"
    macos: str | None = None         # "11.0"
    windows: str | None = None       # PE subsystem version, "6.0"
    x86_64_level: str | None = None  # "v1".."v4"
    android_api: int | None = None   # 24
    # which file set each floor ("bin/demo-cli"), and the machines seen ("x86_64", "aarch64")
    where: Mapping[str, str] = field(default_factory=dict, compare=False)
    machines: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in FLOOR_FIELDS}
        out["where"] = dict(sorted(self.where.items()))
        out["machines"] = list(self.machines)
        return out

    @classmethod
    def from_json(cls, data: object) -> Floors:
        """The inverse of ``to_json``; a wrong type or an unknown key is an ``IntegrityError``
        naming the field."""
        if not isinstance(data, dict):
            raise IntegrityError(f"floors: expected an object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise IntegrityError(f"floors: unknown field {key!r}")
        values: dict[str, Any] = {}
        for name in ("glibc", "glibcxx", "macos", "windows"):
            value = data.get(name)
            if value is not None and (not isinstance(value, str)
                                      or not re.fullmatch(r"\d+(\.\d+)*", value)):
                raise IntegrityError(f"floors: field {name!r} must be a version string "
                                     f"such as \"2.17\" or null, got {value!r}")
            values[name] = value
        level = data.get("x86_64_level")
        if level is not None and (not isinstance(level, str) or not _LEVEL.fullmatch(level)):
            raise IntegrityError(f"floors: field 'x86_64_level' must be \"v1\"..\"v4\" or "
                                 f"null, got {level!r}")
        values["x86_64_level"] = level
        api = data.get("android_api")
        if api is not None and (isinstance(api, bool) or not isinstance(api, int) or api < 1):
            raise IntegrityError(f"floors: field 'android_api' must be a positive integer or "
                                 f"null, got {api!r}")
        values["android_api"] = api
        where = data.get("where", {})
        if not isinstance(where, dict) or not all(
                k in FLOOR_FIELDS and isinstance(v, str) for k, v in where.items()):
            raise IntegrityError("floors: field 'where' must map floor names to file paths, "
                                 f"got {where!r}")
        machines = data.get("machines", [])
        if not isinstance(machines, list) or not all(isinstance(m, str) for m in machines):
            raise IntegrityError(f"floors: field 'machines' must be a list of strings, "
                                 f"got {machines!r}")
        return cls(**values, where=dict(where), machines=tuple(machines))

    def merge(self, other: Floors) -> Floors:
        """The higher of each floor, with the file that set it."""
        values: dict[str, Any] = {}
        where = dict(self.where)
        for name in FLOOR_FIELDS:
            mine, theirs = getattr(self, name), getattr(other, name)
            a = None if mine is None else str(mine).lstrip("v")
            b = None if theirs is None else str(theirs).lstrip("v")
            if _higher(a, b):
                values[name] = theirs
                if name in other.where:
                    where[name] = other.where[name]
            else:
                values[name] = mine
        machines = tuple(sorted(set(self.machines) | set(other.machines)))
        return Floors(**values, where=where, machines=machines)


# --------------------------------------------------------------------------------------------
# x86-64 instructions and levels

_PREFIXES = {0x66, 0x67, 0xF0, 0xF2, 0xF3, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65}
_PREFIX_WORDS = {"lock", "rep", "repz", "repe", "repnz", "repne", "data16", "addr32", "notrack",
                 "bnd", "cs", "ds", "es", "fs", "gs", "ss", "xacquire", "xrelease", "{vex}",
                 "{vex3}", "{evex}"}
_V2 = frozenset(" ".join((
    # SSE3
    "addsubpd addsubps haddpd haddps hsubpd hsubps lddqu movddup movshdup movsldup monitor mwait"
    " fisttp fisttps fisttpl fisttpll"
    # SSSE3
    " pabsb pabsw pabsd palignr phaddw phaddd phaddsw phsubw phsubd phsubsw pmaddubsw pmulhrsw"
    " pshufb psignb psignw psignd"
    # SSE4.1
    " blendpd blendps blendvpd blendvps dppd dpps extractps insertps movntdqa mpsadbw packusdw"
    " pblendvb pblendw pcmpeqq pextrb pextrd pextrq pinsrb pinsrd pinsrq phminposuw pmaxsb"
    " pmaxsd pmaxud pmaxuw pminsb pminsd pminud pminuw pmovsxbw pmovsxbd pmovsxbq pmovsxwd"
    " pmovsxwq pmovsxdq pmovzxbw pmovzxbd pmovzxbq pmovzxwd pmovzxwq pmovzxdq pmuldq pmulld"
    " ptest roundpd roundps roundsd roundss"
    # SSE4.2, POPCNT, CMPXCHG16B, LAHF/SAHF in 64-bit mode
    " pcmpestri pcmpestrm pcmpistri pcmpistrm pcmpgtq crc32 crc32b crc32w crc32l crc32q"
    " popcnt popcntw popcntl popcntq cmpxchg16b lahf sahf",)).split())
_V3_LEGACY = frozenset(("lzcnt", "lzcntw", "lzcntl", "lzcntq", "movbe", "movbew", "movbel",
                        "movbeq"))


def classify_instruction(raw: bytes, text: str) -> int:
    """The x86-64 level (1..4) that introduced one instruction: ``raw`` its bytes, ``text``
    its objdump (AT&T) text, e.g. ``b"\\xc5\\xfc\\x58\\xc1"``, ``"vaddps %ymm1,%ymm0,%ymm0"``."""
    i = 0
    while i < len(raw) and raw[i] in _PREFIXES:
        i += 1
    words = [w for w in text.split() if w not in _PREFIX_WORDS and not w.startswith("rex")]
    mnemonic = words[0].lower() if words else ""
    if i < len(raw) and raw[i] == 0x62:
        return 4
    if i < len(raw) and raw[i] in (0xC4, 0xC5):
        return 4 if mnemonic.startswith("k") else 3
    if mnemonic in _V3_LEGACY:
        return 3
    if mnemonic in _V2:
        return 2
    if mnemonic == "pextrw" and "(" in text:  # the SSE4.1 form with a memory destination
        return 2
    return 1


@dataclass(frozen=True)
class Instruction:
    """One disassembled instruction: its address, bytes and objdump (AT&T) text."""

    address: int
    raw: bytes
    text: str


_LINE = re.compile(r"\s*([0-9a-f]+):\t([0-9a-f]{2}(?: [0-9a-f]{2})*)\s*\t(.*)")
_BRANCH = re.compile(r"^(?:(?:bnd|notrack)\s+)?(call|jmp|j[a-z]+|loop[a-z]*)[a-z]?\s+"
                     r"([0-9a-f]+)(?:\s|$)")
_RIPREF = re.compile(r"#\s*(?:0x)?([0-9a-f]+)")
_IMM = re.compile(r"\$0x([0-9a-f]+)")


def parse_objdump(text: str) -> list[Instruction]:
    """The instructions of ``objdump -d -w`` output (address, bytes, text)."""
    out = []
    for line in text.splitlines():
        m = _LINE.fullmatch(line)
        if m is None:
            continue
        body = m.group(3).strip()
        if not body or body.startswith("(bad)"):
            continue
        raw = bytes.fromhex(m.group(2).replace(" ", ""))
        out.append(Instruction(int(m.group(1), 16), raw, body))
    return out


def _targets(insn: Instruction, *, immediates: bool) -> list[int]:
    """The code addresses an instruction calls, jumps to or takes (``immediates``: whether
    an immediate may be an address, as in a position-dependent executable)."""
    m = _BRANCH.match(insn.text)
    if m is not None:
        return [int(m.group(2), 16)]
    found = [int(v, 16) for v in _RIPREF.findall(insn.text)]
    if immediates:
        found += [int(v, 16) for v in _IMM.findall(insn.text)]
    return found


def _owner(starts: list[int], ends: list[int], address: int) -> int | None:
    """The index of the function holding ``address``, by bisection."""
    import bisect

    i = bisect.bisect_right(starts, address) - 1
    if i >= 0 and address < ends[i]:
        return i
    return None


def dispatched_functions(functions: list[tuple[int, int]], insns: Iterable[Instruction],
                         roots: Iterable[int], *, immediates: bool = True) -> set[int]:
    """The indexes into ``functions`` ((start, end) ranges, sorted) that are only reached
    through pointers held in data, or only from such functions (the module's rule, step 3).

    ``immediates``: whether an immediate operand may be a code address. Position-independent
    code (shared libraries, PIE) takes addresses RIP-relative only, and there a small
    constant that happens to equal a function's address must not count as a reference."""
    starts = [s for s, _ in functions]
    ends = [e for _, e in functions]
    refs: dict[int, set[int | None]] = {i: set() for i in range(len(functions))}
    for insn in insns:
        src = _owner(starts, ends, insn.address)
        for target in _targets(insn, immediates=immediates):
            dst = _owner(starts, ends, target)
            if dst is not None and dst != src:
                refs[dst].add(src)
    rooted = {i for r in roots if (i := _owner(starts, ends, r)) is not None}
    out = {i for i, by in refs.items() if not by and i not in rooted}
    changed = True
    while changed:
        changed = False
        for i, by in refs.items():
            if i in out or i in rooted or not by:
                continue
            if all(b is not None and b in out for b in by):
                out.add(i)
                changed = True
    return out


def x86_64_level(functions: list[tuple[int, int]], insns: list[Instruction],
                 roots: Iterable[int], *, immediates: bool = True) -> str:
    """The level of the instructions outside dispatched functions: "v1".."v4"."""
    functions = sorted(functions)
    skip = dispatched_functions(functions, insns, roots, immediates=immediates)
    starts = [s for s, _ in functions]
    ends = [e for _, e in functions]
    level = 1
    for insn in insns:
        owner = _owner(starts, ends, insn.address)
        if owner is not None and owner in skip:
            continue
        level = max(level, classify_instruction(insn.raw, insn.text))
    return f"v{level}"


def _disassemble(path: Path) -> list[Instruction]:
    objdump = require_tool("objdump")
    done = run([objdump, "-d", "-w", str(path)], env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"},
               what=f"disassemble {path.name}")
    return parse_objdump(done.stdout)


# --------------------------------------------------------------------------------------------
# reading one file

_ELF_MACHINE = {"EM_X86_64": "x86_64", "EM_AARCH64": "aarch64", "EM_S390": "s390x",
                "EM_386": "i386", "EM_ARM": "arm", "EM_RISCV": "riscv64"}


def _elf_functions(elf: Any) -> list[tuple[int, int]]:
    from elftools.dwarf.callframe import FDE

    symtab = elf.get_section_by_name(".symtab")
    found: set[tuple[int, int]] = set()
    if symtab is not None:
        for sym in symtab.iter_symbols():
            if (sym["st_info"]["type"] == "STT_FUNC" and sym["st_size"] > 0
                    and sym["st_shndx"] != "SHN_UNDEF"):
                found.add((sym["st_value"], sym["st_value"] + sym["st_size"]))
    if not found and elf.get_section_by_name(".eh_frame") is not None:
        dwarf = elf.get_dwarf_info()
        if dwarf.has_EH_CFI():
            for entry in dwarf.EH_CFI_entries():
                if isinstance(entry, FDE):
                    start = entry.header["initial_location"]
                    found.add((start, start + entry.header["address_range"]))
    return _disjoint(found)


def _disjoint(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted ranges with aliases and overlaps dropped (the first of two overlapping wins)."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(set(ranges)):
        if end <= start or (out and start < out[-1][1]):
            continue
        out.append((start, end))
    return out


def _elf_roots(path: Path, elf: Any) -> list[int]:
    import lief

    roots = [int(elf.header["e_entry"])]
    binary = lief.ELF.parse(str(path))
    if binary is not None:
        roots += [int(f.address) for f in binary.exported_functions]
        roots += [int(f.address) for f in binary.ctor_functions]
        roots += [int(f.address) for f in binary.dtor_functions]
    return roots


def _elf_floors(path: Path, rel: str) -> Floors:
    from elftools.elf.elffile import ELFFile
    from elftools.elf.gnuversions import GNUVerNeedSection

    with path.open("rb") as fh:
        elf = ELFFile(fh)
        if elf.header["e_type"] not in ("ET_EXEC", "ET_DYN"):
            return Floors()
        position_dependent = elf.header["e_type"] == "ET_EXEC"
        machine = _ELF_MACHINE.get(elf.header["e_machine"], str(elf.header["e_machine"]))
        glibc: str | None = None
        glibcxx: str | None = None
        for section in elf.iter_sections():
            if not isinstance(section, GNUVerNeedSection):
                continue
            for _, auxes in section.iter_versions():
                for aux in auxes:
                    name = str(aux.name)
                    if (m := _GLIBC.fullmatch(name)) and _higher(glibc, m.group(1)):
                        glibc = m.group(1)
                    if (m := _GLIBCXX.fullmatch(name)) and _higher(glibcxx, m.group(1)):
                        glibcxx = m.group(1)
        android = None
        note = elf.get_section_by_name(".note.android.ident")
        if note is not None:
            android = read_android_note(note.data(), little=elf.little_endian)
        level = None
        if machine == "x86_64":
            functions = _elf_functions(elf)
            roots = _elf_roots(path, elf)
    if machine == "x86_64":
        insns = _disassemble(path)
        level = x86_64_level(functions, insns, roots, immediates=position_dependent)
    found = {"glibc": glibc, "glibcxx": glibcxx, "android_api": android, "x86_64_level": level}
    return Floors(glibc=glibc, glibcxx=glibcxx, android_api=android, x86_64_level=level,
                  where={k: rel for k, v in found.items() if v is not None},
                  machines=(machine,))


def read_android_note(data: bytes, *, little: bool) -> int | None:
    """The API level in a ``.note.android.ident`` section (owner "Android", type 1)."""
    end = "<" if little else ">"
    offset = 0
    while offset + 12 <= len(data):
        namesz, descsz, kind = struct.unpack_from(f"{end}III", data, offset)
        name_at = offset + 12
        desc_at = name_at + (namesz + 3) // 4 * 4
        name = data[name_at:name_at + namesz].rstrip(b"\0")
        if name == b"Android" and kind == 1 and descsz >= 4:
            return int(struct.unpack_from(f"{end}I", data, desc_at)[0])
        offset = desc_at + (descsz + 3) // 4 * 4
    return None


_PE_MACHINE = {0x8664: "x86_64", 0xAA64: "aarch64", 0x14C: "i386", 0x1C4: "arm"}


def _pe_floors(path: Path, rel: str) -> Floors:
    import lief

    lief.logging.disable()
    binary = lief.PE.parse(str(path))
    if binary is None:
        raise VerifyError(f"{rel}: not a PE file LIEF can read")
    opt = binary.optional_header
    windows = f"{int(opt.major_subsystem_version)}.{int(opt.minor_subsystem_version)}"
    machine_code = int(binary.header.machine)
    machine = _PE_MACHINE.get(machine_code, hex(machine_code))
    level = None
    if machine == "x86_64":
        base = int(opt.imagebase)
        functions: list[tuple[int, int]] = []
        pdata = binary.get_section(".pdata")
        if pdata is not None:
            raw = bytes(pdata.content)
            for off in range(0, len(raw) - 11, 12):
                begin, end, _ = struct.unpack_from("<III", raw, off)
                if begin and end > begin:
                    functions.append((base + begin, base + end))
        roots = [base + int(opt.addressof_entrypoint)]
        roots += [base + int(f.address) for f in binary.exported_functions]
        if binary.has_tls and binary.tls is not None:
            roots += [int(cb) for cb in binary.tls.callbacks]
        level = x86_64_level(_disjoint(functions), _disassemble(path), roots)
    where = {"windows": rel} | ({} if level is None else {"x86_64_level": rel})
    return Floors(windows=windows, x86_64_level=level, where=where, machines=(machine,))


def _macho_floors(path: Path, rel: str) -> Floors:
    import lief

    lief.logging.disable()
    fat = lief.MachO.parse(str(path))
    if fat is None:
        raise VerifyError(f"{rel}: not a Mach-O file LIEF can read")
    macos: str | None = None
    machines = []
    for i in range(fat.size):
        binary = fat.at(i)
        if binary is None or int(binary.header.file_type) not in (2, 6, 8):  # EXECUTE, DYLIB,
            continue                                                          # BUNDLE
        facts = macho_facts(binary)
        machines.append({"arm64": "aarch64"}.get(facts.arch, facts.arch))
        if facts.minos is not None:
            major, minor, patch = facts.minos
            text = f"{major}.{minor}" + (f".{patch}" if patch else "")
            if _higher(macos, text):
                macos = text
    return Floors(macos=macos, where={"macos": rel} if macos else {},
                  machines=tuple(sorted(set(machines))))


_MACHO_MAGIC = {b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"\xfe\xed\xfa\xcf",
                b"\xfe\xed\xfa\xce", b"\xca\xfe\xba\xbe"}


def measure_file(path: Path, rel: str) -> Floors:
    """The floors of one file (``rel``: its name in messages); empty for anything that is not
    an executable or shared library."""
    if path.is_symlink() or not path.is_file():
        return Floors()
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic == b"\x7fELF":
        return _elf_floors(path, rel)
    if magic[:2] == b"MZ":
        return _pe_floors(path, rel)
    if magic in _MACHO_MAGIC:
        return _macho_floors(path, rel)
    return Floors()


def measure_tree(root: Path) -> Floors:
    """The floors of every executable and shared library under ``root`` (an unpacked
    archive's top directory): the maximum over them, with paths in ``where`` relative to
    ``root`` ("bin/demo-cli")."""
    floors = Floors()
    for path in sorted(root.rglob("*")):
        floors = floors.merge(measure_file(path, path.relative_to(root).as_posix()))
    return floors


def measure_archive(path: Path) -> Floors:
    """The floors of a release archive (.tar.gz or .zip), unpacked with the installer's
    checks (``kiln.files.safe_unpack``) into a temporary directory; paths in ``where`` start
    below the archive's top directory."""
    tmp = Path(tempfile.mkdtemp(prefix="kiln-floors-"))
    try:
        try:
            safe_unpack(path, tmp, max_bytes=MAX_UNPACKED)
        except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError,
                ValueError) as exc:
            raise IntegrityError(f"{path}: cannot be read as a .tar.gz or .zip to measure "
                                 f"its floors: {exc}",
                                 hint="the archive is damaged, or not one kiln made") from exc
        entries = list(tmp.iterdir())
        # kiln's archives hold one top directory named after the asset: paths start below it
        top = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
        return measure_tree(top)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# promises and changes


def windows_nt_version(min_os: str) -> str:
    """The NT version (as a PE subsystem version names it) of a Windows release the matrix
    names: "10" -> "10.0", "7" -> "6.1"; an NT version passes through."""
    return _WINDOWS_NT.get(min_os.lower(), min_os)


def _who(floors: Floors, name: str) -> str:
    return floors.where.get(name, "the asset")


def check_promise(floors: Floors, req: Requirements) -> list[str]:
    """One sentence per measured floor above what ``req`` promises; empty when all hold.

    libstdc++ (``glibcxx``) is measured but not checked: the matrix promises nothing about it.
    """
    out = []
    if floors.glibc is not None:
        if req.libc != "glibc":
            out.append(f"{_who(floors, 'glibc')} needs GLIBC_{floors.glibc} but the matrix "
                       f"promises {req.floor}")
        elif req.libc_floor is not None and _higher(req.libc_floor, floors.glibc):
            out.append(f"{_who(floors, 'glibc')} needs GLIBC_{floors.glibc} but the matrix "
                       f"promises glibc {req.libc_floor}")
    if floors.macos is not None and req.os == "macos" and req.min_os is not None \
            and _higher(req.min_os, floors.macos):
        out.append(f"{_who(floors, 'macos')} needs macOS {floors.macos} but the matrix "
                   f"promises macOS {req.min_os}")
    if floors.windows is not None and req.os == "windows" and req.min_os is not None:
        promised = windows_nt_version(req.min_os)
        if _higher(promised, floors.windows):
            out.append(f"{_who(floors, 'windows')} needs Windows NT {floors.windows} (PE "
                       f"subsystem version) but the matrix promises Windows {req.min_os} "
                       f"(NT {promised})")
    if floors.android_api is not None and req.os == "android" and req.min_os is not None \
            and req.min_os.isdigit() and floors.android_api > int(req.min_os):
        out.append(f"{_who(floors, 'android_api')} needs Android API {floors.android_api} but "
                   f"the matrix promises Android API {req.min_os}")
    if floors.x86_64_level is not None and req.arch == "x86_64":
        promised_level = _X86_BASELINE.get(req.cpu_baseline)
        if promised_level is not None and floors.x86_64_level > promised_level:
            out.append(f"{_who(floors, 'x86_64_level')} runs x86-64-{floors.x86_64_level} "
                       f"instructions outside run-time dispatch but the matrix promises "
                       f"{req.cpu_baseline}")
    arch = {"arm64": "aarch64"}.get(req.arch, req.arch)
    for machine in floors.machines:
        if machine != arch:
            out.append(f"the asset holds {machine} code but the matrix promises {req.arch}")
    return out


_NAMES = {"glibc": "glibc floor", "glibcxx": "libstdc++ (GLIBCXX) floor", "macos": "macOS floor",
          "windows": "Windows subsystem version", "x86_64_level": "x86-64 level",
          "android_api": "Android API level"}


def describe_changes(old: Floors, new: Floors) -> list[str]:
    """Release-note sentences for the floors that changed between two releases of an asset."""
    out = []
    for name in FLOOR_FIELDS:
        a, b = getattr(old, name), getattr(new, name)
        if a == b:
            continue
        label = _NAMES[name]
        if a is None:
            out.append(f"{label} is now {b} (none before)")
        elif b is None:
            out.append(f"{label} {a} is gone (none now)")
        else:
            verb = "rose" if _higher(str(a).lstrip("v"), str(b).lstrip("v")) else "fell"
            out.append(f"{label} {verb} from {a} to {b}")
    return out

