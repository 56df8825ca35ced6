"""The catalogue of compute backends and CPU levels: every fact kiln keeps about them, once.

Like ggml's backend registry, one record per backend says what the rest of kiln asks about it:

- ``name`` (the matrix's ``backend``), ``label`` (what users read: ``CUDA``, ``OpenVINO``);
- ``cmake_option``: the suffix of the project's CMake option that switches it on (``CUDA``;
  kiln.toml's ``[build] option_prefix`` goes in front: ``kiln.project.Names.option``), ``None``
  for the CPU, which is always built;
- ``tier``: its place in the install ranking, fastest first (equal tiers tie);
- where it may be built: the OSes and architectures it exists on, each with the message the
  matrix validation gives when an entry asks for another;
- what it is built with: the CI job's vendor compiler (``ci_toolchain``), the device-code
  compiler next to zig for local builds (``device_toolchain``), whether it can be built on the
  release host at all (``ci_only``), which device targets an entry must list;
- its wheel variant (the local version label and index path, also the Conan option value);
- its ``runtime``: what a host must have for the build to be worth installing (the ``Host``
  fields read, the GPU vendor required, how the driver floor compares); the check itself is
  named by ``runtime.check`` and lives with the ranking (``kiln.install.installer``), the
  install scripts carry their own copy in shell and PowerShell.

CPU levels are listed per architecture, lowest first: the x86-64 psABI levels (their features
come from archspec's ``x86_64_vN`` targets, named here), the Arm levels, the IBM Z levels (by
machine type). ``baseline`` marks the levels a build may be compiled for (``cpu_baseline`` in
the matrix); the others are levels a host can report.

This module sits at the bottom of the import graph: standard library and ``kiln.errors`` only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from kiln.errors import ConfigError

__all__ = [
    "APPLE_SILICON_LEVEL",
    "BACKENDS",
    "BACKEND_BY_NAME",
    "CPU_ARCHES",
    "CPU_ARCH_BY_NAME",
    "CPU_BASELINES",
    "CPU_FEATURES",
    "CPU_LEVELS",
    "DEVICE_CODE_BACKENDS",
    "EMULATED_X86_LEVEL",
    "FLOORS",
    "OPTION_PREFIX_RE",
    "UNKNOWN_TIER",
    "Backend",
    "CpuArch",
    "CpuFeature",
    "CpuLevel",
    "Placement",
    "Runtime",
    "backend",
    "cpu_arch_of_level",
    "feature_label",
    "level",
    "tiers",
    "wheel_variant",
]


# --------------------------------------------------------------------------------------------
# backends

# What kiln.toml's ``[build] option_prefix`` may be (kiln/project.py checks it the same way):
# the prefix of the project's own CMake options, ``MYPROJ_``.
OPTION_PREFIX_RE = re.compile(r"[A-Z][A-Z0-9]*_")
# The backends whose device code kiln itself handles, and so kiln.toml's [build.device_code]
# may name: compiled ahead of time on the build host (cuda, hip) or checked inside the archive
# (the OpenCL kernel sources).
DEVICE_CODE_BACKENDS = ("cuda", "hip", "opencl")


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Where a backend exists: ``values`` (OS or arch names; ``None``: all of them) and what
    the matrix says to an entry elsewhere (``message`` and ``fix`` may use ``{backend}``,
    ``{os}``, ``{arch}``)."""

    values: tuple[str, ...] | None
    message: str = ""
    fix: str = ""

    def allows(self, value: str) -> bool:
        return self.values is None or value in self.values


ANYWHERE = Placement(values=None)


