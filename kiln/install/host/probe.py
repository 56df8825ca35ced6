"""Probe a machine into a ``Host``: OS, architecture and emulation, C library, CPU level and
features, GPUs and their runtimes (NVIDIA driver, ROCm / HIP, Vulkan loader and drivers,
OpenCL drivers, Intel Level Zero and OpenVINO, Ascend).

Everything is read through a ``kiln.install.host.source.Source``, files first and tools second:
``/proc/driver/nvidia/version`` before ``nvidia-smi``, ``/sys/class/drm/*/device/uevent``
before ``lspci``. A probe that finds nothing answers ``None``; one that finds something odd
adds a note, so ``kiln install --dry-run`` can say what it could not tell.

CPU levels use archspec (Spack's CPU database, kept up to date by the Spack and
archspec maintainers): the x86-64-v2/v3/v4 feature lists and the microarchitecture names
come from its ``TARGETS`` table rather than from a list written here. archspec's own
detection reads ``/proc/cpuinfo`` itself and checks the real host, so it is not called:
kiln parses cpuinfo through its ``Source`` and hands the flags to archspec's table.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from kiln.install.host.facts import Cpu, Gpu, Host, VulkanIcd
from kiln.install.host.source import Source
from kiln.matrix.catalogue import APPLE_SILICON_LEVEL, CPU_ARCH_BY_NAME

__all__ = [
    "archspec_targets",
    "features_of",
    "probe",
    "x86_flags",
    "x86_level",
    "x86_uarch",
]

# platform.machine() spellings -> matrix names
ARCH_ALIASES = {
    "x86_64": "x86_64", "amd64": "x86_64", "x64": "x86_64", "em64t": "x86_64",
    "aarch64": "aarch64", "arm64": "aarch64", "armv8l": "aarch64", "arm64e": "aarch64",
    "s390x": "s390x", "x86": "x86", "i386": "x86", "i686": "x86",
}
MULTIARCH = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu",
             "s390x": "s390x-linux-gnu"}
PCI_VENDORS = {"10de": "nvidia", "1002": "amd", "1022": "amd", "8086": "intel",
               "5143": "qualcomm", "106b": "apple", "13b5": "arm", "1af4": "virtio"}
DRM_DRIVERS = {"nvidia": "nvidia", "nouveau": "nvidia", "amdgpu": "amd", "radeon": "amd",
               "i915": "intel", "xe": "intel", "msm": "qualcomm", "msm_dpu": "qualcomm",
               "msm_drm": "qualcomm", "panfrost": "arm", "panthor": "arm", "asahi": "apple",
               "virtio-pci": "virtio", "virtio_gpu": "virtio"}
# Vulkan driver manifests (icd.d/*.json stems) -> the GPU vendor they drive. Mesa installs
# every driver whatever the hardware, so a manifest counts only with a GPU of its vendor.
ICD_VENDORS = {"nvidia": "nvidia", "nouveau": "nvidia", "radeon": "amd", "amd": "amd",
               "intel": "intel", "freedreno": "qualcomm", "panfrost": "arm", "panvk": "arm",
               "asahi": "apple", "virtio": "virtio", "dzn": "other", "broadcom": "other",
               "powervr": "other"}
VENDOR_LABELS = {"nvidia": "NVIDIA", "amd": "AMD", "intel": "Intel", "qualcomm": "Qualcomm",
                 "apple": "Apple", "arm": "Arm", "virtio": "virtio"}
# When several GPUs could run Vulkan, the first vendor here is named (discrete cards first).
GPU_PREFERENCE = ("nvidia", "amd", "intel", "qualcomm", "apple", "arm", "virtio", "other")
CPU_ICDS = ("lvp", "lavapipe", "swiftshader", "llvmpipe")
# The CPU levels and features of each architecture are the catalogue's (kiln/matrix/catalogue.py).
_X86 = CPU_ARCH_BY_NAME["x86_64"]
_ARM = CPU_ARCH_BY_NAME["aarch64"]
_Z = CPU_ARCH_BY_NAME["s390x"]
# IBM Z machine types -> the z level the matrix's cpu_baseline uses.
Z_MACHINES = {m: lv.name for lv in _Z.levels for m in lv.machines}
NVIDIA_SMI_QUERY = ("--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader")
WIN_GPU_QUERY = ("powershell", "-NoProfile", "-NonInteractive", "-Command",
                 "Get-CimInstance Win32_VideoController | ForEach-Object { $_.Name }")
WIN_ENV_KEY = r"HKLM\SYSTEM\CurrentControlSet\Control\Session Manager\Environment"


def probe(src: Source) -> Host:
    """Read every fact the ranking needs from ``src``."""
    system = src.system()
    if system == "Darwin":
        return _macos(src)
    if system == "Windows":
        return _windows(src)
    if system in ("Linux", "Android"):
        return _linux(src, android=system == "Android" or _is_android(src))
    arch = ARCH_ALIASES.get(src.machine().lower(), src.machine().lower())
    return Host(os=system.lower(), os_name=system, os_version=None, distro=None,
                distro_like=(), kernel=None, arch=arch, process_arch=arch, emulation=None,
                can_emulate_x86_64=False, libc="none", libc_version=None,
                cpu=Cpu(vendor=None, model=None, level=None, features=frozenset()),
                notes=(f"{system} is not a platform kiln builds for",))


# --------------------------------------------------------------------------------------------
# Linux and Android


def _is_android(src: Source) -> bool:
    return bool(src.env("ANDROID_ROOT") or src.env("TERMUX_VERSION")
                or src.exists("/system/build.prop"))


def _os_release(src: Source) -> dict[str, str]:
    text = src.read("/etc/os-release") or src.read("/usr/lib/os-release") or ""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            out[key.strip()] = value.strip().strip('"').strip("'")
    return out


def _linux(src: Source, *, android: bool) -> Host:
    notes: list[str] = []
    arch = ARCH_ALIASES.get(src.machine().lower(), src.machine().lower())
    kernel = (src.read("/proc/sys/kernel/osrelease") or "").strip() or None
    if android:
        api = _first_line(src.tool(["getprop", "ro.build.version.sdk"]))
        release = _first_line(src.tool(["getprop", "ro.build.version.release"]))
        if api is None:
            notes.append("Android API level unknown (getprop did not answer)")
        name = f"Android {release or '?'} (API {api or '?'})"
        os_name, os_version, distro = "android", api, None
        like: tuple[str, ...] = ()
        libc, libc_version = "bionic", None
    else:
        rel = _os_release(src)
        distro = rel.get("ID", "").lower() or None
        like = tuple(rel.get("ID_LIKE", "").lower().split())
        name = rel.get("PRETTY_NAME") or f"{rel.get('NAME', 'Linux')} {rel.get('VERSION_ID', '')}"
        os_name, os_version = "linux", rel.get("VERSION_ID")
        libc, libc_version = _linux_libc(src, arch, notes)
    cpu = _linux_cpu(src, arch, notes)
    gpus = _linux_gpus(src)
    if android:
        model = (src.read("/sys/class/kgsl/kgsl-3d0/gpu_model") or "").strip()
        if model:
            gpus = (*gpus, Gpu(vendor="qualcomm", name=model))
    nvidia_driver, gpus = _linux_nvidia(src, kernel, gpus, notes)
    rocm, hip = _rocm(src)
    libdirs = _libdirs(arch)
    loader = _find(src, libdirs, ("libvulkan.so.1",))
    icds = _linux_vulkan_icds(src)
    vulkan_gpu = _vulkan_gpu(src, loader, icds, gpus) if loader else None
    opencl = tuple(n for n in src.listdir("/etc/OpenCL/vendors") if n.endswith(".icd"))
    level_zero = _find(src, libdirs, ("libze_loader.so.1",))
    openvino = _linux_openvino(src, libdirs, arch)
    ascend = _ascend(src)
    return Host(
        os=os_name, os_name=name.strip(), os_version=os_version, distro=distro,
        distro_like=like, kernel=kernel, arch=arch, process_arch=arch, emulation=None,
        can_emulate_x86_64=False, libc=libc, libc_version=libc_version, cpu=cpu, gpus=gpus,
        nvidia_driver=nvidia_driver, rocm_version=rocm, hip_runtime=hip,
        vulkan_loader=loader, vulkan_icds=icds, vulkan_gpu=vulkan_gpu, opencl_icds=opencl,
        level_zero=level_zero, openvino=openvino, ascend_driver=ascend, notes=tuple(notes))


def _first_line(out: object) -> str | None:
    from kiln.install.host.source import Output

    if not isinstance(out, Output) or out.rc != 0:
        return None
    lines = out.stdout.strip().splitlines()
    return lines[0].strip() if lines and lines[0].strip() else None


def _linux_libc(src: Source, arch: str, notes: list[str]) -> tuple[str, str | None]:
    out = src.tool(["getconf", "GNU_LIBC_VERSION"])
    if out is not None and out.rc == 0:
        m = re.search(r"glibc\s+(\d+\.\d+)", out.stdout)
        if m:
            return "glibc", m.group(1)
        if out.stdout.strip() == "glibc":
            # Only in machine profiles that know the C library but not its version (the
            # visitors of a release page: a browser shows that much and no more).
            notes.append("glibc version unknown")
            return "glibc", None
    ldd = src.tool(["ldd", "--version"])
    text = ldd.text if ldd is not None else ""
    musl_loader = any(n.startswith("ld-musl-") for n in src.listdir("/lib"))
    if "musl" in text or musl_loader:
        m = re.search(r"Version\s+(\d+\.\d+(?:\.\d+)?)", text)
        if m is None:
            notes.append("musl C library found, but its version could not be read")
        return "musl", m.group(1) if m else None
    m = re.search(r"(?:GNU libc|GLIBC)[^\n]*?\s(\d+\.\d+)\s*\Z", text.splitlines()[0]
                  if text else "")
    if m:
        return "glibc", m.group(1)
    notes.append("the C library could not be identified (no getconf, no ldd)")
    return "unknown", None


def _cpuinfo_first(src: Source) -> dict[str, str]:
    """The first processor block of /proc/cpuinfo (s390x lists per-CPU lines after it)."""
    data: dict[str, str] = {}
    for line in (src.read("/proc/cpuinfo") or "").splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if data:
                break
            continue
        data.setdefault(key.strip(), value.strip())
    return data


def _linux_cpu(src: Source, arch: str, notes: list[str]) -> Cpu:
    info = _cpuinfo_first(src)
    if not info:
        notes.append("/proc/cpuinfo could not be read: CPU level unknown")
        return Cpu(vendor=None, model=None, level=None, features=frozenset())
    if arch == "x86_64":
        flags = x86_flags(info.get("flags", "").split())
        vendor = info.get("vendor_id")
        return Cpu(vendor=vendor, model=info.get("model name"), level=x86_level(flags),
                   features=_x86_features(flags), uarch=x86_uarch(flags, vendor))
    if arch == "aarch64":
        flags = frozenset(info.get("Features", "").split())
        return Cpu(vendor=info.get("CPU implementer"), model=info.get("model name"),
                   level=_arm_level(flags), features=_arm_features(flags),
                   uarch=_arm_uarch(info.get("CPU implementer"), info.get("CPU part")))
    if arch == "s390x":
        return _s390x_cpu(src, info)
    return Cpu(vendor=None, model=info.get("model name"), level=None, features=frozenset())


def _s390x_cpu(src: Source, info: dict[str, str]) -> Cpu:
    text = src.read("/proc/cpuinfo") or ""
    m = re.search(r"machine\s*=\s*([0-9A-Fa-f]{4})", text)
    level = Z_MACHINES.get(m.group(1)) if m else None
    feats = frozenset(info.get("features", "").split())
    return Cpu(vendor=info.get("vendor_id"), model=f"IBM {m.group(1)}" if m else None,
               level=level, features=frozenset(f.name for f in _Z.features if f.present(feats)))


def archspec_targets() -> dict[str, object]:
    import archspec.cpu  # type: ignore[import-untyped]

    targets: dict[str, object] = dict(archspec.cpu.TARGETS)
    return targets


def x86_flags(raw: Iterable[str], *, darwin: bool = False) -> frozenset[str]:
    """cpuinfo flags in archspec's vocabulary: Linux names SSE3 ``pni``; macOS's sysctl
    spellings are turned into Linux ones with archspec's own conversion table."""
    import archspec.cpu.schema  # type: ignore[import-untyped]

    flags = {f.lower() for f in raw}
    if darwin:
        conversions = archspec.cpu.schema.TARGETS_JSON["conversions"]["darwin_flags"]
        for mac, linux in conversions.items():
            if all(x in flags for x in str(mac).split()):
                flags.update(str(linux).split())
    if flags & {"pni", "ssse3"}:
        flags.add("sse3")  # archspec does the same when it builds a Microarchitecture
    return frozenset(flags)


