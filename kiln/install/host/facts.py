"""The facts about one machine that choosing a build needs, parsed once, frozen."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Cpu", "Gpu", "Host", "VulkanIcd"]


@dataclass(frozen=True, kw_only=True)
class Cpu:
    vendor: str | None
    model: str | None
    # The highest baseline level of ``kiln.matrix.CPU_BASELINES`` the CPU meets: x86-64-v3,
    # armv8.2-a, apple-m1, z15... ``None`` when it could not be read.
    level: str | None
    # Kernel levels of ``kiln.matrix.CPU_FEATURES`` the CPU has (avx2, avx512, dotprod...).
    features: frozenset[str]
    uarch: str | None = None  # archspec's name for the microarchitecture (zen4, icelake...)


@dataclass(frozen=True, kw_only=True)
class Gpu:
    vendor: str  # nvidia | amd | intel | qualcomm | apple | arm | other
    name: str
    # nvidia: compute capability "8.9"; amd: gfx target "gfx1100"; otherwise None
    arch: str | None = None


@dataclass(frozen=True, kw_only=True)
class VulkanIcd:
    name: str  # the manifest's file name without .json, or the driver's name
    path: str
    cpu: bool  # a software rasteriser (lavapipe, SwiftShader): no faster than a CPU build


@dataclass(frozen=True, kw_only=True)
class Host:
    """One machine. Names follow the matrix: os linux/macos/windows/android, arch
    x86_64/aarch64/s390x, libc glibc/musl/none/bionic."""

    os: str
    os_name: str  # for people: "Ubuntu 24.04", "macOS 14.5", "Windows 11 (10.0.22631)"
    os_version: str | None  # macOS version, Windows major version, Android API level
    distro: str | None  # os-release ID on Linux: ubuntu, openeuler, alpine, ...
    distro_like: tuple[str, ...]
    kernel: str | None
    arch: str  # the machine's own architecture
    process_arch: str  # the architecture the probing process runs as
    emulation: str | None  # "rosetta" / "windows-x64-emulation" when the process is emulated
    can_emulate_x86_64: bool  # Apple Silicon with Rosetta 2, Windows 11 on Arm
    libc: str
    libc_version: str | None
    cpu: Cpu
    gpus: tuple[Gpu, ...] = ()
    nvidia_driver: str | None = None
    rocm_version: str | None = None
    hip_runtime: str | None = None  # where the HIP runtime library is
    vulkan_loader: str | None = None
    vulkan_icds: tuple[VulkanIcd, ...] = ()
    vulkan_gpu: str | None = None  # a GPU Vulkan can use, when one was found
    opencl_icds: tuple[str, ...] = ()
    level_zero: str | None = None
    openvino: str | None = None
    ascend_driver: str | None = None
    notes: tuple[str, ...] = field(default=())

    def gpus_of(self, vendor: str) -> tuple[Gpu, ...]:
        return tuple(g for g in self.gpus if g.vendor == vendor)

    @property
    def summary(self) -> str:
        """One line for people: what matters for the choice."""
        parts = [self.os_name, self.arch]
        if self.emulation == "rosetta":
            parts[-1] += " (this shell runs x86_64 under Rosetta 2)"
        elif self.emulation:
            parts[-1] += f" (this process runs {self.process_arch} under emulation)"
        if self.libc in ("glibc", "musl"):
            parts.append(f"{self.libc} {self.libc_version or '?'}")
        if self.cpu.level:
            parts.append(self.cpu.level)
        if self.nvidia_driver:
            parts.append(f"NVIDIA driver {self.nvidia_driver}")
        if self.rocm_version:
            parts.append(f"ROCm {self.rocm_version}")
        if self.vulkan_gpu:
            parts.append(f"Vulkan on {self.vulkan_gpu}")
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "os": self.os, "os_name": self.os_name, "os_version": self.os_version,
            "distro": self.distro, "distro_like": list(self.distro_like),
            "kernel": self.kernel, "arch": self.arch, "process_arch": self.process_arch,
            "emulation": self.emulation, "can_emulate_x86_64": self.can_emulate_x86_64,
            "libc": self.libc, "libc_version": self.libc_version,
            "cpu": {"vendor": self.cpu.vendor, "model": self.cpu.model,
                    "level": self.cpu.level, "features": sorted(self.cpu.features),
                    "uarch": self.cpu.uarch},
            "gpus": [{"vendor": g.vendor, "name": g.name, "arch": g.arch} for g in self.gpus],
            "nvidia_driver": self.nvidia_driver,
            "rocm_version": self.rocm_version, "hip_runtime": self.hip_runtime,
            "vulkan_loader": self.vulkan_loader,
            "vulkan_icds": [{"name": i.name, "path": i.path, "cpu": i.cpu}
                            for i in self.vulkan_icds],
            "vulkan_gpu": self.vulkan_gpu, "opencl_icds": list(self.opencl_icds),
            "level_zero": self.level_zero, "openvino": self.openvino,
            "ascend_driver": self.ascend_driver, "notes": list(self.notes),
        }