@dataclass(frozen=True, kw_only=True)
class Runtime:
    """What a host needs for a backend's build to be worth installing.

    ``check``: the name of the check in ``kiln.install.installer`` (``RUNTIME_CHECKS``).
    ``gpu_vendor``: ``Host.gpus_of`` must list a GPU of this vendor (``None``: no GPU needed).
    ``host_fields``: the ``Host`` fields the check reads. ``floor``: how the host's version
    compares with the build's: ``"none"``; ``"min_driver"`` (at least the entry's
    ``min_driver``); ``"same-major"`` (the same major version as the entry's
    ``backend_version``, and at least it). ``missing``: the reason given when the runtime is
    absent (``{label}`` is the backend's label)."""

    check: str
    gpu_vendor: str | None
    host_fields: tuple[str, ...]
    floor: str = "none"
    missing: str = ""


FLOORS = ("none", "min_driver", "same-major")


@dataclass(frozen=True, kw_only=True)
class Backend:
    name: str
    label: str
    cmake_option: str | None
    tier: int
    oses: Placement = ANYWHERE
    arches: Placement = ANYWHERE
    versioned: bool = True
    # Why it cannot be built on the release host (then ``build: ci-only``); ``ci_only_strict``:
    # the rule holds for disabled entries too.
    ci_only: str | None = None
    ci_only_strict: bool = False
    # Vendor compiler of the CI job (``{version}``: the entry's backend_version).
    ci_toolchain: str | None = None
    # Device-code compiler used beside zig for local builds, by backend_version (``None``: any).
    device_toolchain: tuple[tuple[str | None, str], ...] = ()
    # Device code: whether an entry may list gpu_targets, and the kind it must list at least
    # one of (prefix, as shown, fix).
    device_code: bool = True
    required_target: tuple[str, str, str] | None = None
    # Wheel variant: a template with {version} and {version_digits}; ``None`` for the default
    # index (CPU). ``variant_options``: (option suffix, value, variant) overriding it when an
    # entry's ``cmake`` sets the project's option of that suffix to that value.
    variant: str | None = None
    variant_options: tuple[tuple[str, str, str], ...] = ()
    # Other names ``kiln install --backend`` accepts (also as ``<alias>-<version>``).
    aliases: tuple[str, ...] = ()
    runtime: Runtime | None = None
    # The file in recipes/ that ``kiln build`` reads (``None``: none yet, so it does not build).
    recipe: str | None = None

    def toolchain_for_device(self, version: str | None) -> str | None:
        table = dict(self.device_toolchain)
        return table.get(version, table.get(None))


_GPU_OSES = Placement(values=("linux", "windows"), message="{backend} does not exist on {os}",
                      fix="use cpu/vulkan on this OS or change os")
_X86_ONLY = Placement(values=("x86_64",), message="{backend} builds are x86_64 only in this "
                      "project", fix="set arch: x86_64")