def features_of(target: object) -> frozenset[str]:
    return frozenset(str(f) for f in getattr(target, "features", ()))


def x86_level(flags: Iterable[str]) -> str:
    """The highest x86-64 psABI level (x86-64, -v2, -v3, -v4) whose features ``flags`` has,
    with the feature lists from archspec."""
    have = frozenset(flags)
    targets = archspec_targets()
    level = _X86.levels[0].name
    for lv in _X86.levels[1:]:
        if lv.archspec is not None and features_of(targets[lv.archspec]) <= have:
            level = lv.name
        else:
            break
    return level


def x86_uarch(flags: Iterable[str], vendor: str | None) -> str | None:
    """archspec's name for the newest microarchitecture of ``vendor`` that ``flags`` covers."""
    have = frozenset(flags)
    best: tuple[int, int, str] | None = None
    for name, target in archspec_targets().items():
        family = str(getattr(target, "family", ""))
        if family != "x86_64" or str(getattr(target, "vendor", "")) != vendor:
            continue
        feats = features_of(target)
        if feats <= have:
            key = (len(getattr(target, "ancestors", ())), len(feats), name)
            if best is None or key > best:
                best = key
    return best[2] if best else None


def _arm_uarch(implementer: str | None, part: str | None) -> str | None:
    """archspec's name for an Arm core, by implementer and part number (archspec's table)."""
    import archspec.cpu.schema

    if not implementer or not part:
        return None
    vendors = archspec.cpu.schema.TARGETS_JSON["conversions"]["arm_vendors"]
    vendor = str(vendors.get(implementer.lower(), vendors.get(implementer, "")))
    for name, target in archspec_targets().items():
        if str(getattr(target, "family", "")) == "aarch64" and \
                str(getattr(target, "vendor", "")) == vendor and \
                str(getattr(target, "cpu_part", "")).lower() == part.lower():
            return name
    return None


