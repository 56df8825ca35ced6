"""kiln.package.macho: the one Mach-O reader (LIEF) of the wheel check and the build's binary
inspection, on Mach-O files written here byte by byte."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from ember_project import EMBER

from kiln.errors import VerifyError
from kiln.package.macho import read_macho
from kiln.package.wheel import check_macos, wheel_target
from kiln.verify.inspect import read_facts

LC_ID_DYLIB = 0xD
LC_LOAD_DYLIB = 0xC
LC_LOAD_WEAK_DYLIB = 0x80000018
LC_LOAD_UPWARD_DYLIB = 0x80000023
LC_VERSION_MIN_MACOSX = 0x24
ARM64, X86_64 = 0x0100000C, 0x01000007


def dylib(cmd: int, name: str) -> bytes:
    raw = name.encode() + b"\0"
    size = (24 + len(raw) + 7) // 8 * 8
    return struct.pack("<6I", cmd, size, 24, 2, 0x10000, 0x10000) + raw.ljust(size - 24, b"\0")


def macho(cpu: int, *commands: bytes) -> bytes:
    cmds = b"".join(commands)
    return struct.pack("<8I", 0xFEEDFACF, cpu, 0, 6, len(commands), len(cmds), 0, 0) + cmds


def version_min(v: tuple[int, int, int]) -> bytes:
    return struct.pack("<4I", LC_VERSION_MIN_MACOSX, 16, (v[0] << 16) | (v[1] << 8) | v[2], 0)


LIB = macho(X86_64, dylib(LC_ID_DYLIB, "@rpath/libember.dylib"), version_min((10, 15, 0)),
            dylib(LC_LOAD_DYLIB, "/usr/lib/libSystem.B.dylib"),
            dylib(LC_LOAD_WEAK_DYLIB, "/usr/lib/libc++.1.dylib"),
            dylib(LC_LOAD_UPWARD_DYLIB, "/opt/homebrew/lib/libomp.dylib"))


def test_the_dylibs_loaded_not_the_files_own_name() -> None:
    facts = read_macho(LIB)
    assert facts.arch == "x86_64"
    assert facts.minos == (10, 15, 0)  # LC_VERSION_MIN_MACOSX when there is no LC_BUILD_VERSION
    assert facts.dylibs == ("/usr/lib/libSystem.B.dylib", "/usr/lib/libc++.1.dylib",
                            "/opt/homebrew/lib/libomp.dylib")


def test_the_wheel_check_sees_an_upward_dylib_outside_macos() -> None:
    from kiln.matrix import load_matrix
    from kiln.package.wheel import WheelFile

    repo = Path(__file__).resolve().parents[2]
    target = wheel_target(load_matrix(repo / "matrix").get("macos-x64"), EMBER)
    assert target is not None
    check = check_macos([WheelFile(name="ember/lib/libember.0.dylib", data=LIB,
                                   executable=True)], target)
    assert not check.ok and "/opt/homebrew/lib/libomp.dylib" in check.detail


def test_inspect_reads_the_same_facts(tmp_path: Path) -> None:
    path = tmp_path / "libember.dylib"
    path.write_bytes(LIB)
    facts = read_facts(path, "lib/libember.dylib")
    assert facts is not None and facts.format == "MachO"
    assert facts.machine == "x86_64" and facts.macos_minos == "10.15.0"
    assert facts.libraries == read_macho(LIB).dylibs
    path.write_bytes(macho(ARM64, version_min((11, 0, 0))))
    arm = read_facts(path, "lib/libember.dylib")
    assert arm is not None and arm.machine == "aarch64"


@pytest.mark.parametrize("data", [b"", b"\x7fELF" + b"\0" * 60, b"\xca\xfe\xba\xbe" + b"\0" * 4])
def test_anything_but_a_thin_macho_is_refused(data: bytes) -> None:
    with pytest.raises(VerifyError, match="not a thin Mach-O file"):
        read_macho(data)
