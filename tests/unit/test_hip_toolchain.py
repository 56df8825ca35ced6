"""kiln/build/toolchains/hip.py without ROCm: finding hipcc, reading its version, listing the code
objects of an offload bundle, the emitted C table, and inspect's HIP checks."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from kiln.build.toolchains import hip
from kiln.errors import ToolMissing
from kiln.matrix import load_matrix
from kiln.verify.inspect import check_hip_device_code


def bundle(*gfx: str, host: bool = True) -> bytes:
    """A clang offload bundle as hipcc --genco writes it (code objects as dummy bytes)."""
    ids = ([b"host-x86_64-unknown-linux"] if host else []) + [
        f"hipv4-amdgcn-amd-amdhsa--{g}".encode() for g in gfx]
    header = len(hip.BUNDLE_MAGIC) + 8 + sum(24 + len(i) for i in ids)
    out, body, off = hip.BUNDLE_MAGIC + struct.pack("<Q", len(ids)), b"", header
    for i in ids:
        code = b"" if i.startswith(b"host") else b"\x7fELF" + i[-8:] + bytes(20)
        out += struct.pack("<QQQ", off, len(code), len(i)) + i
        body += code
        off += len(code)
    return out + body


TARGETS = ("gfx1030", "gfx1100", "gfx1101", "gfx1102", "gfx1200", "gfx1201")


def test_version_line_is_parsed() -> None:
    assert hip.parse_hip_version("HIP version: 7.2.26015-abc\nAMD clang version 20") == "7.2.26015"
    assert hip.parse_hip_version("HIP version: 5.2.21153-0\n") == "5.2.21153"
    assert hip.parse_hip_version("clang version 15\n") is None


def test_find_hipcc_prefers_rocm_path_then_hip_path_then_path(tmp_path: Path) -> None:
    for d in ("rocm/bin", "sdk/bin", "path"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "path" / "hipcc").write_text("#!/bin/sh\n")
    (tmp_path / "path" / "hipcc").chmod(0o755)
    env = {"PATH": str(tmp_path / "path")}
    assert hip.find_hipcc(env) == tmp_path / "path" / "hipcc"
    (tmp_path / "sdk" / "bin" / "hipcc.exe").write_text("")
    assert hip.find_hipcc({**env, "HIP_PATH": str(tmp_path / "sdk")}, "windows") == \
        tmp_path / "sdk" / "bin" / "hipcc.exe"
    (tmp_path / "rocm" / "bin" / "hipcc").write_text("")
    assert hip.find_hipcc({**env, "ROCM_PATH": str(tmp_path / "rocm"),
                           "HIP_PATH": str(tmp_path / "sdk")}) == tmp_path / "rocm/bin/hipcc"
    with pytest.raises(ToolMissing) as err:
        hip.find_hipcc({"PATH": str(tmp_path / "nothing")}, "windows")
    assert "HIP SDK 7.2" in (err.value.hint or "")


def test_scan_lists_the_code_objects() -> None:
    lib = b"\x7fELF" + bytes(100) + bundle(*TARGETS) + b"amdhip64_7.dll\0"
    found = hip.scan_bundles(lib)
    assert found.bundles == 1 and found.compressed == 0
    assert found.gfx == tuple(sorted(TARGETS))
    assert hip.check_gfx_targets(found, TARGETS) == []


def test_check_names_missing_extra_twice_and_compressed() -> None:
    missing = hip.check_gfx_targets(hip.scan_bundles(bundle(*TARGETS[:-1])), TARGETS)
    assert missing == [f"embedded code objects {sorted(TARGETS[:-1])} != matrix "
                       f"{sorted(TARGETS)}"]
    twice = hip.check_gfx_targets(hip.scan_bundles(bundle(*TARGETS) + bundle(*TARGETS)),
                                  TARGETS)
    assert "2 offload bundles, expected exactly 1" in twice
    packed = hip.check_gfx_targets(hip.scan_bundles(b"CCOB\x02\x00\x01\x00" + bytes(40)),
                                   TARGETS)
    assert any("--offload-compress" in p for p in packed)


def test_emit_c_table(tmp_path: Path) -> None:
    out = tmp_path / "ember_hip_blobs.c"
    data = bundle("gfx1030")
    hip.emit_c(data, ["gfx1030"], out, toolchain="hipcc 7.2.26015")
    text = out.read_text()
    assert f"static const unsigned char bundle[{len(data)}]" in text
    assert '{"gfx1030", 0, 2, bundle, sizeof bundle},' in text
    assert "const int em_hip_n_blobs = 1;" in text


def test_inspect_hip_checks(repo_root: Path) -> None:
    e = load_matrix(repo_root / "matrix").get("win-hip-radeon-x64")
    good = check_hip_device_code([("bin/ember.dll", hip.scan_bundles(bundle(*TARGETS))),
                                  ("bin/ember-cli.exe", hip.scan_bundles(b"MZ"))], e,
                                 ["bin/ember.dll"])
    assert [c.ok for c in good] == [True, True]
    assert "opens amdhip64 at run time" in good[1].detail
    # the Linux entry's CDNA targets are not in the Windows entry's list
    cdna = check_hip_device_code([("bin/ember.dll",
                                   hip.scan_bundles(bundle("gfx90a", *TARGETS)))], e,
                                 ["bin/ember.dll"])
    assert not cdna[0].ok and "gfx90a" in cdna[0].detail
    none = check_hip_device_code([("bin/ember.dll", hip.scan_bundles(b"MZ"))], e, [])
    assert [c.ok for c in none] == [False]