def _x86_features(flags: frozenset[str]) -> frozenset[str]:
    return frozenset(f.name for f in _X86.features if f.present(flags))


def _arm_features(flags: frozenset[str]) -> frozenset[str]:
    return frozenset(f.name for f in _ARM.features if f.present(flags))


def _arm_level(flags: frozenset[str]) -> str:
    """The highest Arm level whose cpuinfo flags ``flags`` has (levels without flags, such
    as apple-m1, are not told by cpuinfo)."""
    level = _ARM.levels[0].name
    for lv in _ARM.levels[1:]:
        if lv.cpuinfo_flags and set(lv.cpuinfo_flags) <= flags:
            level = lv.name
    return level


def _pci_vendor(uevent: str) -> str | None:
    m = re.search(r"^PCI_ID=([0-9A-Fa-f]{4}):", uevent, re.M)
    return PCI_VENDORS.get(m.group(1).lower(), "other") if m else None


def _linux_gpus(src: Source) -> tuple[Gpu, ...]:
    gpus: list[Gpu] = []
    seen: set[str] = set()
    for card in src.listdir("/sys/class/drm"):
        if not re.fullmatch(r"card\d+", card):
            continue
        uevent = src.read(f"/sys/class/drm/{card}/device/uevent") or ""
        m = re.search(r"^DRIVER=(\S+)", uevent, re.M)
        driver = m.group(1) if m else ""
        vendor = _pci_vendor(uevent) or DRM_DRIVERS.get(driver)
        if vendor is None or (vendor == "virtio" and not driver):
            continue
        slot = re.search(r"^PCI_SLOT_NAME=(\S+)", uevent, re.M)
        key = slot.group(1) if slot else card
        if key in seen:
            continue
        seen.add(key)
        label = VENDOR_LABELS.get(vendor, vendor)
        gpus.append(Gpu(vendor=vendor, name=f"{label} GPU ({driver or 'no driver'})"))
    # AMD gfx targets from the kernel's KFD topology (CPU nodes report 0).
    targets = []
    for node in src.listdir("/sys/class/kfd/kfd/topology/nodes"):
        props = src.read(f"/sys/class/kfd/kfd/topology/nodes/{node}/properties") or ""
        m = re.search(r"^gfx_target_version\s+(\d+)", props, re.M)
        if m and int(m.group(1)):
            v = int(m.group(1))
            targets.append(f"gfx{v // 10000}{(v // 100) % 100:x}{v % 100:x}")
    if targets:
        gpus = [g for g in gpus if g.vendor != "amd"] + [
            Gpu(vendor="amd", name=f"AMD GPU {t}", arch=t) for t in targets]
    return tuple(gpus)


