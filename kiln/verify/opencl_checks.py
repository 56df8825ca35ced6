"""OpenCL entries, checked without running them (called by ``inspect``).

The project's OpenCL backend carries its kernels as OpenCL C source (kiln.toml's
``[build.device_code]`` opencl, relative to the project's source), embedded NUL-terminated in
the library by its build and compiled by the device's driver at run time, and it opens the ICD
loader itself (``OpenCL.dll`` / ``libOpenCL.so.1``). So for an OpenCL build:

- no binary needs the OpenCL loader at link time (the archive must load, and fall back to the
  CPU, where no OpenCL driver is installed);
- the binaries that carry the kernels name the loader they open at run time;
- the embedded kernel source is there (found by the first line of the project's file),
  NUL-terminated, with every kernel the project's file defines, and is byte for byte that
  file of the source tree the build was made from;
- Adreno entries (``adreno`` in the id) also carry ``adreno.cl`` from the same directory, the
  prefix with the Qualcomm extension guards, byte for byte.

The checks work on bytes, library lists and the project's files (``KernelSources``), so unit
tests feed them fakes.
"""

from __future__ import annotations

import fnmatch
import hashlib
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kiln.errors import ConfigError
from kiln.matrix import Entry
from kiln.verify.base import Check, VerifyContext, project_source

__all__ = [
    "ADRENO_FILE",
    "KernelSources",
    "OpenclBinary",
    "check_opencl",
    "embedded_source",
    "header_of",
    "kernel_sources",
    "kernels_in",
    "summary",
]

# the Adreno prefix, beside the kernel source in the project's tree
ADRENO_FILE = "adreno.cl"
# what the Adreno prefix must use: the Qualcomm extension its guards are about
ADRENO_EXTENSION = b"cl_qcom_reqd_sub_group_size"
LOADER = {"windows": "OpenCL.dll", "linux": "libOpenCL.so.1", "android": "libOpenCL.so"}
LINK_PATTERNS = ("opencl.dll", "libopencl.so*", "libopencl.dylib", "opencl.framework*")
_KERNEL_RE = re.compile(rb"__kernel\s+(?:\w+\s+)*?void\s+(\w+)\s*\(")
# a first line shorter than this is not distinctive enough to find the source by
_MIN_HEADER = 16


@dataclass(frozen=True)
class OpenclBinary:
    """One binary of the stage: its path in the stage, bytes and link-time libraries."""

    path: str
    data: bytes
    libraries: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class KernelSources:
    """The project's OpenCL C source in its tree, which the archive's copy must equal."""

    kernels: Path   # [build.device_code] opencl, in the source directory
    shown: str      # how details name it ("<project.source>/<device_code.opencl>")
    option: str     # kiln's CMake option that turns the backend on ("<option_prefix>OPENCL")

    @property
    def adreno(self) -> Path:
        return self.kernels.parent / ADRENO_FILE

    @property
    def adreno_shown(self) -> str:
        return posixpath.join(posixpath.dirname(self.shown), ADRENO_FILE)


def kernel_sources(ctx: VerifyContext) -> KernelSources | Check:
    """The job's project's kernel source, or the failed check that says why it is unknown."""
    names = ctx.job.names
    try:
        rel = names.device_source("opencl")
        option = names.option("OPENCL")
    except ConfigError as exc:
        return Check(name="opencl kernels", ok=False,
                     detail=exc.message + (f" ({exc.hint})" if exc.hint else ""))
    found = project_source(ctx)
    if found is None:
        return Check(name="opencl kernels", ok=False,
                     detail=f"the project's source directory is not known, so the archive's "
                            f"copy of {rel} cannot be checked")
    root, label = found
    return KernelSources(kernels=root / rel, shown=posixpath.join(label, rel) if label else rel,
                         option=option)


def header_of(text: bytes) -> bytes:
    """What finds a source file inside a binary: its first line (or its first 64 bytes when
    that line is too short to be distinctive)."""
    first = text.split(b"\n", 1)[0]
    return first if len(first) >= _MIN_HEADER else text[:64]