BACKENDS: tuple[Backend, ...] = (
    Backend(name="cpu", label="CPU", cmake_option=None, tier=7, versioned=False,
            device_code=False, recipe="cpu.yaml"),
    Backend(name="cuda", label="CUDA", cmake_option="CUDA", tier=0, oses=_GPU_OSES,
            arches=_X86_ONLY,
            device_toolchain=(("12.4", "NVRTC 12.4 + ptxas"), ("13.3", "nvcc 13.3")),
            required_target=("sm_", "sm_XX", "add the SM list"),
            variant="cu{version_digits}",
            runtime=Runtime(check="cuda", gpu_vendor=None,
                            host_fields=("nvidia_driver", "gpus"), floor="min_driver"),
            recipe="cuda.yaml"),
    Backend(name="hip", label="HIP", cmake_option="HIP", tier=1, oses=_GPU_OSES,
            arches=_X86_ONLY, ci_only="ROCm 7.2 is not installable on the release host",
            ci_only_strict=True, ci_toolchain="hipcc (ROCm {version})",
            required_target=("gfx", "gfx", "add the gfx list"), variant="rocm{version}",
            aliases=("rocm",),
            runtime=Runtime(check="hip", gpu_vendor="amd",
                            host_fields=("gpus", "rocm_version", "hip_runtime"),
                            floor="same-major", missing="no AMD GPU found"),
            recipe="hip.yaml"),
    Backend(name="sycl", label="SYCL", cmake_option="SYCL", tier=2, oses=_GPU_OSES,
            arches=_X86_ONLY, ci_only="{backend} needs a compiler that no reachable registry "
            "ships", ci_toolchain="icx (oneAPI DPC++ {version})", variant="sycl",
            variant_options=(("SYCL_F16", "ON", "syclfp16"),),
            runtime=Runtime(check="sycl", gpu_vendor="intel", host_fields=("gpus", "level_zero"),
                            missing="no Intel GPU found ({label} is used for Intel GPUs)"),
            recipe="sycl.yaml"),
    Backend(name="vulkan", label="Vulkan", cmake_option="VULKAN", tier=4,
            oses=Placement(values=("linux", "windows", "android"),
                           message="Vulkan on macOS needs MoltenVK, which this project does "
                           "not ship", fix="use backend: cpu"),
            device_toolchain=((None, "glslc"),), variant="vulkan",
            runtime=Runtime(check="vulkan", gpu_vendor=None,
                            host_fields=("vulkan_loader", "vulkan_gpu", "vulkan_icds")),
            recipe="vulkan.yaml"),
    Backend(name="opencl", label="OpenCL", cmake_option="OPENCL", tier=5,
            device_toolchain=((None, "OpenCL C source (built at run time)"),), variant="opencl",
            runtime=Runtime(check="opencl", gpu_vendor="qualcomm",
                            host_fields=("gpus", "opencl_icds"),
                            missing="no Adreno GPU (this build's OpenCL kernels are tuned for "
                            "Adreno)"),
            recipe="opencl.yaml"),
    Backend(name="openvino", label="OpenVINO", cmake_option="OPENVINO", tier=3,
            oses=Placement(values=("linux", "windows"),
                           message="OpenVINO builds exist for Linux and Windows only",
                           fix="set os: linux or windows"),
            device_toolchain=((None, "OpenVINO 2026.2 C API"),), variant="openvino",
            runtime=Runtime(check="openvino", gpu_vendor="intel",
                            host_fields=("gpus", "openvino"),
                            missing="no Intel GPU found ({label} is used for Intel GPUs)"),
            recipe="openvino.yaml"),
    Backend(name="cann", label="CANN", cmake_option="CANN", tier=0,
            oses=Placement(values=("linux",), message="CANN (Ascend) exists only on Linux",
                           fix="set os: linux"),
            ci_only="{backend} needs a compiler that no reachable registry ships",
            ci_toolchain="CANN {version} + gcc", variant="cann",
            runtime=Runtime(check="cann", gpu_vendor=None, host_fields=("ascend_driver",),
                            missing="no Ascend driver (/usr/local/Ascend/driver/version.info)")),
    Backend(name="kleidiai", label="KleidiAI", cmake_option="KLEIDIAI", tier=6,
            arches=Placement(values=("aarch64",), message="KleidiAI kernels are Arm-only",
                             fix="set arch: aarch64"),
            ci_only="{backend} needs a compiler that no reachable registry ships",
            ci_toolchain="clang (Xcode) + KleidiAI {version}", device_code=False,
            variant="kleidiai"),
)
BACKEND_BY_NAME: Mapping[str, Backend] = {b.name: b for b in BACKENDS}
# The tier of a backend the catalogue does not know (an old kiln reading a newer manifest):
# after every known one.
UNKNOWN_TIER = len(BACKENDS)


def backend(name: str) -> Backend:
    try:
        return BACKEND_BY_NAME[name]
    except KeyError:
        raise ConfigError(f"unknown backend '{name}'",
                          hint="use one of " + ", ".join(b.name for b in BACKENDS)) from None


def tiers() -> dict[str, int]:
    """Backend name -> install tier, fastest first."""
    return {b.name: b.tier for b in sorted(BACKENDS, key=lambda b: b.tier)}


