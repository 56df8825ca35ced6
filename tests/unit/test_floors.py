"""Compatibility floors (kiln/verify/floors.py) without starting programs: the JSON form, the
instruction classes, the dispatch rule on objdump text, the ELF readers on ELF files written
here byte by byte, the promise check and the release-note sentences. Real binaries compiled
with zig are measured in tests/integration/test_floors_oldroot.py."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from elf_stub import elf_with_versions

from kiln.errors import IntegrityError
from kiln.matrix.model import Requirements
from kiln.verify.floors import (
    Floors,
    check_promise,
    classify_instruction,
    describe_changes,
    measure_file,
    measure_tree,
    parse_objdump,
    read_android_note,
    windows_nt_version,
    x86_64_level,
)

# --------------------------------------------------------------------------------------------
# JSON


def test_json_round_trip() -> None:
    floors = Floors(glibc="2.17", glibcxx="3.4.21", macos=None, windows="6.0",
                    x86_64_level="v2", android_api=24,
                    where={"glibc": "bin/ember-cli"}, machines=("x86_64",))
    again = Floors.from_json(floors.to_json())
    assert again == floors
    assert again.where == {"glibc": "bin/ember-cli"}
    assert again.machines == ("x86_64",)


@pytest.mark.parametrize(("key", "value"), [
    ("glibc", 2.17), ("glibc", "2.17abc"), ("glibcxx", 3), ("macos", ["11"]),
    ("windows", True), ("x86_64_level", "v5"), ("x86_64_level", 3),
    ("android_api", "24"), ("android_api", True), ("android_api", 0),
    ("where", {"glibc": 1}), ("where", {"nonsense": "bin/x"}), ("machines", "x86_64"),
])
def test_from_json_refuses_wrong_types_naming_the_field(key: str, value: object) -> None:
    data = Floors().to_json()
    data[key] = value
    with pytest.raises(IntegrityError, match=key):
        Floors.from_json(data)


def test_from_json_refuses_unknown_keys_and_non_objects() -> None:
    with pytest.raises(IntegrityError, match="surprise"):
        Floors.from_json({**Floors().to_json(), "surprise": 1})
    with pytest.raises(IntegrityError, match="object"):
        Floors.from_json(["2.17"])


def test_merge_keeps_the_higher_floor_and_who_set_it() -> None:
    a = Floors(glibc="2.17", x86_64_level="v1", where={"glibc": "bin/a", "x86_64_level": "bin/a"},
               machines=("x86_64",))
    b = Floors(glibc="2.3.4", x86_64_level="v3", where={"glibc": "lib/b",
                                                         "x86_64_level": "lib/b"})
    m = a.merge(b)
    assert (m.glibc, m.x86_64_level) == ("2.17", "v3")  # 2.17 > 2.3.4: numbers, not text
    assert m.where == {"glibc": "bin/a", "x86_64_level": "lib/b"}
    assert m.machines == ("x86_64",)


# --------------------------------------------------------------------------------------------
# instruction classes

@pytest.mark.parametrize(("raw", "text", "level"), [
    ("55", "push   %rbp", 1),
    ("f3 0f 58 c1", "addss  %xmm1,%xmm0", 1),                         # SSE
    ("66 0f fe c1", "paddd  %xmm1,%xmm0", 1),                         # SSE2
    ("f3 0f bc c7", "tzcnt  %edi,%eax", 1),                           # runs as BSF everywhere
    ("0f 01 d0", "xgetbv", 1),                                        # the probe, after CPUID
    ("f2 0f 7c c1", "haddps %xmm1,%xmm0", 2),                         # SSE3
    ("66 0f 38 00 c1", "pshufb %xmm1,%xmm0", 2),                      # SSSE3
    ("66 0f 38 40 c1", "pmulld %xmm1,%xmm0", 2),                      # SSE4.1
    ("66 0f 3a 15 07 01", "pextrw $0x1,%xmm0,(%rdi)", 2),             # SSE4.1 memory form
    ("66 0f c5 c0 01", "pextrw $0x1,%xmm0,%eax", 1),                  # SSE2 register form
    ("f2 0f 38 f1 c7", "crc32l %edi,%eax", 2),                        # SSE4.2
    ("f3 0f b8 c7", "popcnt %edi,%eax", 2),
    ("f0 48 0f c7 0f", "lock cmpxchg16b (%rdi)", 2),
    ("9f", "lahf", 2),
    ("f3 0f bd c7", "lzcnt  %edi,%eax", 3),
    ("0f 38 f0 07", "movbe  (%rdi),%eax", 3),
    ("c5 fc 58 c1", "vaddps %ymm1,%ymm0,%ymm0", 3),                   # AVX (VEX2)
    ("c4 e2 7d 58 c0", "vpbroadcastd %xmm0,%ymm0", 3),                # AVX2 (VEX3)
    ("c4 e2 f1 a8 c2", "vfmadd213pd %xmm2,%xmm1,%xmm0", 3),           # FMA
    ("c4 e2 40 f2 c2", "andn   %edx,%edi,%eax", 3),                   # BMI1, VEX without 'v'
    ("c5 f8 77", "vzeroupper", 3),
    ("62 f1 7c 48 58 c1", "vaddps %zmm1,%zmm0,%zmm0", 4),             # EVEX
    ("c5 f8 92 c8", "kmovw  %eax,%k1", 4),                            # VEX opmask: AVX-512
])
def test_each_instruction_gets_the_level_that_introduced_it(raw: str, text: str,
                                                            level: int) -> None:
    assert classify_instruction(bytes.fromhex(raw.replace(" ", "")), text) == level


# --------------------------------------------------------------------------------------------
# the dispatch rule, on objdump text

# main calls helper directly and takes dispatch's address; kern_avx2 is referenced from
# nowhere in code (its pointer lives in a data table) and calls leaf_avx2, which nothing
# else calls.
OBJDUMP = """
a.out:     file format elf64-x86-64