def kernels_in(text: bytes) -> set[str]:
    """The names of the ``__kernel`` functions an OpenCL C source defines."""
    return {m.decode() for m in _KERNEL_RE.findall(text)}


def embedded_source(data: bytes, header: bytes) -> bytes | None:
    """The NUL-terminated source that starts with ``header`` in ``data``, or None."""
    if not header:
        return None
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


def _source_check(name: str, rel: str, src: bytes, expected: bytes, shown: str) -> Check:
    digest = hashlib.sha256(src).hexdigest()[:12]
    same = expected == src
    return Check(name=f"{rel}: {name}", ok=same,
                 detail=f"{len(src)} bytes, identical to {shown} (sha256 {digest})" if same else
                        f"differs from {shown} ({len(src)} bytes embedded, "
                        f"{len(expected)} in the tree): a stale build or a different source")


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def check_opencl(binaries: Sequence[OpenclBinary], entry: Entry,
                 sources: KernelSources) -> list[Check]:
    """Every OpenCL check on the stage's binaries (see the module docstring)."""
    out = [_links(b) for b in binaries]
    tree = _read(sources.kernels)
    if tree is None:
        out.append(Check(name="opencl kernels", ok=False,
                         detail=f"{sources.shown} is not in the project's source tree "
                                "(kiln.toml's [build.device_code] opencl)"))
        return out
    carriers = [(b, s) for b in binaries
                if (s := embedded_source(b.data, header_of(tree))) is not None]
    if not carriers:
        out.append(Check(name="opencl kernels", ok=False,
                         detail=f"no binary of bin/ or lib/ embeds {sources.shown}: "
                                f"the build was not configured with {sources.option}=ON"))
        return out
    required = sorted(kernels_in(tree))
    loader = LOADER.get(entry.os)
    for b, src in carriers:
        names = kernels_in(src)
        missing = [k for k in required if k not in names]
        out.append(Check(name=f"{b.path}: opencl kernels", ok=not missing,
                         detail=f"{len(names)} kernels, every one the tree's source defines"
                         if not missing else f"the embedded source lacks {', '.join(missing)}"))
        out.append(_source_check("opencl kernel source", b.path, src, tree, sources.shown))
        if "adreno" in entry.id:
            out.append(_adreno_check(b, sources))
        if loader is not None:
            named = loader.encode() in b.data
            out.append(Check(name=f"{b.path}: opencl loader", ok=named,
                             detail=f"opens {loader} at run time" if named
                             else f"{loader} is not named: the backend cannot find the loader"))
    return out


def _adreno_check(b: OpenclBinary, sources: KernelSources) -> Check:
    """The Adreno prefix, embedded beside the kernels, byte for byte the tree's."""
    tree = _read(sources.adreno)
    if tree is None:
        return Check(name=f"{b.path}: adreno kernels", ok=False,
                     detail=f"{sources.adreno_shown} is not in the project's source tree (an "
                            "Adreno entry carries the prefix with the cl_qcom guards)")
    pre = embedded_source(b.data, header_of(tree))
    if pre is None or ADRENO_EXTENSION not in pre:
        return Check(name=f"{b.path}: adreno kernels", ok=False,
                     detail=f"{sources.adreno_shown} (the Adreno prefix with its cl_qcom guards) "
                            "is not embedded")
    return _source_check("adreno kernel prefix", b.path, pre, tree, sources.adreno_shown)


def summary(checks: Sequence[Check]) -> str:
    """The OpenCL evidence for the record's one line (what was seen, not restated)."""
    seen = [f"{c.name.removesuffix(' opencl kernel source').removesuffix(':')}: {c.detail}"
            for c in checks if c.name.endswith(": opencl kernel source")]
    seen += [c.detail for c in checks if c.name.endswith((": adreno kernel prefix",
                                                          ": opencl loader"))]
    return "; ".join([*seen, "no OpenCL loader at link time"])