def _sets_option(cmake: tuple[tuple[str, str], ...], suffix: str, value: str,
                 option_prefix: str | None) -> bool:
    """``cmake`` sets the option ``suffix`` (after the project's prefix) to ``value``. Without
    the prefix, any prefix kiln.toml allows (``OPTION_PREFIX_RE``) counts."""
    for key, got in cmake:
        if got != value or not key.endswith(suffix):
            continue
        prefix = key[:len(key) - len(suffix)]
        if option_prefix is None:
            if OPTION_PREFIX_RE.fullmatch(prefix):
                return True
        elif prefix == option_prefix:
            return True
    return False


def wheel_variant(name: str, version: str | None, cmake: tuple[tuple[str, str], ...] = (),
                  *, option_prefix: str | None = None) -> str | None:
    """The variant of a build of backend ``name`` (``None``: the CPU's default index).
    ``cmake`` is the entry's own options, full names: ``option_prefix`` is the project's
    (kiln.toml's ``[build] option_prefix``), or ``None`` to accept any prefix."""
    b = backend(name)
    for suffix, value, chosen in b.variant_options:
        if _sets_option(cmake, suffix, value, option_prefix):
            return chosen
    if b.variant is None:
        return None
    text = version or ""
    return b.variant.format(version=text, version_digits=text.replace(".", ""))


# --------------------------------------------------------------------------------------------
# CPU levels and features


@dataclass(frozen=True, kw_only=True)
class CpuLevel:
    name: str
    arch: str
    # A build may be compiled for it (the matrix's cpu_baseline).
    baseline: bool = True
    # x86-64: archspec's target whose feature list defines the level.
    archspec: str | None = None
    # Arm: the Linux /proc/cpuinfo Features that mark it (all of them).
    cpuinfo_flags: tuple[str, ...] = ()
    # IBM Z: the machine types of /proc/cpuinfo that are this level.
    machines: tuple[str, ...] = ()
    # What a CPU below this level lacks, as a user reads it ("" when nothing short says it).
    missing: str = ""


@dataclass(frozen=True, kw_only=True)
class CpuFeature:
    """A kernel level chosen at run time (``cpu_dispatch``): how a user reads it, and the
    Linux cpuinfo flags that mean the CPU has it (all of ``all_of`` and one of ``any_of``)."""

    name: str
    label: str
    all_of: tuple[str, ...] = ()
    any_of: tuple[str, ...] = ()

    def present(self, flags: frozenset[str]) -> bool:
        return set(self.all_of) <= flags and (not self.any_of or bool(flags & set(self.any_of)))


@dataclass(frozen=True, kw_only=True)
class CpuArch:
    arch: str
    levels: tuple[CpuLevel, ...]  # lowest first
    noun: str  # "an x86-64 level", for messages
    features: tuple[CpuFeature, ...]
    # Every CPU of the architecture meets the first level (x86-64, armv8-a), so a host whose
    # level is unknown still runs it. IBM Z before z13 exists, so z13 is checked.
    first_implied: bool = True

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(lv.name for lv in self.levels)

    @property
    def baselines(self) -> tuple[str, ...]:
        return tuple(lv.name for lv in self.levels if lv.baseline)

    def baseline_hint(self) -> str:
        """How the matrix says which levels to use: ``use a, b or c`` (``use a ... d``)."""
        names = self.baselines
        if len(names) > 3:
            return f"use {names[0]} ... {names[-1]}"
        return "use " + ", ".join(names[:-1]) + f" or {names[-1]}"


