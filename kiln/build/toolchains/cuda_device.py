"""CUDA device code, compiled ahead of time on the build host and embedded in the library.

The CUDA backends kiln builds load their kernels through the driver API (``cuModuleLoadData``)
from blobs compiled into the library, so an archive needs no CUDA runtime and no toolkit on the
user's machine. This module makes those blobs and the C source that embeds them:

- CUDA 13.3: the pinned ``nvcc`` wheel, ``nvcc -cubin -arch=sm_XX`` per architecture and
  ``nvcc -ptx -arch=compute_XX`` for the PTX entry (the newest: the driver JIT-compiles it
  for GPUs newer than every cubin);
- CUDA 12.4: NVRTC 12.4 through ctypes gives PTX per ``compute_XX``, and the pinned
  ``ptxas`` 12.4 turns it into a cubin per ``sm_XX`` (12.4 is the newest toolkit that still
  targets Maxwell, Pascal and Volta).

The kernels are the project's (kiln.toml ``[build.device_code] cuda``); the intermediate files
are named after the project (``<name>_sm_XX.cubin``, ``<name>_compute_XX.ptx``). ``emit_c``
writes the C source (``<name>_cuda_blobs.c``, named by the caller): one byte array per blob
and the table ``em_cuda_blobs[]`` of {arch, kind, bytes} declared by the project's
``gpu_blobs.h``, which its CUDA backend picks from. ``scan_device_code`` reads any file (the
built ``.so``/``.dll``) back and finds the embedded cubins (ELF with machine EM_CUDA) and PTX
texts by their own headers, independent of that table: ``inspect`` uses it to prove that an
archive carries exactly its entry's SM list.
"""

from __future__ import annotations

import ctypes
import os
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kiln.errors import CommandFailed
from kiln.run import run

__all__ = [
    "Blob",
    "DeviceCode",
    "check_targets",
    "compile_nvcc",
    "compile_nvrtc",
    "emit_c",
    "scan_device_code",
    "split_targets",
]

EM_CUDA = 190
KIND_CUBIN = 0
KIND_PTX = 1
_TARGET_RE = re.compile(r"^(sm|compute)_(\d+)[af]?$")


@dataclass(frozen=True, kw_only=True)
class Blob:
    """One embedded image: ``sm_80`` cubin or ``compute_90`` PTX."""

    arch: str          # "sm_80" / "compute_90"
    sm: int            # 80 / 90
    kind: int          # KIND_CUBIN | KIND_PTX
    data: bytes        # PTX includes its terminating NUL (cuModuleLoadData needs it)


def split_targets(targets: Sequence[str]) -> tuple[list[int], list[int]]:
    """``[sm_75, ..., compute_90]`` -> ([75, ...] cubin SMs, [90] PTX SMs)."""
    sms: list[int] = []
    ptx: list[int] = []
    for t in targets:
        m = _TARGET_RE.fullmatch(t)
        if not m:
            raise ValueError(f"'{t}' is not a CUDA target (sm_XX or compute_XX)")
        (sms if m.group(1) == "sm" else ptx).append(int(m.group(2)))
    return sms, ptx


def _run(argv: Sequence[str], what: str) -> None:
    # nvcc finds its host preprocessor (gcc) on PATH; the rest of the environment is kept as is
    run(argv, env=dict(os.environ), what=what)


def compile_nvcc(nvcc: Path, source: Path, targets: Sequence[str], work: Path, *,
                 name: str) -> list[Blob]:
    """Cubins and PTX with a full nvcc (CUDA 13.3 wheel), made in ``work`` as
    ``<name>_sm_XX.cubin`` and ``<name>_compute_XX.ptx`` (``name``: the project's)."""
    work.mkdir(parents=True, exist_ok=True)
    sms, ptx = split_targets(targets)
    blobs: list[Blob] = []
    common = ["-O3", "-std=c++17", "--use_fast_math", "-Xptxas", "-O3"]
    for sm in sms:
        out = work / f"{name}_sm_{sm}.cubin"
        _run([str(nvcc), "-cubin", f"-arch=sm_{sm}", *common, "-o", str(out), str(source)],
             f"nvcc sm_{sm}")
        blobs.append(Blob(arch=f"sm_{sm}", sm=sm, kind=KIND_CUBIN, data=out.read_bytes()))
    for sm in ptx:
        out = work / f"{name}_compute_{sm}.ptx"
        _run([str(nvcc), "-ptx", f"-arch=compute_{sm}", *common, "-o", str(out), str(source)],
             f"nvcc compute_{sm}")
        blobs.append(Blob(arch=f"compute_{sm}", sm=sm, kind=KIND_PTX,
                          data=out.read_bytes() + b"\0"))
    return blobs


