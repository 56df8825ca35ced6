"""OpenCL entries, checked without running them (called by ``inspect``).

The OpenCL backend carries its kernels as OpenCL C source, embedded in the library by CMake
(``runtime/src/backends/opencl/embed.cmake``) and compiled by the device's driver at run time,
and it opens the ICD loader itself (``OpenCL.dll`` / ``libOpenCL.so.1``). So for an OpenCL build:

- no binary needs the OpenCL loader at link time (the archive must load, and fall back to the
  CPU, where no OpenCL driver is installed);
- the binaries that carry the kernels name the loader they open at run time;
- the embedded kernel source is there, NUL-terminated, with every kernel the host code asks
  for, and is byte for byte ``runtime/src/backends/opencl/ember_kernels.cl`` of this source tree
  (when kiln runs from a checkout that has it);
- Adreno entries (``adreno`` in the id) also carry ``runtime/src/backends/opencl/adreno.cl``,
  the prefix with the Qualcomm extension guards.

The functions work on bytes and library lists only, so unit tests feed them fakes.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kiln.matrix import Entry
from kiln.verify.base import Check

__all__ = [
    "ADRENO_HEADER",
    "KERNEL_HEADER",
    "REQUIRED_KERNELS",
    "OpenclBinary",
    "check_opencl",
    "embedded_source",
    "source_dir",
    "summary",
]

KERNEL_HEADER = b"/* ember_kernels.cl - the device code of ember's OpenCL backend"
ADRENO_HEADER = b"/* adreno.cl - put in front of ember_kernels.cl"
# what backend_opencl.c creates with clCreateKernel
REQUIRED_KERNELS = (
    "em_quant_q8_0", "em_quant_q8_1", "em_quant_q8_K", "em_quant_f16",
    "em_mm_q4_0", "em_mm_q4_1", "em_mm_q8_0", "em_mm_f16", "em_mm_f32", "em_mm_q4_K", "em_mm_q6_K",
    "em_mm_q5_0", "em_mm_q5_1", "em_mm_q5_K",
    "em_rmsnorm", "em_rope", "em_kv_store", "em_att_scores", "em_att_softmax", "em_att_out",
    "em_swiglu", "em_add",
)
LOADER = {"windows": "OpenCL.dll", "linux": "libOpenCL.so.1", "android": "libOpenCL.so"}
LINK_PATTERNS = ("opencl.dll", "libopencl.so*", "libopencl.dylib", "opencl.framework*")
_KERNEL_RE = re.compile(rb"__kernel\s+(?:\w+\s+)*?void\s+(\w+)\s*\(")


@dataclass(frozen=True)
class OpenclBinary:
    """One binary of the stage: its path in the stage, bytes and link-time libraries."""

    path: str
    data: bytes
    libraries: tuple[str, ...]


def source_dir() -> Path | None:
    """``runtime/src/backends/opencl`` of the checkout kiln runs from, or None (installed)."""
    d = Path(__file__).resolve().parents[2] / "runtime" / "src" / "backends" / "opencl"
    return d if (d / "ember_kernels.cl").is_file() else None


def embedded_source(data: bytes, header: bytes) -> bytes | None:
    """The NUL-terminated source that starts with ``header`` in ``data``, or None."""
    start = data.find(header)
    if start < 0:
        return None
    end = data.find(b"\0", start)
    return data[start:end] if end >= 0 else None


def _links(b: OpenclBinary) -> Check:
    bad = [lib for lib in b.libraries
           if any(fnmatch.fnmatch(lib.rsplit("/", 1)[-1].lower(), p) for p in LINK_PATTERNS)]
    return Check(name=f"{b.path}: no OpenCL at link time", ok=not bad,
                 detail="imports no OpenCL loader" if not bad else
                 f"links {', '.join(bad)}: the backend must open it at run time "
                 "(runtime/src/backends/gpu_dl.h), or the archive fails to load without a driver")


def _source_check(name: str, rel: str, src: bytes, want: Path | None) -> Check:
    digest = hashlib.sha256(src).hexdigest()[:12]
    if want is None:
        return Check(name=f"{rel}: {name}", ok=True,
                     detail=f"{len(src)} bytes (sha256 {digest}); no source tree to compare with")
    expected = want.read_bytes()
    same = expected == src
    return Check(name=f"{rel}: {name}", ok=same,
                 detail=f"{len(src)} bytes, identical to runtime/src/backends/opencl/{want.name} "
                        f"(sha256 {digest})" if same else
                        f"differs from runtime/src/backends/opencl/{want.name} "
                        f"({len(src)} bytes embedded, "
                        f"{len(expected)} in the tree): a stale build or a different source")


def check_opencl(binaries: Sequence[OpenclBinary], entry: Entry,
                 sources: Path | None = None) -> list[Check]:
    """Every OpenCL check on the stage's binaries (see the module docstring)."""
    out = [_links(b) for b in binaries]
    carriers = [(b, s) for b in binaries
                if (s := embedded_source(b.data, KERNEL_HEADER)) is not None]
    if not carriers:
        out.append(Check(name="opencl kernels", ok=False,
                         detail="no binary of bin/ or lib/ embeds "
                                "runtime/src/backends/opencl/ember_kernels.cl: "
                                "the build was not configured with EMBER_OPENCL=ON"))
        return out
    loader = LOADER.get(entry.os)
    for b, src in carriers:
        names = {m.decode() for m in _KERNEL_RE.findall(src)}
        missing = [k for k in REQUIRED_KERNELS if k not in names]
        out.append(Check(name=f"{b.path}: opencl kernels", ok=not missing,
                         detail=f"{len(names)} kernels, every one the host code creates"
                         if not missing else f"the embedded source lacks {', '.join(missing)}"))
        out.append(_source_check("opencl kernel source", b.path, src,
                                 sources / "ember_kernels.cl" if sources else None))
        if "adreno" in entry.id:
            pre = embedded_source(b.data, ADRENO_HEADER)
            if pre is None or b"cl_qcom_reqd_sub_group_size" not in pre:
                out.append(Check(name=f"{b.path}: adreno kernels", ok=False,
                                 detail="runtime/src/backends/opencl/adreno.cl (the Adreno "
                                        "prefix with its "
                                        "cl_qcom guards) is not embedded"))
            else:
                out.append(_source_check("adreno kernel prefix", b.path, pre,
                                         sources / "adreno.cl" if sources else None))
        if loader is not None:
            named = loader.encode() in b.data
            out.append(Check(name=f"{b.path}: opencl loader", ok=named,
                             detail=f"opens {loader} at run time" if named
                             else f"{loader} is not named: the backend cannot find the loader"))
    return out


def summary(checks: Sequence[Check]) -> str:
    """The OpenCL evidence for the record's one line (what was seen, not restated)."""
    seen = [f"{c.name.removesuffix(' opencl kernel source').removesuffix(':')}: {c.detail}"
            for c in checks if c.name.endswith(": opencl kernel source")]
    seen += [c.detail for c in checks if c.name.endswith((": adreno kernel prefix",
                                                          ": opencl loader"))]
    return "; ".join([*seen, "no OpenCL loader at link time"])
