"""CUDA entries: zig for the host code (exactly as the cpu backend) + a pinned device compiler.

kiln's CUDA builds assume a backend with no link-time dependency on a toolkit (it opens the
driver with dlopen / LoadLibrary), so the host side is the zig cross build of
``kiln/build/toolchains/zig.py`` with the project's CUDA switch (``<option_prefix>CUDA=ON``,
kiln.toml ``[build]``). Before CMake runs, ``configure`` compiles the project's kernels
(kiln.toml ``[build.device_code] cuda``, relative to the source) for the entry's
``gpu_targets`` (matrix/backends.yaml) into cubins + PTX and writes
``<build>/<name>_cuda_blobs.c``, which CMake compiles into the library
(``-D<option_prefix>CUDA_BLOBS=...``). Device code is OS-independent: the Linux and Windows
entries of one CUDA version embed the same bytes.

Device compilers, installed by kiln from PyPI into ``<cache>/toolchains/cuda-<version>``
(pip ``--target``, under a lock, renamed into place when complete), never into the user's
environment:

- 13.3: the full ``nvcc`` wheel set (``CUDA_PINS["13.3"]``); nvcc preprocesses with the host's
  ``gcc`` (``-E`` only: no host code is compiled by nvcc);
- 12.4: NVRTC + ptxas (``CUDA_PINS["12.4"]``), because 12.4 is the last toolkit that targets
  Maxwell, Pascal and Volta (sm_50..sm_70), which CUDA 13 dropped.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from kiln.errors import CommandFailed, ConfigError
from kiln.files import COMPLETE, install_once
from kiln.package.records import Tool
from kiln.plan import Job
from kiln.run import run
from kiln.build.toolchains import cuda_device
from kiln.build.toolchains.base import ToolchainPaths
from kiln.build.toolchains.hosted import DeviceStep, ZigHostedToolchain, device_source

__all__ = [
    "CUDA_PINS",
    "CudaToolchain",
    "compile_device_code",
    "install_command",
    "install_cuda",
]

CUDA_PINS: dict[str, tuple[str, ...]] = {
    "13.3": ("nvidia-cuda-nvcc==13.3.73", "nvidia-cuda-crt==13.3.73", "nvidia-nvvm==13.3.73",
             "nvidia-cuda-runtime==13.3.29", "nvidia-cuda-cccl==13.3.5.0.6",
             "nvidia-cuda-cuobjdump==13.3.73"),
    "12.4": ("nvidia-cuda-nvrtc-cu12==12.4.127", "nvidia-cuda-nvcc-cu12==12.4.131"),
}
# The device compilers each version runs and the pinned wheel that carries each one; their
# versions are read from CUDA_PINS, so a pin moved there moves the records and the SBOM too.
_DEVICE_TOOL_WHEELS: dict[str, tuple[tuple[str, str], ...]] = {
    "13.3": (("nvcc", "nvidia-cuda-nvcc"),),
    "12.4": (("NVRTC", "nvidia-cuda-nvrtc-cu12"), ("ptxas", "nvidia-cuda-nvcc-cu12")),
}


def _pinned(version: str, wheel: str) -> str:
    pins = dict(pin.split("==", 1) for pin in CUDA_PINS[version])
    return pins[wheel]


DEVICE_TOOLS: dict[str, tuple[Tool, ...]] = {
    version: tuple(Tool(name=name, version=_pinned(version, wheel)) for name, wheel in tools)
    for version, tools in _DEVICE_TOOL_WHEELS.items()
}
DEVICE_COMPILER = {v: " + ".join(f"{t.name} {t.version}" for t in tools)
                   for v, tools in DEVICE_TOOLS.items()}
# Bump when how device code is made or embedded changes: it is part of every CUDA build key.
EMBED_SCHEME = 2


def _dest(paths: ToolchainPaths, version: str) -> Path:
    return paths.root / f"cuda-{version}"


def install_command(paths: ToolchainPaths, version: str) -> str:
    """The exact command that installs the device compiler of ``version`` where kiln looks."""
    return (f"{sys.executable} -m pip install --no-deps --target {_dest(paths, version)} "
            + " ".join(CUDA_PINS[version]))


def _tools(root: Path, version: str) -> dict[str, Path]:
    if version == "13.3":
        return {"nvcc": root / "nvidia" / "cu13" / "bin" / "nvcc",
                "cuobjdump": root / "nvidia" / "cu13" / "bin" / "cuobjdump"}
    return {"nvrtc": root / "nvidia" / "cuda_nvrtc" / "lib" / "libnvrtc.so.12",
            "ptxas": root / "nvidia" / "cuda_nvcc" / "bin" / "ptxas"}


def _installed_by_hand(dest: Path, version: str) -> bool:
    """``install_command`` was run by hand: every pinned wheel and every tool is in ``dest``."""
    if not all(p.exists() for p in _tools(dest, version).values()):
        return False
    for pin in CUDA_PINS[version]:
        name, _, ver = pin.partition("==")
        if not (dest / f"{name.replace('-', '_')}-{ver}.dist-info").is_dir():
            return False
    return True


def install_cuda(paths: ToolchainPaths, version: str, *, env: Mapping[str, str],
                 log_file: Path | None = None) -> Path:
    """Install the pinned device compiler of ``version`` once; return its root."""
    if version not in CUDA_PINS:
        raise ConfigError(f"kiln has no device compiler pinned for CUDA {version}",
                          hint=f"known: {', '.join(sorted(CUDA_PINS))} (kiln/build/toolchains/cuda.py)")
    pins = "\n".join(CUDA_PINS[version]) + "\n"

    def fill(tmp: Path) -> str:
        try:
            run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-input",
                 "--disable-pip-version-check", "--no-warn-script-location",
                 "--target", str(tmp), *CUDA_PINS[version]],
                env=env, log_file=log_file, what=f"pip install CUDA {version} device compiler")
        except CommandFailed as exc:
            raise CommandFailed(exc.message, output=exc.output,
                                hint="kiln installs it from PyPI; by hand: "
                                     + install_command(paths, version)) from exc
        missing = [str(p) for p in _tools(tmp, version).values() if not p.exists()]
        if missing:
            raise ConfigError(f"CUDA {version} wheels lack {', '.join(missing)}",
                              hint="report this: the wheel layout changed")
        return pins

    def adopt(dest: Path) -> str | None:
        return pins if _installed_by_hand(dest, version) else None

    return install_once(_dest(paths, version), lock=paths.lock_dir() / f"cuda-{version}.lock",
                        fill=fill, marker=COMPLETE, adopt=adopt)


def compile_device_code(root: Path, version: str, source: Path, targets: tuple[str, ...],
                        out_c: Path, work: Path, *, name: str, origin: str) -> None:
    """Compile ``source`` for ``targets`` with the CUDA ``version`` toolchain at ``root`` and
    write the C source that embeds the result (``name``: the project's, for the files made in
    ``work``; ``origin``: ``source`` as the C source's comment names it)."""
    tools = _tools(root, version)
    if version == "13.3":
        blobs = cuda_device.compile_nvcc(tools["nvcc"], source, targets, work, name=name)
    else:
        blobs = cuda_device.compile_nvrtc(tools["nvrtc"], tools["ptxas"], source, targets, work,
                                          name=name)
    problems = cuda_device.check_targets(
        cuda_device.scan_device_code(b"".join(b.data for b in blobs)), targets)
    if problems:
        raise ConfigError("device code does not match the matrix: " + "; ".join(problems))
    out_c.parent.mkdir(parents=True, exist_ok=True)
    cuda_device.emit_c(blobs, out_c, toolchain=DEVICE_COMPILER[version], origin=origin)


class CudaToolchain(ZigHostedToolchain):
    """Registered as ``cuda`` (recipes/cuda.yaml): zig for the host, nvcc/NVRTC for devices.
    The device compilers are per CUDA version, so ``device_step`` installs them for its job."""

    name = "cuda"
    label = "zig+cuda"

    def device_tools(self, job: Job) -> tuple[Tool, ...]:
        return DEVICE_TOOLS.get(job.entry.backend_version or "", ())

    def identity_extras(self, job: Job) -> tuple[str, Mapping[str, str]]:
        pins = ",".join(CUDA_PINS.get(job.entry.backend_version or "", ()))
        return f"+[{pins}]+embed{EMBED_SCHEME}", {}

    def device_step(self, job: Job, *, paths: ToolchainPaths, source: Path, build: Path,
                    work: Path) -> DeviceStep:
        ver = job.entry.backend_version or ""
        names = job.names
        kernels, origin = device_source(names, "cuda", source)
        option = names.option("CUDA_BLOBS")
        root = install_cuda(paths, ver, env=os.environ)
        # inside the build tree: -ffile-prefix-map={build} keeps its path out of the objects
        blobs_c = build / f"{names.name}_cuda_blobs.c"
        compile_device_code(root, ver, kernels, tuple(job.entry.gpu_targets), blobs_c,
                            work / "cuda" / "obj", name=names.name, origin=origin)
        return f"cuda-{ver}", {option: str(blobs_c)}
