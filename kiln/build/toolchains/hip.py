"""HIP entries: zig for the host code (as the cpu and cuda backends) + the ROCm 7.2 ``hipcc``.

kiln's HIP builds assume a backend that opens the HIP runtime (``libamdhip64.so`` /
``amdhip64_*.dll``) at run time, so the host side is the zig cross build of
``kiln/build/toolchains/zig.py`` with the project's HIP switch (``<option_prefix>HIP=ON``,
kiln.toml ``[build]``). Before CMake runs, ``configure`` compiles the project's HIP kernels
(kiln.toml ``[build.device_code] hip``, relative to the source) with ``hipcc --genco`` for the
entry's ``gpu_targets`` into one code-object bundle, checks that the bundle holds exactly those
gfx targets, and writes ``<build>/<name>_hip_blobs.c`` (``-D<option_prefix>HIP_BLOBS=...``).

ROCm 7.2 is in no package registry reachable from the release host, so kiln does not install
it: the HIP entries are ``ci-only`` and build where it is installed already (the
``rocm/dev-ubuntu-24.04:7.2-complete`` container; on Windows the AMD HIP SDK, installed by the
job's setup step of ``ci/config.yaml``). ``find_hipcc`` looks in ``$ROCM_PATH/bin``,
``$HIP_PATH/bin`` (what the HIP SDK for Windows sets), then ``PATH``, and the version that
``hipcc --version`` reports must be 7.2: any other one is refused with what to install.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kiln.errors import ConfigError, ToolMissing
from kiln.package.records import Tool
from kiln.plan import Job
from kiln.run import run
from kiln.build.toolchains.base import ToolchainPaths
from kiln.build.toolchains.hosted import DeviceStep, ZigHostedToolchain, device_source

__all__ = [
    "BundleScan",
    "HIP_VERSION",
    "HipToolchain",
    "check_gfx_targets",
    "compile_bundle",
    "emit_c",
    "find_hipcc",
    "hipcc_version",
    "parse_hip_version",
    "scan_bundles",
]

HIP_VERSION = "7.2"
# Bump when how device code is made or embedded changes: it is part of every HIP build key.
EMBED_SCHEME = 1
BUNDLE_MAGIC = b"__CLANG_OFFLOAD_BUNDLE__"
COMPRESSED_MAGIC = b"CCOB"   # clang-offload-bundler --compress
EM_BLOB_HIP_BUNDLE = 2       # the blob kind of the project's gpu_blobs.h
_VERSION_RE = re.compile(r"^HIP version:\s*(\d+)\.(\d+)(?:\.(\d+))?", re.MULTILINE)
_GFX_RE = re.compile(r"--(gfx[0-9a-f]+)(?::|$)")
INSTALL_HINT = {
    "linux": "build in the entry's container (rocm/dev-ubuntu-24.04:7.2-complete), or install "
             "ROCm 7.2 (AMD's amdgpu-install --usecase=hiplibsdk) and set ROCM_PATH",
    "windows": "install the AMD HIP SDK 7.2 for Windows (the job's setup step in "
               "ci/config.yaml does it) and set HIP_PATH to its directory",
}


def _hint(os_name: str) -> str:
    return INSTALL_HINT.get(os_name, INSTALL_HINT["linux"])


def find_hipcc(env: Mapping[str, str], os_name: str = "linux") -> Path:
    """``hipcc`` of ``$ROCM_PATH``, ``$HIP_PATH`` or ``PATH`` (first found), else ToolMissing."""
    names = ("hipcc.exe", "hipcc.bat", "hipcc") if os_name == "windows" else ("hipcc",)
    for var in ("ROCM_PATH", "HIP_PATH"):
        root = env.get(var)
        if root:
            for name in names:
                cand = Path(root) / "bin" / name
                if cand.is_file():
                    return cand
    found = shutil.which("hipcc", path=env.get("PATH", ""))
    if found:
        return Path(found)
    raise ToolMissing(f"no hipcc (HIP {HIP_VERSION}) in $ROCM_PATH/bin, $HIP_PATH/bin or PATH",
                      hint=_hint(os_name))


def parse_hip_version(text: str) -> str | None:
    """``"7.2.26015"`` from ``hipcc --version`` output, or None."""
    m = _VERSION_RE.search(text)
    if m is None:
        return None
    return ".".join(g for g in m.groups() if g is not None)


def hipcc_version(hipcc: Path, env: Mapping[str, str], os_name: str = "linux") -> str:
    """The HIP version of ``hipcc``; ConfigError unless it is HIP_VERSION."""
    done = run([str(hipcc), "--version"], env={**env, "HIP_PLATFORM": "amd"},
               what="hipcc --version")
    version = parse_hip_version(done.stdout)
    if version is None:
        raise ConfigError(f"{hipcc} --version printed no 'HIP version: X.Y' line",
                          hint=_hint(os_name))
    if version.split(".")[:2] != HIP_VERSION.split("."):
        raise ConfigError(f"{hipcc} is HIP {version}; the hip entries are built with ROCm "
                          f"{HIP_VERSION} (matrix/backends.yaml hip@{HIP_VERSION})",
                          hint=_hint(os_name))
    return version


def compile_bundle(hipcc: Path, source: Path, targets: Sequence[str], out: Path, *,
                   env: Mapping[str, str], log_file: Path | None = None,
                   extra: Sequence[str] = ()) -> bytes:
    """One code-object bundle of ``source`` for every gfx target."""
    out.parent.mkdir(parents=True, exist_ok=True)
    run([str(hipcc), "--genco", "-O3", *extra, *(f"--offload-arch={t}" for t in targets),
         "-o", str(out), str(source)],
        env={**env, "HIP_PLATFORM": "amd"}, log_file=log_file,
        what=f"hipcc {source.name} for {len(targets)} gfx targets")
    return out.read_bytes()


@dataclass(frozen=True, kw_only=True)
class BundleScan:
    """What ``scan_bundles`` found in a file."""

    bundles: int                  # uncompressed offload bundles
    gfx: tuple[str, ...]          # their gfx code objects, sorted, with duplicates
    compressed: int               # compressed bundles (their contents cannot be listed)


def _bundle_gfx(data: bytes, off: int) -> list[str] | None:
    """gfx targets of the bundle at ``off``, or None when its header does not parse."""
    p = off + len(BUNDLE_MAGIC)
    if len(data) < p + 8:
        return None
    (count,) = struct.unpack_from("<Q", data, p)
    if not 0 < count < 256:
        return None
    p += 8
    out = []
    for _ in range(count):
        if len(data) < p + 24:
            return None
        _, size, id_len = struct.unpack_from("<QQQ", data, p)
        p += 24
        if id_len > 1024 or len(data) < p + id_len:
            return None
        triple = data[p:p + id_len].decode("ascii", "replace")
        p += id_len
        m = _GFX_RE.search(triple)
        if m is not None and size > 0:
            out.append(m.group(1))
    return out


def scan_bundles(data: bytes) -> BundleScan:
    """Every clang offload bundle in ``data`` (a built library) and its gfx code objects."""
    gfx: list[str] = []
    bundles = 0
    pos = data.find(BUNDLE_MAGIC)
    while pos != -1:
        found = _bundle_gfx(data, pos)
        if found is not None:
            bundles += 1
            gfx.extend(found)
        pos = data.find(BUNDLE_MAGIC, pos + 1)
    compressed = len(re.findall(re.escape(COMPRESSED_MAGIC) + rb"[\x01-\x03]\x00", data))
    return BundleScan(bundles=bundles, gfx=tuple(sorted(gfx)), compressed=compressed)


def check_gfx_targets(found: BundleScan, targets: Sequence[str]) -> list[str]:
    """Problems (empty when fine): one bundle holding exactly the gfx targets, once each."""
    want = sorted(t for t in targets if t.startswith("gfx"))
    problems = []
    if found.compressed:
        problems.append(f"{found.compressed} compressed offload bundle(s): build without "
                        "--offload-compress so that the code objects can be checked")
    if found.bundles != 1:
        problems.append(f"{found.bundles} offload bundles, expected exactly 1")
    if list(found.gfx) != want:
        problems.append(f"embedded code objects {list(found.gfx)} != matrix {want}")
    return problems


def emit_c(bundle: bytes, targets: Sequence[str], path: Path, *, toolchain: str,
           origin: str) -> None:
    """Write the C source that embeds ``bundle`` as ``em_hip_blobs[]`` (see gpu_blobs.h);
    ``origin``: the kernels it was compiled from, as the comment on top names them."""
    arch = ";".join(targets)
    lines = [f"/* generated by kiln from {origin} with {toolchain};",
             " * do not edit. Table declared by gpu_blobs.h, read by the HIP backend. */",
             '#include "gpu_blobs.h"', "",
             f"static const unsigned char bundle[{len(bundle)}] = {{"]
    for off in range(0, len(bundle), 32):
        lines.append(",".join(str(c) for c in bundle[off:off + 32]) + ",")
    lines += ["};", "",
              "const em_gpu_blob em_hip_blobs[1] = {",
              f'    {{"{arch}", 0, {EM_BLOB_HIP_BUNDLE}, bundle, sizeof bundle}},',
              "};",
              "const int em_hip_n_blobs = 1;",
              f'const char em_hip_toolchain[] = "{toolchain}";']
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


class HipToolchain(ZigHostedToolchain):
    """Registered as ``hip`` (recipes/hip.yaml): zig for the host, ROCm 7.2 hipcc for devices."""

    name = "hip"
    label = "zig+hip"

    def __init__(self) -> None:
        super().__init__()
        self._hipcc: tuple[Path, str] | None = None   # found by prepare()
        self._env: dict[str, str] = {}                 # the environment install() was given

    def _locate(self, env: Mapping[str, str], os_name: str) -> tuple[Path, str]:
        if self._hipcc is None:
            hipcc = find_hipcc(env, os_name)
            self._hipcc = (hipcc, hipcc_version(hipcc, env, os_name))
        return self._hipcc

    def prepare(self, paths: ToolchainPaths, env: Mapping[str, str]) -> None:
        # hipcc is not installed by kiln (no registry has ROCm 7.2): it must be there already,
        # in the right version, before any build starts
        if os.name == "nt":
            # the host half is kiln's zig build, whose compiler wrappers are POSIX sh scripts
            raise ConfigError(
                "kiln builds HIP entries' host code with its zig wrappers, which need a POSIX "
                "host; this is Windows",
                hint="build the entry on a Linux runner in the ROCm 7.2 container: the code "
                     "objects hipcc makes do not depend on the OS, and zig cross-compiles the "
                     "Windows host code (as for win-cuda-*)")
        self._env = dict(env)
        self._locate(env, "linux")

    def _hipcc_version(self) -> str:
        """The version of the hipcc found, or the pinned one before it is looked for."""
        return self._hipcc[1] if self._hipcc is not None else HIP_VERSION

    def device_tools(self, job: Job) -> tuple[Tool, ...]:
        return (Tool(name="hipcc", version=self._hipcc_version()),)

    def identity_extras(self, job: Job) -> tuple[str, Mapping[str, str]]:
        return f"+hipcc-{self._hipcc_version()}+embed{EMBED_SCHEME}", {}

    def device_step(self, job: Job, *, paths: ToolchainPaths, source: Path, build: Path,
                    work: Path) -> DeviceStep:
        env = self._env
        names = job.names
        kernels, origin = device_source(names, "hip", source)
        option = names.option("HIP_BLOBS")
        hipcc, version = self._locate(env, "linux")
        targets = tuple(t for t in job.entry.gpu_targets if t.startswith("gfx"))
        # an uncompressed bundle, whatever the ROCm default: inspect lists its code objects
        bundle = compile_bundle(hipcc, kernels, targets,
                                work / "hip" / f"{names.name}_kernels.hsaco",
                                env=env, extra=("--no-offload-compress",))
        problems = check_gfx_targets(scan_bundles(bundle), targets)
        if problems:
            raise ConfigError("device code does not match the matrix: " + "; ".join(problems))
        blobs_c = build / f"{names.name}_hip_blobs.c"
        emit_c(bundle, targets, blobs_c, toolchain=f"hipcc {version}", origin=origin)
        return f"hip-{version}", {option: str(blobs_c)}