def _linux_nvidia(src: Source, kernel: str | None, gpus: tuple[Gpu, ...],
                  notes: list[str]) -> tuple[str | None, tuple[Gpu, ...]]:
    driver = None
    text = src.read("/proc/driver/nvidia/version") or ""
    m = re.search(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+\.\d+(?:\.\d+)?)", text)
    if m:
        driver = m.group(1)
    smi = ["nvidia-smi", *NVIDIA_SMI_QUERY]
    out = src.tool(smi)
    if out is None and kernel and "microsoft" in kernel.lower():
        out = src.tool(["/usr/lib/wsl/lib/nvidia-smi", *NVIDIA_SMI_QUERY])
    found = _parse_nvidia_smi(out)
    if found:
        driver = driver or found[0][1]
        gpus = tuple(g for g in gpus if g.vendor != "nvidia") + tuple(
            Gpu(vendor="nvidia", name=name, arch=cap) for name, _drv, cap in found)
    elif driver and not any(g.vendor == "nvidia" for g in gpus):
        gpus = (*gpus, Gpu(vendor="nvidia", name="NVIDIA GPU"))
    if driver and not found:
        notes.append("nvidia-smi did not answer: the GPU's compute capability is unknown, "
                     "so CUDA builds are checked by driver version only")
    return driver, gpus


