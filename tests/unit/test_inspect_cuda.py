"""The CUDA checks of kiln/verify/inspect.py on facts and synthetic device code: the exact
SM list, device code embedded once, the driver opened at run time, no CUDA runtime linked."""

from __future__ import annotations

import struct
from pathlib import Path

from kiln.build.toolchains import cuda_device as cd
from kiln.matrix import Entry, load_matrix
from kiln.verify.base import Check
from kiln.verify.inspect import (
    BinaryFacts,
    check_cuda_device_code,
    check_gpu_runtime_links,
    summarize,
)


def entry(repo_root: Path, entry_id: str) -> Entry:
    return load_matrix(repo_root / "matrix").get(entry_id)


def cubin(sm: int) -> bytes:
    ident = b"\x7fELF" + bytes([2, 1, 1, 0x33, 8]) + bytes(7)
    return ident + struct.pack("<HHIQQQIHHHHHH", 2, cd.EM_CUDA, 1, 0, 64, 0, sm << 8,
                               64, 56, 0, 64, 0, 0)


def ptx(sm: int) -> bytes:
    return f"//\n\n.version 9.0\n.target sm_{sm}\n.address_size 64\n".encode() + b"\0"


def library(sms: list[int], ptx_sms: list[int]) -> bytes:
    """A host binary's bytes with device images embedded in its data, as ember's are."""
    return (b"\x7fELF" + bytes(60) + b"code" + b"".join(cubin(s) for s in sms)
            + b"".join(ptx(s) for s in ptx_sms) + b"libcuda.so.1\0")


SMS_133 = [75, 80, 86, 89, 90, 100, 120]


def scanned(**files: bytes) -> list[tuple[str, cd.DeviceCode]]:
    return [(rel.replace("__", "/"), cd.scan_device_code(data)) for rel, data in files.items()]


def test_exact_sm_list_passes_and_names_the_file(repo_root: Path) -> None:
    e = entry(repo_root, "ubuntu-cuda-13.3-x64")
    checks = check_cuda_device_code(
        scanned(lib__libember_so=library(SMS_133, [120]), bin__ember_cli=b"\x7fELF" + bytes(60)),
        e, driver_named=["lib/libember_so"])
    assert [c.ok for c in checks] == [True, True]
    assert checks[0].name == "lib/libember_so: cuda device code"
    assert "cubins sm_75..sm_120 (7) + PTX compute_120" in checks[0].detail
    assert "opens libcuda.so.1" in checks[1].detail


def test_a_missing_extra_or_duplicated_sm_fails(repo_root: Path) -> None:
    e = entry(repo_root, "ubuntu-cuda-13.3-x64")
    for sms, ptxs, want in (
            ([75, 80, 86, 89, 90, 100], [120], "!= matrix"),            # sm_120 missing
            ([*SMS_133, 121], [120], "'sm_121'"),                         # one too many
            ([*SMS_133, 90], [120], "'sm_90', 'sm_90'"),                  # twice
            (SMS_133, [], "embedded PTX [] != matrix ['compute_120']"),   # no PTX
            (SMS_133, [90], "compute_90")):                               # wrong PTX
        checks = check_cuda_device_code(scanned(lib__x=library(sms, ptxs)), e, ["lib/x"])
        bad = [c for c in checks if not c.ok]
        assert len(bad) == 1 and want in bad[0].detail, (sms, ptxs, bad)


def test_12_4_keeps_the_old_architectures(repo_root: Path) -> None:
    e = entry(repo_root, "win-cuda-12.4-x64")
    sms = [50, 52, 60, 61, 70, 75, 80, 86, 89, 90]
    ok = check_cuda_device_code(scanned(bin__ember_dll=library(sms, [90])), e, ["bin/ember_dll"])
    assert all(c.ok for c in ok)
    # a 13.3 build's device code in a 12.4 archive is caught
    wrong = check_cuda_device_code(scanned(bin__ember_dll=library(SMS_133, [120])), e,
                                   ["bin/ember_dll"])
    assert not wrong[0].ok and "sm_50" in wrong[0].detail


def test_no_device_code_or_twice_or_no_driver_fails(repo_root: Path) -> None:
    e = entry(repo_root, "win-cuda-13.3-x64")
    none = check_cuda_device_code(scanned(bin__ember_dll=b"\x7fELF" + bytes(60)), e, [],
                                  device_code="src/k.cu (DEMO_CUDA_BLOBS unset?)")
    assert [c.ok for c in none] == [False] and none[0].detail.endswith(
        "the build did not embed src/k.cu (DEMO_CUDA_BLOBS unset?)")
    lib = library(SMS_133, [120])
    twice = check_cuda_device_code(scanned(bin__ember_dll=lib, bin__ember_cli_exe=lib), e,
                                   ["bin/ember_dll", "bin/ember_cli_exe"])
    assert [c.name for c in twice if not c.ok] == ["cuda device code"]
    no_driver = check_cuda_device_code(scanned(bin__ember_dll=lib), e, [])
    assert [c.detail for c in no_driver if not c.ok] == [
        "nvcuda.dll is named in no binary that carries device code"]


def facts(path: str, libraries: tuple[str, ...]) -> BinaryFacts:
    return BinaryFacts(path=path, format="PE", machine="x86_64", big_endian=False,
                       libraries=libraries)


def test_cuda_runtime_at_link_time_fails(repo_root: Path) -> None:
    win = entry(repo_root, "win-cuda-12.4-x64")
    good = check_gpu_runtime_links(facts("bin/ember.dll", ("KERNEL32.dll", "msvcrt.dll")), win)
    assert good is not None and good.ok
    for lib in ("cudart64_12.dll", "nvcuda.dll", "NVRTC64_120_0.dll"):
        bad = check_gpu_runtime_links(facts("bin/ember.dll", ("KERNEL32.dll", lib)), win)
        assert bad is not None and not bad.ok and lib in bad.detail
    linux = entry(repo_root, "ubuntu-cuda-13.3-x64")
    for lib in ("libcudart.so.13", "libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libcuda.so"):
        bad = check_gpu_runtime_links(facts("lib/libember.so.0", ("libc.so.6", lib)), linux)
        assert bad is not None and not bad.ok
    assert check_gpu_runtime_links(facts("bin/x", ("libcuda.so.1",)),
                                   entry(repo_root, "ubuntu-x64")) is None


def test_summary_carries_the_evidence(repo_root: Path) -> None:
    e = entry(repo_root, "win-cuda-13.3-x64")
    checks = [Check(name="bin/ember.dll: format", ok=True, detail="PE x86_64"),
              Check(name="bin/ember.dll: libraries", ok=True,
                    detail="needs KERNEL32.dll, msvcrt.dll"),
              Check(name="bin/ember-cli.exe: libraries", ok=True,
                    detail="needs ember.dll, KERNEL32.dll, api-ms-win-crt-heap-l1-1-0.dll, "
                           "api-ms-win-crt-math-l1-1-0.dll"),
              *check_cuda_device_code(scanned(bin__ember_dll=library(SMS_133, [120])), e,
                                      ["bin/ember_dll"])]
    text = summarize(checks, e).detail
    assert "bin/ember_dll: cuda: cubins sm_75..sm_120 (7) + PTX compute_120" in text
    assert "opens nvcuda.dll at run time" in text
    assert text.endswith("links only api-ms-win-crt-*.dll (2), ember.dll, KERNEL32.dll, "
                         "msvcrt.dll")