def _nvrtc_ptx(lib: ctypes.CDLL, text: bytes, name: str, sm: int) -> bytes:
    prog = ctypes.c_void_p()
    rc = lib.nvrtcCreateProgram(ctypes.byref(prog), text, name.encode(), 0, None, None)
    if rc != 0:
        raise CommandFailed(f"nvrtcCreateProgram failed ({rc})")
    try:
        opts = [f"--gpu-architecture=compute_{sm}".encode(), b"-std=c++17",
                b"--use_fast_math", b"-default-device"]
        arr = (ctypes.c_char_p * len(opts))(*opts)
        rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        if rc != 0:
            raise CommandFailed(f"NVRTC compute_{sm} failed ({rc}) on {name}",
                                output=log.value.decode(errors="replace"))
        lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
        ptx = ctypes.create_string_buffer(size.value)
        if lib.nvrtcGetPTX(prog, ptx) != 0:
            raise CommandFailed(f"nvrtcGetPTX compute_{sm} failed")
        return ptx.raw[: size.value].rstrip(b"\0")
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def compile_nvrtc(nvrtc: Path, ptxas: Path, source: Path, targets: Sequence[str],
                  work: Path, *, name: str) -> list[Blob]:
    """Cubins and PTX with NVRTC (PTX per compute_XX) + ptxas (cubin per sm_XX): CUDA 12.4.
    Files in ``work`` are named as ``compile_nvcc``'s."""
    work.mkdir(parents=True, exist_ok=True)
    sms, ptx = split_targets(targets)
    lib = ctypes.CDLL(str(nvrtc))
    text = source.read_bytes()
    blobs: list[Blob] = []
    for sm in sms:
        ptx_file = work / f"{name}_compute_{sm}.ptx"
        ptx_file.write_bytes(_nvrtc_ptx(lib, text, source.name, sm))
        out = work / f"{name}_sm_{sm}.cubin"
        _run([str(ptxas), f"-arch=sm_{sm}", "-O3", "-o", str(out), str(ptx_file)],
             f"ptxas sm_{sm}")
        blobs.append(Blob(arch=f"sm_{sm}", sm=sm, kind=KIND_CUBIN, data=out.read_bytes()))
    for sm in ptx:
        blobs.append(Blob(arch=f"compute_{sm}", sm=sm, kind=KIND_PTX,
                          data=_nvrtc_ptx(lib, text, source.name, sm) + b"\0"))
    return blobs


def emit_c(blobs: Sequence[Blob], path: Path, *, toolchain: str, origin: str) -> None:
    """Write the C source that embeds ``blobs`` as ``em_cuda_blobs[]`` (see gpu_blobs.h);
    ``origin``: the kernels they were compiled from, as the comment on top names them."""
    lines = [f"/* generated by kiln from {origin} with {toolchain};",
             " * do not edit. Table declared by gpu_blobs.h, read by the CUDA backend. */",
             '#include "gpu_blobs.h"', ""]
    for i, b in enumerate(blobs):
        lines.append(f"/* {b.arch}: {len(b.data)} bytes */")
        lines.append(f"static const unsigned char blob{i}[{len(b.data)}] = {{")
        data = b.data
        for off in range(0, len(data), 32):
            lines.append(",".join(str(c) for c in data[off:off + 32]) + ",")
        lines.append("};")
    lines.append("")
    lines.append(f"const em_gpu_blob em_cuda_blobs[{max(1, len(blobs))}] = {{")
    for i, b in enumerate(blobs):
        lines.append(f'    {{"{b.arch}", {b.sm}, {b.kind}, blob{i}, sizeof blob{i}}},')
    if not blobs:
        lines.append('    {"", 0, 0, 0, 0},')
    lines.append("};")
    lines.append(f"const int em_cuda_n_blobs = {len(blobs)};")
    lines.append(f'const char em_cuda_toolchain[] = "{toolchain}";')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# ---- reading the blobs back out of a built library ----------------------------------------


@dataclass(frozen=True, kw_only=True)
class DeviceCode:
    """What ``scan_device_code`` found in a file: cubin SMs and PTX targets, as written."""

    cubins: tuple[str, ...]   # ("sm_50", ...) sorted, with duplicates
    ptx: tuple[str, ...]      # ("compute_90",)


def _cubin_sm(blob: bytes, off: int) -> int | None:
    """SM of the 64-bit little-endian cubin at ``off``, or None if it is not one."""
    if len(blob) < off + 64 or blob[off + 4] != 2 or blob[off + 5] != 1:
        return None
    (machine,) = struct.unpack_from("<H", blob, off + 18)
    if machine != EM_CUDA:
        return None
    (flags,) = struct.unpack_from("<I", blob, off + 48)
    abi = blob[off + 8]  # EI_ABIVERSION: 7 for CUDA <= 12, 8 from CUDA 13
    sm = (flags >> 8) & 0xFF if abi >= 8 else flags & 0xFF
    return sm or None


def scan_device_code(data: bytes) -> DeviceCode:
    """Find every embedded cubin (ELF, EM_CUDA) and PTX (``.target sm_XX``) in ``data``."""
    cubins: list[str] = []
    pos = data.find(b"\x7fELF")
    while pos != -1:
        sm = _cubin_sm(data, pos)
        if sm is not None:
            cubins.append(f"sm_{sm}")
        pos = data.find(b"\x7fELF", pos + 4)
    ptx = [f"compute_{m.group(1).decode()}" for m in
           re.finditer(rb"\n\.version \d+\.\d+\s*\n\.target sm_(\d+)[af]?\b", data)]
    return DeviceCode(cubins=tuple(sorted(cubins, key=lambda s: int(s[3:]))),
                      ptx=tuple(sorted(ptx)))


def check_targets(found: DeviceCode, targets: Sequence[str]) -> list[str]:
    """Problems (empty when fine): the cubins must be exactly the ``sm_XX`` of ``targets``,
    once each, and the PTX exactly its ``compute_XX``."""
    sms, ptx = split_targets(targets)
    want_cubins = [f"sm_{s}" for s in sorted(sms)]
    want_ptx = sorted(f"compute_{s}" for s in ptx)
    problems = []
    if list(found.cubins) != want_cubins:
        problems.append(f"embedded cubins {list(found.cubins)} != matrix {want_cubins}")
    if list(found.ptx) != want_ptx:
        problems.append(f"embedded PTX {list(found.ptx)} != matrix {want_ptx}")
    return problems