Disassembly of section .text:

0000000000001000 <.text>:
    1000:\t55                   \tpush   %rbp
    1001:\te8 0a 00 00 00       \tcall   1010 <.text+0x10>
    1006:\t48 8d 3d 13 00 00 00 \tlea    0x13(%rip),%rdi        # 1020 <.text+0x20>
    100d:\t{MAIN}\t{MAIN_TEXT}
    1010:\t{HELPER}\t{HELPER_TEXT}
    1014:\tc3                   \tret
    1020:\t53                   \tpush   %rbx
    1021:\tc3                   \tret
    1030:\tc5 fc 58 c1          \tvaddps %ymm1,%ymm0,%ymm0
    1034:\te8 07 00 00 00       \tcall   1040 <.text+0x40>
    1039:\tc3                   \tret
    1040:\t62 f1 7c 48 58 c1    \tvaddps %zmm1,%zmm0,%zmm0
    1046:\tc3                   \tret
"""
FUNCTIONS = [(0x1000, 0x1010), (0x1010, 0x1015), (0x1020, 0x1022), (0x1030, 0x103A),
             (0x1040, 0x1047)]
NOP = ("90 90 90", "nop")


def _objdump(main: tuple[str, str] = NOP, helper: tuple[str, str] = ("90 90 90 90", "nop")
             ) -> str:
    return (OBJDUMP.replace("{MAIN}", main[0]).replace("{MAIN_TEXT}", main[1])
            .replace("{HELPER}", helper[0]).replace("{HELPER_TEXT}", helper[1]))


def test_dispatched_kernels_do_not_raise_the_level() -> None:
    insns = parse_objdump(_objdump())
    assert len(insns) == 13
    assert x86_64_level(FUNCTIONS, insns, roots=[0x1000]) == "v1"


def test_a_kernel_called_directly_counts() -> None:
    # main calls the AVX2 kernel itself: no CPU check guards that call
    text = _objdump().replace("1001:\te8 0a 00 00 00       \tcall   1010 <.text+0x10>",
                              "1001:\te8 2a 00 00 00       \tcall   1030 <.text+0x30>")
    assert x86_64_level(FUNCTIONS, parse_objdump(text), roots=[0x1000]) == "v4"


def test_an_exported_kernel_counts() -> None:
    assert x86_64_level(FUNCTIONS, parse_objdump(_objdump()), roots=[0x1000, 0x1030]) == "v4"


def test_code_outside_dispatch_counts() -> None:
    avx2 = ("c4 e2 7d 58 c0", "vpbroadcastd %xmm0,%ymm0")
    popcnt = ("f3 0f b8 c7", "popcnt %edi,%eax")
    assert x86_64_level(FUNCTIONS, parse_objdump(_objdump(main=avx2)), [0x1000]) == "v3"
    # helper is reached by a direct call from main
    assert x86_64_level(FUNCTIONS, parse_objdump(_objdump(helper=popcnt)), [0x1000]) == "v2"


def test_a_function_whose_address_code_takes_counts() -> None:
    # 0x1020 is only lea'd by main (a callback, like main handed to __libc_start_main)
    text = _objdump().replace("1020:\t53                   \tpush   %rbx",
                              "1020:\tc5 fc 58 c1          \tvaddps %ymm1,%ymm0,%ymm0")
    assert x86_64_level(FUNCTIONS, parse_objdump(text), roots=[0x1000]) == "v3"


# --------------------------------------------------------------------------------------------
# ELF readers, on ELF files made here (aarch64: no disassembly needed)

def test_glibc_and_glibcxx_floors_are_the_highest_needed(tmp_path: Path) -> None:
    path = tmp_path / "lib.so"
    path.write_bytes(elf_with_versions({"libc.so.6": ["GLIBC_2.17", "GLIBC_2.34", "GLIBC_2.2.5",
                                         "GLIBC_PRIVATE"],
                           "libstdc++.so.6": ["GLIBCXX_3.4.21", "GLIBCXX_3.4.9", "CXXABI_1.3"]}))
    floors = measure_file(path, "lib/lib.so")
    assert (floors.glibc, floors.glibcxx, floors.android_api) == ("2.34", "3.4.21", None)
    assert floors.where == {"glibc": "lib/lib.so", "glibcxx": "lib/lib.so"}
    assert floors.machines == ("aarch64",)
    assert floors.x86_64_level is None


def test_android_note_gives_the_api_level(tmp_path: Path) -> None:
    path = tmp_path / "ember-cli"
    path.write_bytes(elf_with_versions({"libc.so": ["LIBC"]}, android=29))
    assert measure_file(path, "bin/ember-cli").android_api == 29
    assert read_android_note(struct.pack("<III", 8, 4, 1) + b"Android\0"
                             + struct.pack("<I", 21), little=True) == 21
    assert read_android_note(struct.pack("<III", 4, 4, 1) + b"GNU\0" + b"\0" * 4,
                             little=True) is None


def test_tree_takes_the_maximum_and_skips_what_is_no_binary(tmp_path: Path) -> None:
    top = tmp_path / "ember-b1-bin-ubuntu-arm64"
    (top / "bin").mkdir(parents=True)
    (top / "lib").mkdir()
    (top / "bin" / "ember-cli").write_bytes(elf_with_versions({"libc.so.6": ["GLIBC_2.17"]}))
    (top / "lib" / "libember.so.0").write_bytes(elf_with_versions({"libc.so.6": ["GLIBC_2.28"]}))
    (top / "lib" / "libember.so").symlink_to("libember.so.0")
    (top / "lib" / "ember.o").write_bytes(
        elf_with_versions({"libc.so.6": ["GLIBC_2.39"]}, e_type=1))
    (top / "LICENSE").write_text("MIT\n")
    floors = measure_tree(top)
    assert floors.glibc == "2.28"
    assert floors.where["glibc"] == "lib/libember.so.0"


# --------------------------------------------------------------------------------------------
# promises

def _req(**kw: object) -> Requirements:
    base: dict[str, object] = dict(
        os="linux", arch="x86_64", backend="cpu", backend_version=None, libc="glibc",
        libc_floor="2.17", min_os=None, cpu_baseline="x86-64", cpu_dispatch=(),
        gpu_targets=(), min_driver=None)
    base.update(kw)
    return Requirements(**base)  # type: ignore[arg-type]


def test_promises_that_hold_give_no_sentence() -> None:
    floors = Floors(glibc="2.17", x86_64_level="v1", machines=("x86_64",))
    assert check_promise(floors, _req()) == []
    assert check_promise(Floors(glibc="2.28", x86_64_level="v2"),
                         _req(libc_floor="2.28", cpu_baseline="x86-64-v2")) == []


def test_each_floor_above_the_promise_is_one_sentence() -> None:
    floors = Floors(glibc="2.34", x86_64_level="v3",
                    where={"glibc": "bin/ember-cli", "x86_64_level": "lib/libember.so.0"})
    problems = check_promise(floors, _req())
    assert problems == [
        "bin/ember-cli needs GLIBC_2.34 but the matrix promises glibc 2.17",
        "lib/libember.so.0 runs x86-64-v3 instructions outside run-time dispatch but the "
        "matrix promises x86-64"]
    assert check_promise(Floors(glibc="2.17"), _req(libc="musl", libc_floor=None)) == [
        "the asset needs GLIBC_2.17 but the matrix promises musl (static)"]


def test_macos_windows_android_and_machine_promises() -> None:
    mac = _req(os="macos", arch="aarch64", libc="system", libc_floor=None, min_os="11.0",
               cpu_baseline="apple-m1")
    assert check_promise(Floors(macos="11.0", machines=("aarch64",)), mac) == []
    assert check_promise(Floors(macos="13.0", where={"macos": "bin/ember-cli"}), mac) == [
        "bin/ember-cli needs macOS 13.0 but the matrix promises macOS 11.0"]
    win = _req(os="windows", libc="msvcrt", libc_floor=None, min_os="10")
    assert check_promise(Floors(windows="6.0"), win) == []
    assert check_promise(Floors(windows="10.0"), win) == []
    assert windows_nt_version("7") == "6.1"
    assert check_promise(Floors(windows="6.2"), _req(os="windows", min_os="7")) == [
        "the asset needs Windows NT 6.2 (PE subsystem version) but the matrix promises "
        "Windows 7 (NT 6.1)"]
    android = _req(os="android", arch="aarch64", libc="musl", libc_floor=None, min_os="24")
    assert check_promise(Floors(android_api=24), android) == []
    assert len(check_promise(Floors(android_api=26), android)) == 1
    assert check_promise(Floors(machines=("aarch64",)), _req()) == [
        "the asset holds aarch64 code but the matrix promises x86_64"]


def test_release_note_sentences() -> None:
    old = Floors(glibc="2.17", x86_64_level="v2", macos="11.0")
    new = Floors(glibc="2.28", x86_64_level="v1", windows="6.0")
    assert describe_changes(old, new) == [
        "glibc floor rose from 2.17 to 2.28",
        "macOS floor 11.0 is gone (none now)",
        "Windows subsystem version is now 6.0 (none before)",
        "x86-64 level fell from v2 to v1"]
    assert describe_changes(old, old) == []


def test_immediates_are_addresses_only_in_position_dependent_code() -> None:
    # main loads the constant 0x1030, which is also the AVX2 kernel's address
    text = _objdump(main=("b8 30 10 00", "mov    $0x1030,%eax"))
    insns = parse_objdump(text)
    assert x86_64_level(FUNCTIONS, insns, roots=[0x1000], immediates=True) == "v4"
    assert x86_64_level(FUNCTIONS, insns, roots=[0x1000], immediates=False) == "v1"