def _parse_nvidia_smi(out: object) -> list[tuple[str, str, str | None]]:
    from kiln.install.host.source import Output

    if not isinstance(out, Output) or out.rc != 0:
        return []
    rows = []
    for line in out.stdout.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) >= 2 and re.match(r"^\d+\.\d+", cells[1]):
            cap = cells[2] if len(cells) > 2 and re.fullmatch(r"\d+\.\d+", cells[2]) else None
            rows.append((cells[0], cells[1], cap))
    return rows


def _rocm(src: Source) -> tuple[str | None, str | None]:
    roots = [r for r in (src.env("ROCM_PATH"), "/opt/rocm") if r]
    for root in roots:
        text = src.read(f"{root}/.info/version")
        if text:
            m = re.match(r"\s*(\d+\.\d+(?:\.\d+)?)", text)
            lib = _find(src, (f"{root}/lib",), ("libamdhip64.so.7", "libamdhip64.so.6",
                                                  "libamdhip64.so"))
            return (m.group(1) if m else None), lib
    return None, None


def _libdirs(arch: str) -> tuple[str, ...]:
    multi = MULTIARCH.get(arch, f"{arch}-linux-gnu")
    return (f"/usr/lib/{multi}", f"/lib/{multi}", "/usr/lib64", "/lib64", "/usr/lib",
            "/usr/local/lib", "/system/lib64")


def _find(src: Source, dirs: Iterable[str], names: Iterable[str]) -> str | None:
    for d in dirs:
        for n in names:
            if src.exists(f"{d}/{n}"):
                return f"{d}/{n}"
    return None


def _linux_vulkan_icds(src: Source) -> tuple[VulkanIcd, ...]:
    paths: list[str] = []
    override = src.env("VK_DRIVER_FILES") or src.env("VK_ICD_FILENAMES")
    if override:
        paths = [p for p in override.split(":") if p]
    else:
        for d in ("/etc/vulkan/icd.d", "/usr/local/share/vulkan/icd.d",
                  "/usr/share/vulkan/icd.d"):
            paths += [f"{d}/{n}" for n in src.listdir(d) if n.endswith(".json")]
    out = []
    for p in paths:
        stem = p.rsplit("/", 1)[-1].removesuffix(".json")
        out.append(VulkanIcd(name=stem, path=p, cpu=any(c in stem.lower() for c in CPU_ICDS)))
    return tuple(out)


def _icd_vendor(icd: VulkanIcd) -> str | None:
    low = icd.name.lower()
    for key, vendor in ICD_VENDORS.items():
        if low.startswith(key):
            return vendor
    return None