CPU_ARCHES: tuple[CpuArch, ...] = (
    CpuArch(arch="x86_64", noun="an x86-64 level", levels=(
        CpuLevel(name="x86-64", arch="x86_64"),
        CpuLevel(name="x86-64-v2", arch="x86_64", archspec="x86_64_v2",
                 missing="SSE4.2/POPCNT"),
        CpuLevel(name="x86-64-v3", arch="x86_64", archspec="x86_64_v3", missing="AVX2/FMA"),
        CpuLevel(name="x86-64-v4", arch="x86_64", archspec="x86_64_v4"),
    ), features=(
        CpuFeature(name="sse4.2", label="SSE4.2", all_of=("sse4_2",)),
        CpuFeature(name="avx2", label="AVX2", all_of=("avx2",)),
        CpuFeature(name="avx512", label="AVX-512", all_of=("avx512f", "avx512bw", "avx512vl")),
        CpuFeature(name="avxvnni", label="AVX-VNNI", any_of=("avx_vnni", "avx512_vnni")),
    )),
    CpuArch(arch="aarch64", noun="an Arm level", levels=(
        CpuLevel(name="armv8-a", arch="aarch64"),
        # Armv8.2-A made half-precision arithmetic and DC CVAP mandatory.
        CpuLevel(name="armv8.2-a", arch="aarch64", cpuinfo_flags=("asimdhp", "fphp", "dcpop")),
        CpuLevel(name="apple-m1", arch="aarch64", missing="Apple Silicon"),
    ), features=(
        CpuFeature(name="neon", label="NEON", any_of=("asimd", "neon")),
        CpuFeature(name="dotprod", label="dotprod", all_of=("asimddp",)),
        CpuFeature(name="i8mm", label="i8mm", all_of=("i8mm",)),
        CpuFeature(name="sve", label="SVE", all_of=("sve",)),
    )),
    CpuArch(arch="s390x", noun="an s390x level", first_implied=False, levels=(
        CpuLevel(name="z13", arch="s390x", machines=("2964", "2965")),
        CpuLevel(name="z14", arch="s390x", machines=("3906", "3907")),
        CpuLevel(name="z15", arch="s390x", machines=("8561", "8562")),
        # Newer machines run every z15 build; no build targets them yet.
        CpuLevel(name="z16", arch="s390x", baseline=False, machines=("3931", "3932")),
        CpuLevel(name="z17", arch="s390x", baseline=False, machines=("9175", "9176")),
    ), features=(
        CpuFeature(name="vxe", label="VXE", all_of=("vxe",)),
    )),
)
CPU_ARCH_BY_NAME: Mapping[str, CpuArch] = {a.arch: a for a in CPU_ARCHES}
CPU_LEVELS: tuple[CpuLevel, ...] = tuple(lv for a in CPU_ARCHES for lv in a.levels)
CPU_BASELINES: tuple[str, ...] = tuple(lv.name for lv in CPU_LEVELS if lv.baseline)
CPU_FEATURES: tuple[CpuFeature, ...] = tuple(f for a in CPU_ARCHES for f in a.features)
_LEVEL_BY_NAME = {lv.name: lv for lv in CPU_LEVELS}
_FEATURE_BY_NAME = {f.name: f for f in CPU_FEATURES}
# The level every Apple Silicon Mac reports (macOS tells no Arm feature flags).
APPLE_SILICON_LEVEL = "apple-m1"
# The level an x86-64 emulator provides: Rosetta 2 and Windows' Prism both run SSE4.2.
EMULATED_X86_LEVEL = "x86-64-v2"


def level(name: str) -> CpuLevel:
    try:
        return _LEVEL_BY_NAME[name]
    except KeyError:
        raise ConfigError(f"unknown CPU level '{name}'",
                          hint="use one of " + ", ".join(_LEVEL_BY_NAME)) from None


def cpu_arch_of_level(name: str) -> CpuArch | None:
    """The architecture whose level list holds ``name``."""
    lv = _LEVEL_BY_NAME.get(name)
    return None if lv is None else CPU_ARCH_BY_NAME[lv.arch]


def feature_label(name: str) -> str:
    f = _FEATURE_BY_NAME.get(name)
    return f.label if f is not None else name