def _vulkan_gpu(src: Source, loader: str, icds: tuple[VulkanIcd, ...],
                gpus: tuple[Gpu, ...]) -> str | None:
    """A GPU that Vulkan drives, or ``None``: ``vulkaninfo --summary`` when installed (it asks
    the drivers), otherwise a GPU driver manifest whose vendor has a GPU in this machine."""
    out = src.tool(["vulkaninfo", "--summary"])
    if out is not None and out.rc == 0:
        name = None
        for line in out.stdout.splitlines():
            m = re.match(r"\s*deviceName\s*=\s*(.+)", line)
            if m:
                name = m.group(1).strip()
            t = re.match(r"\s*deviceType\s*=\s*PHYSICAL_DEVICE_TYPE_(\w+)", line)
            if t and t.group(1) in ("DISCRETE_GPU", "INTEGRATED_GPU", "VIRTUAL_GPU") and name:
                return name
        return None
    drivers = {_icd_vendor(i): i for i in icds if not i.cpu}
    for gpu in sorted(gpus, key=lambda g: GPU_PREFERENCE.index(g.vendor)):
        icd = drivers.get(gpu.vendor)
        if icd is not None:
            return f"{gpu.name} ({icd.name})"
    return None


def _linux_openvino(src: Source, libdirs: tuple[str, ...], arch: str) -> str | None:
    """Where the project's OpenVINO backend would find the runtime, in its order: the archive
    layout under ``INTEL_OPENVINO_DIR``, the library path, the system directories,
    ``/opt/intel/openvino*``, and a pip install in the active virtual environment. pip's wheel
    ships only the versioned ``libopenvino_c.so.<YYMP>``, so any version counts."""
    sub = "aarch64" if arch == "aarch64" else "intel64"
    root = src.env("INTEL_OPENVINO_DIR")
    dirs = [f"{root}/runtime/lib/{sub}"] if root else []
    dirs += [d for d in (src.env("LD_LIBRARY_PATH") or "").split(":") if d]
    dirs += libdirs
    dirs += [f"/opt/intel/{name}/runtime/lib/{sub}"
             for name in sorted(src.listdir("/opt/intel"), reverse=True)
             if name.startswith("openvino")]
    venv = src.env("VIRTUAL_ENV")
    if venv:
        for lib in ("lib", "lib64"):
            dirs += [f"{venv}/{lib}/{py}/site-packages/openvino/libs"
                     for py in sorted(src.listdir(f"{venv}/{lib}")) if py.startswith("python3")]
    for d in dirs:
        found = _find(src, (d,), ("libopenvino_c.so",))
        if found:
            return found
        versioned = sorted((n for n in src.listdir(d) if n.startswith("libopenvino_c.so.")),
                           reverse=True)
        if versioned:
            return f"{d}/{versioned[0]}"
    return None


def _ascend(src: Source) -> str | None:
    text = src.read("/usr/local/Ascend/driver/version.info") or ""
    m = re.search(r"^Version\s*=\s*(\S+)", text, re.M)
    return m.group(1) if m else None


# --------------------------------------------------------------------------------------------
# macOS


def _sysctl(src: Source, name: str) -> str | None:
    return _first_line(src.tool(["sysctl", "-n", name]))


def _macos(src: Source) -> Host:
    notes: list[str] = []
    version = _first_line(src.tool(["sw_vers", "-productVersion"]))
    if version is None:
        notes.append("sw_vers did not answer: macOS version unknown")
    process = ARCH_ALIASES.get(src.machine().lower(), src.machine().lower())
    apple_silicon = _sysctl(src, "hw.optional.arm64") == "1"
    translated = _sysctl(src, "sysctl.proc_translated") == "1"
    arch = "aarch64" if apple_silicon else process
    brand = _sysctl(src, "machdep.cpu.brand_string")
    if arch == "aarch64":
        cpu = Cpu(vendor="apple", model=brand, level=APPLE_SILICON_LEVEL,
                  features=frozenset({"neon", "dotprod"}),
                  uarch=_apple_uarch(brand))
    else:
        raw = " ".join(filter(None, (_sysctl(src, "machdep.cpu.features"),
                                     _sysctl(src, "machdep.cpu.leaf7_features"),
                                     _sysctl(src, "machdep.cpu.extfeatures"))))
        flags = x86_flags(raw.split(), darwin=True)
        if not flags:
            notes.append("sysctl machdep.cpu.features did not answer: CPU level unknown")
        cpu = Cpu(vendor="intel", model=brand, level=x86_level(flags) if flags else None,
                  features=_x86_features(flags), uarch=x86_uarch(flags, "GenuineIntel"))
    rosetta = translated or src.exists("/Library/Apple/usr/share/rosetta/rosetta")
    return Host(
        os="macos", os_name=f"macOS {version or '?'}", os_version=version, distro=None,
        distro_like=(), kernel=None, arch=arch, process_arch=process,
        emulation="rosetta" if translated else None,
        can_emulate_x86_64=apple_silicon and rosetta, libc="none", libc_version=None,
        cpu=cpu, gpus=(Gpu(vendor="apple", name=brand or "Apple GPU"),) if apple_silicon
        else (), notes=tuple(notes))


def _apple_uarch(brand: str | None) -> str | None:
    m = re.search(r"Apple (M\d)", brand or "")
    return m.group(1).lower() if m else None


# --------------------------------------------------------------------------------------------
# Windows


def _windows(src: Source) -> Host:
    notes: list[str] = []
    ver = src.tool(["cmd", "/c", "ver"])
    m = re.search(r"Version\s+(\d+)\.(\d+)\.(\d+)", ver.text if ver else "")
    build = int(m.group(3)) if m else None
    major = m.group(1) if m else None
    if m is None:
        notes.append("`ver` did not answer: Windows version unknown")
    product = "Windows 11" if build and build >= 22000 else f"Windows {major or '?'}"
    full = ".".join(m.groups()) if m else "?"
    process = ARCH_ALIASES.get(src.machine().lower(), src.machine().lower())
    native_raw = src.env("PROCESSOR_ARCHITEW6432")
    reg = src.tool(["reg", "query", WIN_ENV_KEY, "/v", "PROCESSOR_ARCHITECTURE"])
    rm = re.search(r"PROCESSOR_ARCHITECTURE\s+REG_SZ\s+(\S+)", reg.stdout if reg else "")
    if rm:
        native_raw = rm.group(1)
    arch = ARCH_ALIASES.get((native_raw or process).lower(), process)
    emulation = "windows-x64-emulation" if arch != process and arch == "aarch64" else None
    ident = src.env("PROCESSOR_IDENTIFIER")
    cpu = Cpu(vendor=None, model=ident, level=None, features=frozenset())
    gpus = _windows_gpus(src)
    nv = _parse_nvidia_smi(src.tool(["nvidia-smi", *NVIDIA_SMI_QUERY]))
    if nv:
        gpus = tuple(g for g in gpus if g.vendor != "nvidia") + tuple(
            Gpu(vendor="nvidia", name=n, arch=c) for n, _d, c in nv)
    root = (src.env("SystemRoot") or "C:/Windows").replace("\\", "/")
    sys32 = f"{root}/System32"
    loader = f"{sys32}/vulkan-1.dll" if src.exists(f"{sys32}/vulkan-1.dll") else None
    real = sorted((g for g in gpus if g.vendor != "other"),
                  key=lambda g: GPU_PREFERENCE.index(g.vendor))
    vulkan_gpu = real[0].name if loader and real else None
    opencl = ("OpenCL.dll",) if src.exists(f"{sys32}/OpenCL.dll") else ()
    hip = _find(src, (sys32,), ("amdhip64_7.dll", "amdhip64_6.dll"))
    ze = f"{sys32}/ze_loader.dll" if src.exists(f"{sys32}/ze_loader.dll") else None
    return Host(
        os="windows", os_name=f"{product} ({full})", os_version=major, distro=None,
        distro_like=(), kernel=None, arch=arch, process_arch=process, emulation=emulation,
        # Windows 11 on Arm runs x64 programs (Prism); Windows 10 on Arm runs only x86.
        can_emulate_x86_64=arch == "aarch64" and bool(build and build >= 22000),
        libc="none", libc_version=None, cpu=cpu, gpus=gpus,
        nvidia_driver=nv[0][1] if nv else None, hip_runtime=hip,
        vulkan_loader=loader, vulkan_gpu=vulkan_gpu, opencl_icds=opencl, level_zero=ze,
        openvino=src.env("INTEL_OPENVINO_DIR"), notes=tuple(notes))


def _windows_gpus(src: Source) -> tuple[Gpu, ...]:
    out = src.tool(list(WIN_GPU_QUERY))
    gpus = []
    for line in (out.stdout if out and out.rc == 0 else "").splitlines():
        name = line.strip()
        if not name or "Basic Display" in name or "Remote Display" in name:
            continue
        low = name.lower()
        vendor = ("nvidia" if "nvidia" in low else "amd" if ("radeon" in low or "amd" in low)
                  else "intel" if "intel" in low else "qualcomm" if "adreno" in low
                  or "qualcomm" in low else "other")
        gpus.append(Gpu(vendor=vendor, name=name))
    return tuple(gpus)

