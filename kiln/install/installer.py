"""Choose the right build of a project for a machine, download it, verify it, install it atomically.

Ranking
=======

``rank(manifest, host)`` turns a release's ``manifest.json`` and the machine's facts
(``kiln.install.host``) into an ordered list of candidates and a list of rejected entries, each with
its reason. An archive is a *candidate* when every check passes:

1. **OS**: built for the machine's OS (linux, macos, windows, android).
2. **Architecture**: built for the machine's own architecture, or built for x86_64 on a
   machine that runs x86_64 programs by emulation (Rosetta 2 on Apple Silicon, Windows 11 on
   Arm). A process that itself runs under emulation (a Python or shell under Rosetta) does
   not change the machine's architecture: the native build is still preferred.
3. **C library** (Linux): a glibc build needs glibc, at least the build's floor (2.17 for
   Ubuntu builds, 2.28 for openEuler builds); a musl machine has no glibc build.
4. **OS version**: at least the build's ``min_os`` (macOS version, Windows major version,
   Android API level).
5. **CPU level**: the CPU meets the build's ``cpu_baseline`` (x86-64-v2 for macOS x86_64,
   z13 for s390x, Apple M1 for macOS arm64). Faster kernels (AVX2, AVX-512, dotprod) are
   chosen by the program at run time and are reported, not required.
6. **Backend runtime** (GPU builds): the driver or runtime the backend loads is installed and
   new enough: NVIDIA driver >= the bundle's ``min_driver`` (580.65 for CUDA 13.3, 550.54 for
   CUDA 12.4) and, when ``nvidia-smi`` tells the compute capability, device code for the GPU
   in the build (a ``sm_XY`` cubin of the same major version and a minor version not above
   the GPU's, or ``compute_XY`` PTX at or below it); HIP: ROCm (Linux) or the HIP runtime DLL
   of the AMD driver (Windows) of the same major version and at least the build's version,
   and the GPU's gfx target in the build; SYCL: an Intel GPU and the Level Zero loader;
   OpenVINO: the OpenVINO runtime and an Intel GPU; Vulkan: the Vulkan loader and a driver for
   a GPU of this machine (software rasterisers such as lavapipe do not count); OpenCL: an
   OpenCL driver and an Adreno GPU; CANN: the Ascend driver.

7. **Linux distribution**: a build made for one distribution (the release index's ``scope``
   ``distribution``: ``openeuler-*``) is chosen only on that distribution or one like it
   (os-release ``ID`` / ``ID_LIKE``), or when ``--backend`` names its entry id; elsewhere the
   general Linux build (``scope`` ``general``: the lowest glibc floor, ``ubuntu-*``) is.

Disabled entries and entries missing from the release are listed with their reason (and
tracking link) and never chosen.

Candidates are ordered by expected speed:

* native builds before emulated ones;
* then by backend tier: CUDA and CANN (vendor runtimes of a dedicated accelerator), HIP,
  SYCL, OpenVINO, Vulkan, OpenCL, KleidiAI, CPU;
* then the newer backend version first (CUDA 13.3 before 12.4);
* then a build made for the machine's distribution (an ``openeuler-*`` build on openEuler);
* then the release's own order.

``--backend B`` keeps only builds of backend ``B`` (``cuda``, ``cuda-12.4``, ``cuda@12.4`` or
an entry id) and turns the runtime check (6) into a warning, for machines whose driver is
installed later (containers, images); checks 1 to 5 still apply, since such a build could not
start at all.

Installing
==========

The installer chooses from the release's signed ``index.json`` (``kiln.release.index``,
docs/index.md): its signature, the version and expiry its signed comment names, and that its
assets are the manifest's are checked first. A mirror root's own ``index.json`` says which
release is the newest; the highest version seen per key is kept (``trust.json`` beside the
download cache) and an older one is refused (rollback), as is an expired one (freeze).

``install`` resolves the release (``--from`` a mirror root with ``latest`` and ``<tag>/``, a
release directory, or a URL template with ``{tag}``), downloads ``SHA256SUMS`` and its
minisign signature and checks the signature against the pinned public key (and that its
trusted comment names the tag asked for, so an old signed release cannot be replayed as a new
one; the release date is read from it), then checks ``SHA256SUMS`` strictly
(``kiln.release.sums``) and ``manifest.json`` against it, ranks, refuses a release older than the
installed one (unless ``allow_downgrade``), downloads the chosen archive into a cache
(resuming a partial download with an HTTP range request, retrying a broken connection, never
past its signed size), checks its size and sha256, unpacks it into a staging directory
beside the prefix (each member checked first and written by hand, at most the signed
``unpacked_size`` bytes), checks that it holds a ``bin/`` directory with a program, writes
the install record ``.<project>-install.json`` into it (``<project>`` is the ``project`` of
the release's signed index) and renames it into place.
The previous install is renamed aside first and restored if the final rename fails, so every
failure leaves it as it was. Every small file fetched has a fixed cap. The rules are listed
in docs/install.md, "What an installer refuses". Signatures are checked with
``py-minisign`` (a maintained pure Python implementation of minisign on top of
``cryptography``), so ``kiln install`` needs no ``minisign`` program.
"""

from __future__ import annotations

import binascii
import contextlib
import json
import os
import re
import shutil
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from kiln.build.cache import cache_root_from_env
from kiln.errors import ConfigError, InstallError, IntegrityError, KilnError
from kiln.files import (
    UNPACK_DAMAGE,
    ArchiveMember,
    atomic_write_text,
    safe_unpack,
    sha256_file,
    write_archive_members,
)
from kiln.install.host import Gpu, Host
from kiln.matrix.catalogue import (
    BACKEND_BY_NAME,
    EMULATED_X86_LEVEL,
    UNKNOWN_TIER,
    Runtime,
    cpu_arch_of_level,
    feature_label,
    tiers,
)
from kiln.matrix.catalogue import level as cpu_level
from kiln.package.records import AssetRecord
from kiln.release.index import (
    INDEX_MAX_BYTES,
    IndexRelease,
    ReleaseIndex,
    TrustStore,
    check_fresh,
    check_project_of,
    parse_index,
)
from kiln.release.manifest import (
    INDEX_NAME,
    INDEX_SIGNATURE_NAME,
    MANIFEST_NAME,
    PROJECT_RE,
    SIGNATURE_NAME,
    SUMS_NAME,
    ReleaseAsset,
    ReleaseManifest,
)
from kiln.release.sums import (
    TAG_RE,
    build_number,
    check_name,
    check_tag,
    parse_latest,
    parse_sums_strict,
)

__all__ = [
    "TIERS",
    "Candidate",
    "Choice",
    "Fetcher",
    "InstallResult",
    "Installation",
    "Rejected",
    "Release",
    "cache_dir",
    "check_comment_names",
    "check_downgrade",
    "check_project",
    "check_requested_tag",
    "comment_date",
    "default_prefix",
    "download_asset",
    "fetch_release",
    "find_install_records",
    "install",
    "install_record_name",
    "install_release",
    "parse_manifest",
    "progress_printer",
    "pubkey_from",
    "rank",
    "read_install_record",
    "read_pubkey",
    "require_choice",
    "resolve_release_url",
    "trust_store",
    "uninstall",
    "unpack",
    "verify_signature_of",
    "verify_sums_signature",
    "version_tuple",
]

# Backend tiers, fastest first (see the module docstring): the catalogue's.
TIERS: Mapping[str, int] = tiers()
# The install record in a prefix: ``.<project>-install.json`` (install.sh and install.ps1
# write the same name).
INSTALL_RECORD_RE = re.compile(r"\.(?P<project>[A-Za-z0-9][A-Za-z0-9._-]*)-install\.json")


def check_project(name: str, *, what: str = "the project name") -> str:
    """A project name as the release index allows it (``PROJECT_RE``: no leading dot, no
    ``/``): it becomes a directory name (``~/.<project>``) and a file name
    (``.<project>-install.json``), so anything else is refused."""
    if not isinstance(name, str) or not PROJECT_RE.fullmatch(name) or name.startswith("."):
        raise ConfigError(f"{what} {str(name)[:80]!r} is not a plain project name "
                          "(a letter or digit, then letters, digits, '.', '_' or '-')")
    return name


def install_record_name(project: str) -> str:
    """``.<project>-install.json``: the record an install of ``project`` keeps in its prefix."""
    return f".{check_project(project)}-install.json"


def version_tuple(text: str | None) -> tuple[int, ...]:
    """A version as a tuple of ints: "580.65.06" -> (580, 65, 6); junk parts count as 0."""
    if not text:
        return ()
    return tuple(int(p) if p.isdigit() else 0 for p in re.split(r"[.\-]", text.strip()))


def _ge(have: str, need: str) -> bool:
    h, n = version_tuple(have), version_tuple(need)
    width = max(len(h), len(n))
    return h + (0,) * (width - len(h)) >= n + (0,) * (width - len(n))


# --------------------------------------------------------------------------------------------
# the release manifest (one parsing function, shared with install_scripts)


def parse_manifest(data: object, *, source: str) -> ReleaseManifest:
    """``manifest.json`` as written by ``kiln release``. The single place that reads it, so a
    change of format is one edit; a malformed manifest is an ``InstallError``."""
    try:
        return ReleaseManifest.from_json(data, source=source)
    except KilnError as exc:
        raise InstallError(f"the release manifest {source} cannot be read: {exc.message}",
                           hint=exc.hint or "the release was made by another kiln version; "
                                            "use that version, or a newer kiln") from exc


# --------------------------------------------------------------------------------------------
# ranking


@dataclass(frozen=True, kw_only=True)
class Candidate:
    asset: ReleaseAsset
    emulated: bool
    why: str  # the reason it qualifies, for people: "driver 580.65.06 >= 580.65 needed by ..."
    notes: tuple[str, ...] = ()
    tier: int = 0

    @property
    def record(self) -> AssetRecord:
        return self.asset.record

    @property
    def entry_id(self) -> str:
        return self.asset.record.entry_id


@dataclass(frozen=True, kw_only=True)
class Rejected:
    entry_id: str
    # platform: another OS or architecture; unfit: this platform but a check failed;
    # disabled / missing: not in the release; not-forced: left out by --backend
    kind: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class Choice:
    host: Host
    tag: str
    candidates: tuple[Candidate, ...]
    rejected: tuple[Rejected, ...]
    forced: str | None = None

    @property
    def chosen(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    def summary(self) -> str:
        """One line: the choice, why, and the fallbacks."""
        best = self.chosen
        if best is None:
            return "no build of this release runs on this machine"
        text = f"{best.entry_id}: {best.why}"
        rest = [c.entry_id for c in self.candidates[1:]]
        if rest:
            text += "; fallback " + ", ".join(rest)
        return text

    def explain(self) -> list[str]:
        """The whole reasoning, one line each, for ``--dry-run``."""
        lines = [f"machine: {self.host.summary}"]
        lines += [f"  note: {n}" for n in self.host.notes]
        if self.forced:
            lines.append(f"--backend {self.forced}: only builds of that backend are "
                         "considered; driver and runtime checks are warnings")
        best = self.chosen
        if best is None:
            lines.append(f"release {self.tag}: no build runs on this machine")
        else:
            lines.append(f"choice: {best.entry_id}: {best.why}")
            lines += [f"  note: {n}" for n in best.notes]
        for c in self.candidates[1:]:
            lines.append(f"fallback: {c.entry_id}: {c.why}")
        unfit = [r for r in self.rejected if r.kind != "platform"]
        for r in unfit:
            label = {"unfit": "not usable", "disabled": "disabled", "missing": "not in release",
                     "not-forced": "not asked for"}.get(r.kind, r.kind)
            lines.append(f"{label}: {r.entry_id}: {r.reason}")
        other = [r.entry_id for r in self.rejected if r.kind == "platform"]
        if other:
            lines.append(f"for other platforms: {len(other)} builds ({', '.join(other)})")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "host": self.host.to_json(),
            "choice": self.chosen.entry_id if self.chosen else None,
            "summary": self.summary(),
            "forced": self.forced,
            "candidates": [{"entry_id": c.entry_id, "asset": c.record.name, "why": c.why,
                            "emulated": c.emulated, "notes": list(c.notes)}
                           for c in self.candidates],
            "rejected": [{"entry_id": r.entry_id, "kind": r.kind, "reason": r.reason}
                         for r in self.rejected],
        }


class _Unfit(Exception):
    """A check failed; the message is the reason shown to the user."""


def _os_label(os_name: str) -> str:
    return {"linux": "Linux", "macos": "macOS", "windows": "Windows",
            "android": "Android"}.get(os_name, os_name)


def _backend_label(r: AssetRecord) -> str:
    known = BACKEND_BY_NAME.get(r.backend)
    name = known.label if known is not None else r.backend
    return f"{name} {r.backend_version}" if r.backend_version else name


def _check_platform(r: AssetRecord, host: Host) -> bool | None:
    """``None`` when the build is for another platform, else whether it runs emulated."""
    if r.os != host.os:
        return None
    if r.arch == host.arch:
        return False
    if r.arch == "x86_64" and host.can_emulate_x86_64:
        return True
    return None


def _check_libc(r: AssetRecord, host: Host, notes: list[str]) -> str:
    if r.os != "linux":
        if r.os == "android":
            return "static executable"
        return ""
    if r.libc == "glibc":
        floor = r.libc_floor or "0"
        if host.libc != "glibc":
            version = f" {host.libc_version}" if host.libc_version else ""
            raise _Unfit(f"needs glibc >= {floor}; this machine's C library is "
                         f"{host.libc}{version}")
        if host.libc_version is None:
            notes.append(f"glibc version unknown; assumed >= {floor}")
            return f"glibc >= {floor}"
        if not _ge(host.libc_version, floor):
            raise _Unfit(f"needs glibc >= {floor}; this machine has glibc {host.libc_version}")
        return f"glibc {host.libc_version} >= {floor}"
    if r.libc == "musl":
        return "static musl executable"
    return ""


def _check_min_os(r: AssetRecord, host: Host, notes: list[str]) -> None:
    if r.min_os is None or r.os == "linux":
        return
    label = {"macos": "macOS", "windows": "Windows", "android": "Android API"}[r.os] \
        if r.os in ("macos", "windows", "android") else r.os
    if host.os_version is None:
        notes.append(f"{label} version unknown; assumed >= {r.min_os}")
        return
    if not _ge(host.os_version, r.min_os):
        raise _Unfit(f"needs {label} {r.min_os} or newer; this machine runs "
                     f"{label} {host.os_version}")


def _check_cpu(r: AssetRecord, host: Host, emulated: bool, notes: list[str]) -> str:
    base = r.cpu_baseline
    level = EMULATED_X86_LEVEL if emulated else host.cpu.level
    family = cpu_arch_of_level(base)
    if family is not None and not (base == family.names[0] and family.first_implied):
        order = family.names
        if level is None:
            notes.append(f"CPU level unknown; assumed to meet {base}")
        elif level not in order or order.index(level) < order.index(base):
            missing = cpu_level(base).missing
            raise _Unfit(f"needs a {base} CPU; this CPU is {level}"
                         + (f" (no {missing})" if missing else ""))
    if emulated:
        return f"{base} code under emulation"
    have = [f for f in r.cpu_dispatch if f in host.cpu.features]
    lacking = [f for f in r.cpu_dispatch if f not in host.cpu.features]
    if not r.cpu_dispatch:
        return f"{level or base} CPU"
    top = [f for f in have if f != "avxvnni"]
    best = feature_label(top[-1]) if top else "baseline"
    if "avxvnni" in have:
        best += "+VNNI"
    text = f"{level or base} CPU, {best} kernels"
    if "avx2" in lacking and host.arch == "x86_64" and host.cpu.level is not None:
        text += " (no AVX2)"
    return text


def _covers(cap: str, targets: Sequence[str]) -> bool:
    """Whether CUDA device code in ``targets`` runs on compute capability ``cap`` ("8.9")."""
    m = re.fullmatch(r"(\d+)\.(\d+)", cap)
    if m is None:
        return True
    major, minor = int(m.group(1)), int(m.group(2))
    for t in targets:
        tm = re.fullmatch(r"(sm|compute)_(\d+?)(\d)[af]?", t)
        if tm is None:
            continue
        tmaj, tmin = int(tm.group(2)), int(tm.group(3))
        if tm.group(1) == "sm" and tmaj == major and tmin <= minor:
            return True  # a cubin runs on the same major version, same or newer minor
        if tm.group(1) == "compute" and (tmaj, tmin) <= (major, minor):
            return True  # PTX is compiled by the driver for any newer GPU
    return False


def _sm_range(targets: Sequence[str]) -> str:
    sms = [t for t in targets if t.startswith("sm_")]
    ptx = [t for t in targets if t.startswith("compute_")]
    text = f"{sms[0]}..{sms[-1]}" if sms else "no cubins"
    return text + (f" + PTX {ptx[-1]}" if ptx else "")


def _floor_ok(spec: Runtime, have: str, need: str) -> bool:
    """Whether a host's runtime version ``have`` meets a build's ``need`` under the
    catalogue's floor rule for the backend."""
    if spec.floor == "min_driver":
        return _ge(have, need)
    if spec.floor == "same-major":
        return version_tuple(have)[:1] == version_tuple(need)[:1] and _ge(have, need)
    return True


def _vendor_gpus(spec: Runtime, host: Host, label: str) -> list[Gpu]:
    """The GPUs of the vendor the backend needs; none is unfit."""
    gpus = list(host.gpus_of(spec.gpu_vendor)) if spec.gpu_vendor else []
    if spec.gpu_vendor and not gpus:
        raise _Unfit(spec.missing.format(label=label))
    return gpus


def _runtime_cuda(r: AssetRecord, host: Host, notes: list[str], spec: Runtime) -> str:
    label = _backend_label(r)
    if host.nvidia_driver is None:
        where = ("nvidia-smi did not answer" if host.os == "windows" else
                 "no /proc/driver/nvidia/version, no nvidia-smi")
        raise _Unfit(f"no NVIDIA driver found ({where})")
    need = r.min_driver
    if need and not _floor_ok(spec, host.nvidia_driver, need):
        raise _Unfit(f"driver {host.nvidia_driver} < {need} needed by {label}; update "
                     "the NVIDIA driver to use it")
    gpus = [g for g in host.gpus_of("nvidia") if g.arch]
    if gpus and r.gpu_targets:
        fit = [g for g in gpus if _covers(g.arch or "", r.gpu_targets)]
        if not fit:
            g = gpus[0]
            raise _Unfit(f"GPU {g.name} (sm_{(g.arch or '').replace('.', '')}) has no "
                         f"device code in this build ({_sm_range(r.gpu_targets)})")
        gpu = f"; {fit[0].name} sm_{(fit[0].arch or '').replace('.', '')} covered"
    else:
        gpu = ""
        if not gpus:
            notes.append("GPU compute capability unknown; device code not checked")
    return (f"driver {host.nvidia_driver} >= {need} needed by {label}" if need
            else f"NVIDIA driver {host.nvidia_driver}") + gpu


def _runtime_hip(r: AssetRecord, host: Host, notes: list[str], spec: Runtime) -> str:
    amd = _vendor_gpus(spec, host, _backend_label(r))
    if host.os == "windows":
        if host.hip_runtime is None:
            raise _Unfit("no HIP runtime (amdhip64_7.dll) from the AMD driver")
        have = "the AMD driver's HIP runtime"
    else:
        if host.rocm_version is None:
            raise _Unfit("no ROCm installation found (/opt/rocm/.info/version)")
        want = r.backend_version or "0"
        major = version_tuple(want)[:1]
        if not _floor_ok(spec, host.rocm_version, want):
            raise _Unfit(f"built for ROCm {want}; this machine has ROCm "
                         f"{host.rocm_version} (install ROCm {major[0]}.x >= {want})")
        have = f"ROCm {host.rocm_version}"
    targets = [g.arch for g in amd if g.arch]
    if targets and r.gpu_targets and not any(t in r.gpu_targets for t in targets):
        raise _Unfit(f"GPU {targets[0]} is not among this build's targets "
                     f"({', '.join(r.gpu_targets)})")
    return f"{have} and {amd[0].name}"


def _runtime_sycl(r: AssetRecord, host: Host, notes: list[str], spec: Runtime) -> str:
    intel = _vendor_gpus(spec, host, _backend_label(r))
    if host.level_zero is None:
        raise _Unfit("no Level Zero loader (libze_loader / ze_loader.dll) from the "
                     "Intel GPU driver")
    return f"{intel[0].name} with Level Zero"


def _runtime_openvino(r: AssetRecord, host: Host, notes: list[str], spec: Runtime) -> str:
    intel = _vendor_gpus(spec, host, _backend_label(r))
    if host.openvino is None:
        raise _Unfit("no OpenVINO runtime found (INTEL_OPENVINO_DIR, libopenvino_c)")
    return f"{intel[0].name} with the OpenVINO runtime"


def _runtime_vulkan(r: AssetRecord, host: Host, notes: list[str], spec: Runtime) -> str:
    if host.vulkan_loader is None:
        raise _Unfit("no Vulkan loader (" + ("vulkan-1.dll" if host.os == "windows" else
                                             "libvulkan.so.1") + ")")
    if host.vulkan_gpu is None:
        cpu = [i.name for i in host.vulkan_icds if i.cpu]
        if cpu:
            raise _Unfit(f"Vulkan drivers only for the CPU ({', '.join(cpu)}); no "
                         "faster than the CPU build")
        raise _Unfit("no Vulkan driver for a GPU of this machine")
    return f"Vulkan on {host.vulkan_gpu}"


def _runtime_opencl(r: AssetRecord, host: Host, notes: list[str], spec: Runtime) -> str:
    # The kernels are tuned for Adreno: another vendor's GPU does not count.
    adreno = [g for g in _vendor_gpus(spec, host, _backend_label(r))
              if "adreno" in g.name.lower()]
    if not adreno:
        raise _Unfit(spec.missing.format(label=_backend_label(r)))
    if not host.opencl_icds:
        raise _Unfit(f"{adreno[0].name} but no OpenCL driver (OpenCL.dll / ICD)")
    return f"{adreno[0].name} with an OpenCL driver"


def _runtime_cann(r: AssetRecord, host: Host, notes: list[str], spec: Runtime) -> str:
    if host.ascend_driver is None:
        raise _Unfit(spec.missing.format(label=_backend_label(r)))
    return f"Ascend driver {host.ascend_driver}"


# The runtime checks the catalogue names (``Runtime.check``): what a host needs for a backend.
RUNTIME_CHECKS: Mapping[str, Callable[[AssetRecord, Host, list[str], Runtime], str]] = {
    "cuda": _runtime_cuda, "hip": _runtime_hip, "sycl": _runtime_sycl,
    "openvino": _runtime_openvino, "vulkan": _runtime_vulkan, "opencl": _runtime_opencl,
    "cann": _runtime_cann,
}


def _check_runtime(r: AssetRecord, host: Host, notes: list[str]) -> str:
    """Whether the backend's driver / runtime is here; the reason it qualifies."""
    known = BACKEND_BY_NAME.get(r.backend)
    if known is None:
        raise _Unfit(f"unknown backend '{r.backend}'")
    if known.runtime is None:
        return ""
    return RUNTIME_CHECKS[known.runtime.check](r, host, notes, known.runtime)


def _matches_backend(r: AssetRecord, wanted: str) -> bool:
    w = wanted.strip().lower()
    if w == r.entry_id:
        return True
    forms = {r.backend}
    if r.backend_version:
        forms |= {f"{r.backend}-{r.backend_version}", f"{r.backend}@{r.backend_version}",
                  f"{r.backend}{r.backend_version}"}
    known = BACKEND_BY_NAME.get(r.backend)
    for alias in known.aliases if known is not None else ():
        forms |= {alias, f"{alias}-{r.backend_version}"}
    return w in forms


def _distro_fit(r: AssetRecord, host: Host, placement: Mapping[str, tuple[str | None, str]],
                backend: str | None) -> tuple[bool, str]:
    """Whether a Linux build was made for the host's distribution family (``ID`` or
    ``ID_LIKE`` of os-release), and a note; raises ``_Unfit`` for a distribution's own build
    on another distribution, unless it was asked for by id."""
    family = {d for d in (host.distro, *host.distro_like) if d}
    if r.os != "linux":
        return False, ""
    if r.entry_id not in placement:
        # No placement known (a manifest without an index): the entry id's first word.
        return r.entry_id.split("-", 1)[0] in family, ""
    distro, scope = placement[r.entry_id]
    match = distro is not None and distro in family
    if scope == "distribution" and not match:
        if backend is not None and backend.strip().lower() == r.entry_id:
            return False, f"made for {distro}, installed because --backend named it"
        raise _Unfit(f"made for {distro}; this machine runs {host.distro or 'another Linux'}"
                     f" (the general Linux build is preferred; --backend {r.entry_id} "
                     "installs it anyway)")
    if match:
        return True, f"made for {distro}"
    return False, "general Linux build" if scope == "general" else ""


def rank(manifest: ReleaseManifest, host: Host, *, backend: str | None = None,
         placement: Mapping[str, tuple[str | None, str]] | None = None) -> Choice:
    """Candidates of ``manifest`` for ``host``, best first, and every rejection with its
    reason (see the module docstring for the rule). ``placement`` (from the release index:
    entry id -> the distribution it was made for and its scope) decides the Linux
    distribution rule; without it, an entry id's first word is taken as its distribution."""
    placement = placement or {}
    ranked: list[tuple[tuple[Any, ...], Candidate]] = []
    rejected: list[Rejected] = []
    for index, asset in enumerate(manifest.assets):
        r = asset.record
        if r.kind != "archive":
            continue
        emulated = _check_platform(r, host)
        if emulated is None:
            rejected.append(Rejected(entry_id=r.entry_id, kind="platform",
                                     reason=f"built for {_os_label(r.os)} {r.arch}"))
            continue
        if backend is not None and not _matches_backend(r, backend):
            rejected.append(Rejected(entry_id=r.entry_id, kind="not-forced",
                                     reason=f"{_backend_label(r)}, not {backend}"))
            continue
        notes: list[str] = []
        try:
            distro_match, distro_note = _distro_fit(r, host, placement, backend)
            libc = _check_libc(r, host, notes)
            _check_min_os(r, host, notes)
            cpu = _check_cpu(r, host, emulated, notes)
            try:
                runtime = _check_runtime(r, host, notes)
            except _Unfit as exc:
                if backend is None:
                    raise
                runtime = f"forced by --backend {backend}"
                notes.append(f"{exc}: it may fail to start its {_backend_label(r)} backend "
                             "and fall back to the CPU")
        except _Unfit as exc:
            rejected.append(Rejected(entry_id=r.entry_id, kind="unfit", reason=str(exc)))
            continue
        if emulated:
            how = "Rosetta 2" if host.os == "macos" else "x64 emulation"
            notes.append(f"runs under {how}: slower than a native {host.arch} build")
        why = runtime or ", ".join(p for p in (f"{_backend_label(r)} build", distro_note, libc,
                                                cpu) if p)
        tier = TIERS.get(r.backend, UNKNOWN_TIER)
        newest_first = tuple(-x for x in version_tuple(r.backend_version))
        key = (emulated, tier, newest_first, not distro_match, index)
        ranked.append((key, Candidate(asset=asset, emulated=emulated, why=why,
                                      notes=tuple(notes), tier=tier)))
    for d in manifest.disabled:
        rejected.append(Rejected(entry_id=d.entry_id, kind="disabled",
                                 reason=f"{d.reason} (tracking: {d.tracking})"))
    for m in manifest.missing:
        rejected.append(Rejected(entry_id=m.entry_id, kind="missing", reason=m.reason))
    ranked.sort(key=lambda kc: kc[0])
    return Choice(host=host, tag=manifest.tag, candidates=tuple(c for _k, c in ranked),
                  rejected=tuple(rejected), forced=backend)


def require_choice(choice: Choice) -> Candidate:
    """The chosen candidate, or an ``InstallError`` that lists every reason."""
    best = choice.chosen
    if best is not None:
        return best
    if choice.forced:
        offered = sorted({r.entry_id for r in choice.rejected if r.kind == "not-forced"})
        raise InstallError(
            f"--backend {choice.forced}: no build of that backend for this machine in "
            f"{choice.tag}",
            hint=("builds for this platform: " + ", ".join(offered)) if offered else
            "leave out --backend to see what fits")
    reasons = "\n".join(f"  - {r.entry_id}: {r.reason}" for r in choice.rejected
                        if r.kind in ("unfit", "missing", "disabled"))
    raise InstallError(
        f"no build of {choice.tag} runs on this machine ({choice.host.summary})"
        + (f"\n{reasons}" if reasons else ""),
        hint="build the project from source for this machine, or pass --backend to force "
             "one")


# --------------------------------------------------------------------------------------------
# fetching


ProgressFn = Callable[[str, int, int | None], None]


def _no_progress(_name: str, _done: int, _total: int | None) -> None:
    return None


@dataclass(frozen=True, kw_only=True)
class Fetcher:
    """HTTP(S) and file:// downloads with resume. ``retries`` bounds reconnects after a
    broken transfer; ``timeout`` is per connect / per read."""

    timeout: float = 30.0
    retries: int = 3
    backoff: float = 0.5
    progress: ProgressFn = field(default=_no_progress)
    user_agent: str = "kiln-install"

    def _local(self, url: str) -> Path | None:
        if url.startswith("file://"):
            return Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))
        if "://" not in url:
            return Path(url)
        return None

    def get(self, url: str, *, limit: int, missing_ok: bool = False) -> bytes | None:
        """A small file, whole, of at most ``limit`` bytes (a longer one is refused as
        hostile: exit 12). ``None`` for a 404 when ``missing_ok``."""
        local = self._local(url)
        if local is not None:
            if not local.is_file():
                if missing_ok:
                    return None
                raise InstallError(f"{local}: no such file",
                                   hint="check --from (a mirror or release directory)")
            try:
                with local.open("rb") as fh:
                    whole = fh.read(limit + 1)
            except OSError as exc:
                raise InstallError(f"cannot read {local}: {exc.strerror}") from exc
            if len(whole) > limit:
                raise _too_long(url, limit)
            return whole
        import requests

        try:
            resp = requests.get(url, timeout=self.timeout, stream=True,
                                headers=self._headers())
        except requests.RequestException as exc:
            raise InstallError(f"cannot download {url}: {_net_reason(exc)}",
                               hint="check the URL given to --from and the network") from exc
        with resp:
            if resp.status_code == 404 and missing_ok:
                return None
            if resp.status_code != 200:
                raise _http_error(url, resp.status_code, resp.reason)
            announced = _content_length(resp.headers.get("Content-Length"))
            if announced is not None and announced > limit:
                raise _too_long(url, limit, announced=announced)
            data = bytearray()
            try:
                for chunk in resp.iter_content(1 << 14):
                    data += chunk
                    if len(data) > limit:
                        raise _too_long(url, limit)
            except requests.RequestException as exc:
                raise InstallError(f"download of {url} broke off: {_net_reason(exc)}",
                                   hint="run the command again") from exc
            return bytes(data)

    def _headers(self) -> dict[str, str]:
        # identity: byte ranges and sizes are those of the file, not of a compressed body
        return {"User-Agent": self.user_agent, "Accept-Encoding": "identity"}

    def download(self, url: str, dest: Path, *, size: int) -> None:
        """Fetch ``url`` into ``dest``, continuing a partial ``dest`` with a range request.
        Never writes more than ``size`` bytes: a longer body is refused as hostile
        (``IntegrityError``, exit 12), a shorter result is an ``IntegrityError`` (truncated).
        """
        local = self._local(url)
        if local is not None:
            if not local.is_file():
                raise InstallError(f"{local}: no such file")
            _copy_capped(local, dest, size, url=url)
        else:
            self._http_download(url, dest, size=size)
        got = dest.stat().st_size
        if got != size:
            with contextlib.suppress(OSError):
                dest.unlink()
            raise IntegrityError(
                f"{dest.name}: downloaded {got} bytes, the release says {size}: the download "
                "was truncated or the file on the server is not the released one",
                hint="run again; if it persists, the mirror holds a damaged copy")

    def _http_download(self, url: str, dest: Path, *, size: int) -> None:
        import requests

        attempt = 0
        restarted = False
        while True:
            have = dest.stat().st_size if dest.exists() else 0
            if have > size:
                dest.unlink()
                have = 0
            if have == size:
                return
            headers = self._headers()
            if have:
                headers["Range"] = f"bytes={have}-"
            try:
                with requests.get(url, stream=True, timeout=self.timeout,
                                  headers=headers) as resp:
                    status = resp.status_code
                    if status == 416 and have and not restarted:
                        # The partial copy does not fit the file on the server (it is
                        # shorter, or another file): start over, once.
                        dest.unlink(missing_ok=True)
                        restarted = True
                        continue
                    if status == 206:
                        start = _range_start(resp.headers.get("Content-Range"))
                        if start != have:
                            raise InstallError(
                                f"cannot download {url}: asked for the bytes from {have}, "
                                f"the server answered Content-Range "
                                f"{resp.headers.get('Content-Range')!r}",
                                hint="the server does not handle range requests properly; "
                                     f"delete {dest} and run again")
                    elif status != 200:
                        raise _http_error(url, status, resp.reason)
                    mode = "ab" if status == 206 and have else "wb"
                    done = have if mode == "ab" else 0
                    announced = _content_length(resp.headers.get("Content-Length"))
                    if announced is not None and done + announced > size:
                        dest.unlink(missing_ok=True)
                        raise _too_long(url, size, announced=done + announced,
                                        signed=True)
                    self._write_body(resp, dest, mode=mode, done=done, size=size, url=url)
                    return
            except requests.RequestException as exc:
                attempt += 1
                have = dest.stat().st_size if dest.exists() else 0
                if attempt > self.retries:
                    raise InstallError(
                        f"download of {url} failed after {attempt} attempts: "
                        f"{_net_reason(exc)}; {have} of {size} bytes received",
                        hint=f"run the same command again to resume ({dest} is kept)") \
                        from exc
                time.sleep(self.backoff * attempt)

    def _write_body(self, resp: Any, dest: Path, *, mode: str, done: int, size: int,
                    url: str) -> None:
        """Append the body to ``dest``, never past ``size`` bytes in all."""
        import requests

        longer = False
        try:
            with dest.open(mode) as fh:
                # Small chunks: what arrived before a broken connection is kept for the
                # range request that resumes it.
                for chunk in resp.iter_content(1 << 14):
                    room = size - done
                    if len(chunk) > room:
                        longer = True
                        break
                    fh.write(chunk)
                    done += len(chunk)
                    self.progress(dest.name, done, size)
                fh.flush()
                os.fsync(fh.fileno())
        except requests.RequestException:
            raise  # a broken transfer: the caller resumes it
        except OSError as exc:
            raise InstallError(f"cannot write {dest}: {exc.strerror}",
                               hint="check the free space and permissions of the download "
                                    "cache (KILN_CACHE)") from exc
        if longer:
            dest.unlink(missing_ok=True)
            raise _too_long(url, size, signed=True)


def _content_length(value: str | None) -> int | None:
    return int(value) if value is not None and value.strip().isdigit() else None


def _range_start(value: str | None) -> int | None:
    m = re.fullmatch(r"bytes (\d+)-\d+/(?:\d+|\*)", (value or "").strip())
    return int(m.group(1)) if m else None


def _http_error(url: str, status: int, reason: str | None) -> InstallError:
    why = f"HTTP {status}" + (f" {reason}" if reason else "")
    hint = {403: "the server refuses access: check the URL and any proxy",
            404: "check --from and --tag: the mirror has no such file",
            416: "the server refused the byte range asked for: run again; if it persists, "
                 "the mirror is damaged"}.get(status, "check --from and --tag; if the "
                                                      "server is failing, try again later")
    return InstallError(f"cannot download {url}: {why}", hint=hint)


def _too_long(url: str, limit: int, *, announced: int | None = None,
              signed: bool = False) -> IntegrityError:
    size = f" ({announced} bytes announced)" if announced is not None else ""
    what = (f"is longer than the {limit} bytes its signed record says" if signed else
            f"is larger than {limit} bytes, the most such a release file may be")
    return IntegrityError(f"{url} {what}{size}",
                          hint="the mirror serves another file than the release's: do not "
                               "install from it")


def _copy_capped(src: Path, dest: Path, size: int, *, url: str) -> None:
    """Copy a local release file, refusing one longer than ``size`` before it is all read."""
    with src.open("rb") as fin, dest.open("wb") as fout:
        left = size
        while chunk := fin.read(min(1 << 20, left + 1)):
            if len(chunk) > left:
                fout.close()
                dest.unlink(missing_ok=True)
                raise _too_long(url, size, signed=True)
            fout.write(chunk)
            left -= len(chunk)


def _net_reason(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("Connection refused", "IncompleteRead", "Connection broken",
                   "timed out", "Name or service not known", "Remote end closed"):
        if marker in text:
            return marker.lower() if marker != "IncompleteRead" else (
                "the server closed the connection mid-transfer")
    return type(exc).__name__ + (f": {text[:200]}" if text else "")


# --------------------------------------------------------------------------------------------
# the release: resolve, fetch, verify


# Caps on what a mirror may send for each small file (an archive is capped at its signed
# size): a hostile or broken server cannot make the installer read without end.
SUMS_CAP = 1 << 20
SIGNATURE_CAP = 4 << 10
LATEST_CAP = 256
MANIFEST_CAP = 4 << 20
DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


@dataclass(frozen=True, kw_only=True)
class Release:
    """A release whose ``SHA256SUMS`` signature and manifest were checked."""

    url: str  # the release directory, ending with "/"
    # The project, as the release's signed index names it (``project``): it names the
    # install record and the default prefix, and is shown in every message.
    project: str
    tag: str
    manifest: ReleaseManifest
    sums: Mapping[str, str]
    signed: bool  # False only with --insecure-skip-signature
    # The release date: from the signed trusted comment ("... date 2026-01-02T03:04:05Z"),
    # else the manifest's; None when neither holds one.
    date: str | None = None
    # The release as its signed index.json lists it: what the installer chooses from.
    index: IndexRelease | None = None
    # What the installer could not check and says so (e.g. a mirror without a root index).
    notes: tuple[str, ...] = ()

    def placement(self) -> dict[str, tuple[str | None, str]]:
        """Entry id -> (the distribution it was made for, its scope), from the index."""
        if self.index is None:
            return {}
        return {a.record.entry_id: (a.distro, a.scope) for a in self.index.assets}


def _join(base: str, name: str) -> str:
    if "://" not in base:
        return str(Path(base) / name)
    return base.rstrip("/") + "/" + urllib.parse.quote(name)


def check_requested_tag(tag: str) -> str:
    """``--tag``: ``latest`` or a tag ``bN``; anything else is a usage error (exit 2), caught
    before it becomes part of a URL or a path."""
    if tag == "latest" or TAG_RE.fullmatch(tag):
        return tag
    raise ConfigError(f"--tag {tag[:40]!r} is neither 'latest' nor a release tag (b followed "
                      "by 1 to 9 digits, e.g. b42)")


def resolve_release_url(source: str, tag: str, fetcher: Fetcher,
                        root_index: ReleaseIndex | None = None) -> tuple[str, str | None]:
    """The release directory for ``tag`` under ``source``, and the tag if known.

    ``source`` is a URL template with ``{tag}``, a mirror root (``latest`` file and one
    directory per tag, as ``kiln publish file://`` lays out) or one release's directory."""
    check_requested_tag(tag)
    if "{tag}" in source:
        if tag == "latest":
            raise ConfigError(f"--from {source} has a {{tag}} placeholder, so --tag latest "
                              "cannot be resolved", hint="pass --tag bN")
        return source.replace("{tag}", tag), tag
    if tag != "latest":
        direct = fetcher.get(_join(_join(source, tag), SUMS_NAME), missing_ok=True,
                             limit=SUMS_CAP)
        if direct is not None:
            return _join(source, tag), tag
        return source, tag  # a release directory itself; its tag is checked below
    if root_index is not None:
        # The mirror's signed index says which release is the newest (its `latest` file is
        # for readers without one).
        if root_index.latest is None:
            raise IntegrityError(f"{_join(source, INDEX_NAME)} lists no release",
                                 hint="the mirror is damaged: do not install from it")
        return _join(source, root_index.latest.tag), root_index.latest.tag
    pointer = fetcher.get(_join(source, "latest"), missing_ok=True, limit=LATEST_CAP)
    if pointer is not None:
        name = parse_latest(pointer, source=_join(source, "latest"))
        return _join(source, name), name
    return source, None


def read_pubkey(text: str) -> Any:
    import minisign  # type: ignore[import-untyped]

    raw = text.strip()
    lines = [ln.strip() for ln in raw.splitlines() if ln.strip()]
    key = lines[-1] if lines else ""
    try:
        return minisign.PublicKey.from_base64(key)
    except (minisign.Error, ValueError, binascii.Error) as exc:
        raise ConfigError(f"the minisign public key {key[:20]!r}... cannot be read: {exc}",
                          hint="pass --pubkey with the base64 key (RW...) or a minisign.pub "
                               "file") from exc


def check_comment_names(comment: str, tag: str) -> None:
    """The signed trusted comment (``"<project> <tag> commit <c> date <d>"``) must name
    ``tag`` as a whole word, and no other tag: the signed files of one release cannot be
    served as another's."""
    tags = {t for t in comment.split() if TAG_RE.fullmatch(t)}
    if tags != {tag}:
        raise IntegrityError(f"the signature's trusted comment {comment!r} does not name "
                             f"{tag}" + (f" alone (it names {', '.join(sorted(tags))})"
                                         if tag in tags else ""),
                             hint="the mirror serves the signed files of another release")


def comment_date(comment: str) -> str | None:
    """The release date in a trusted comment: the word after ``date``, when it is an ISO 8601
    UTC time (``2026-01-02T03:04:05Z``)."""
    words = comment.split()
    for i, word in enumerate(words[:-1]):
        if word == "date" and DATE_RE.fullmatch(words[i + 1]):
            return words[i + 1]
    return None


def verify_signature_of(data: bytes, signature: bytes, pubkey: str, *, what: str,
                        hint: str = "the file was changed after it was signed, or signed by "
                                    "another key: do not install from this mirror; check "
                                    "--pubkey") -> str:
    """Check the minisign signature of a small file ``what``; return its trusted comment.
    ``hint`` is what a signature that does not verify tells the user."""
    import minisign

    key = read_pubkey(pubkey)
    try:
        sig = minisign.Signature.from_bytes(signature)
    except (minisign.Error, ValueError, binascii.Error, IndexError) as exc:
        raise IntegrityError(f"{what}.minisig is not a minisign signature: {exc}",
                             hint="the mirror is damaged or tampered with; do not install "
                                  "from it") from exc
    try:
        key.verify(data, sig)
    except minisign.Error as exc:
        raise IntegrityError(f"{what}.minisig does not verify {what} with the pinned public "
                             f"key ({exc})", hint=hint) from exc
    return str(sig.trusted_comment)


def verify_sums_signature(sums: bytes, signature: bytes, pubkey: str, *,
                          tag: str | None) -> str:
    """Check the minisign signature of ``SHA256SUMS``; return its trusted comment. With a
    ``tag``, the trusted comment must name it (no replay of another release's files)."""
    comment = verify_signature_of(
        sums, signature, pubkey, what=SUMS_NAME,
        hint="the release was changed after it was signed, or signed by another key: do not "
             "install it; check --pubkey")
    if tag is not None:
        check_comment_names(comment, tag)
    return comment


def _check_manifest_names(data: object, *, where: str) -> None:
    """The tag and asset names of a raw manifest, before anything else reads it: a value
    that could become a path or a URL elsewhere is hostile content (exit 12), not a manifest
    of another kiln version (exit 11, ``parse_manifest``)."""
    if not isinstance(data, Mapping):
        return
    tag = data.get("tag")
    if isinstance(tag, str):
        check_tag(tag, what=f"the tag in {where}")
    assets = data.get("assets")
    for item in assets if isinstance(assets, list) else ():
        name = item.get("name") if isinstance(item, Mapping) else None
        if isinstance(name, str):
            check_name(name, what=f"{where}: the asset name")


def _signed_index(url: str, fetcher: Fetcher, *, pubkey: str | None, kind: str,
                  missing_ok: bool, now: datetime,
                  check_expiry: bool = True) -> ReleaseIndex | None:
    """``index.json`` at ``url`` checked against its signature (``pubkey``; unchecked with
    ``None``, i.e. --insecure-skip-signature): signed comment, version and expiry. Looking
    for a mirror's index (``missing_ok``) where a release's is found: ``None`` (``url`` is a
    release directory, whose index is read as the release's)."""
    where = _join(url, INDEX_NAME)
    raw = fetcher.get(where, limit=INDEX_MAX_BYTES, missing_ok=True)
    if raw is None:
        if missing_ok:
            return None
        raise IntegrityError(f"{where} is missing: installers choose from the release's "
                             "signed index", hint="the release was made by an older kiln or "
                                                  "is damaged: do not install from it")
    index = parse_index(raw, source=where)
    if missing_ok and kind == "mirror" and index.kind == "release":
        return None
    if pubkey is not None:
        sig = fetcher.get(_join(url, INDEX_SIGNATURE_NAME), limit=SIGNATURE_CAP,
                          missing_ok=True)
        if sig is None:
            raise IntegrityError(f"{_join(url, INDEX_SIGNATURE_NAME)} is missing: the index "
                                 "is not signed", hint="do not install from this mirror")
        comment = verify_signature_of(raw, sig, pubkey, what=INDEX_NAME)
        check_fresh(index, comment, now=now, source=where, check_expiry=check_expiry)
    if index.kind != kind:
        raise IntegrityError(f"{where} is a {index.kind} index where a {kind} index belongs",
                             hint="the mirror is damaged or hostile: do not install from it")
    return index


def fetch_release(source: str, tag: str, *, pubkey: str | None, fetcher: Fetcher,
                  insecure_skip_signature: bool = False, trust: TrustStore | None = None,
                  now: datetime | None = None) -> Release:
    """Resolve, fetch and check a release: the signature of ``SHA256SUMS`` (and that its
    trusted comment names the release's tag), ``SHA256SUMS`` itself (strictly, see
    ``kiln.release.sums``), ``manifest.json`` against it, and every name and tag in them."""
    now = now or datetime.now(UTC)
    key = None if insecure_skip_signature else pubkey
    if not insecure_skip_signature and not pubkey:
        raise ConfigError("no minisign public key to check the release with",
                          hint="pass --pubkey KEY (or set KILN_INSTALL_PUBKEY) with the "
                               "project's published key; --insecure-skip-signature "
                               "skips the check")
    notes: list[str] = []
    root_index = None
    if "{tag}" not in source:
        # A mirror root keeps every release in its signed index.json (kind "mirror"): its
        # version may only grow (rollback) and it must not be past its expiry (freeze).
        root_index = _signed_index(source, fetcher, pubkey=key, kind="mirror",
                                   missing_ok=True, now=now)
        if root_index is not None and key is not None and trust is not None:
            trust.check(root_index, key, origin=source, source=_join(source, INDEX_NAME))
    url, known_tag = resolve_release_url(source, tag, fetcher, root_index)
    if root_index is not None and known_tag is not None and root_index.release(known_tag) is None:
        raise InstallError(f"release {known_tag} is not in the mirror's signed "
                           f"{_join(source, INDEX_NAME)}", hint="check --tag")
    sums_bytes = fetcher.get(_join(url, SUMS_NAME), limit=SUMS_CAP)
    assert sums_bytes is not None
    comment: str | None = None
    if not insecure_skip_signature:
        assert pubkey is not None
        sig = fetcher.get(_join(url, SIGNATURE_NAME), limit=SIGNATURE_CAP, missing_ok=True)
        if sig is None:
            raise IntegrityError(f"{_join(url, SIGNATURE_NAME)} is missing: the release is "
                                 "not signed", hint="do not install from this mirror")
        comment = verify_sums_signature(sums_bytes, sig, pubkey, tag=known_tag)
    sums = parse_sums_strict(sums_bytes, source=_join(url, SUMS_NAME))
    raw = fetcher.get(_join(url, MANIFEST_NAME), limit=MANIFEST_CAP)
    assert raw is not None
    digest = _sha256(raw)
    if sums.get(MANIFEST_NAME) != digest:
        raise IntegrityError(f"{MANIFEST_NAME} does not match its sha256 in {SUMS_NAME}",
                             hint="the mirror's manifest was changed after signing")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InstallError(f"{_join(url, MANIFEST_NAME)} is not JSON: {exc}") from exc
    where = _join(url, MANIFEST_NAME)
    _check_manifest_names(data, where=where)
    manifest = parse_manifest(data, source=where)
    check_tag(manifest.tag, what=f"the tag in {where}")
    if manifest.build_number != build_number(manifest.tag):
        raise IntegrityError(f"{where}: build number {manifest.build_number} is not that of "
                             f"its tag {manifest.tag}",
                             hint="the release is damaged or hostile: do not install it")
    for asset in manifest.assets:
        check_name(asset.record.name, what=f"{where}: the asset name")
    if tag != "latest" and manifest.tag != tag:
        raise InstallError(f"{url} holds release {manifest.tag}, not {tag}",
                           hint="check --from and --tag")
    if tag == "latest" and known_tag is not None and manifest.tag != known_tag:
        raise IntegrityError(f"{where} is release {manifest.tag}, but the mirror's latest "
                             f"file names {known_tag}",
                             hint="the mirror is damaged or hostile: do not install from it")
    if comment is not None and known_tag is None:
        # A release directory given directly: the signature must name the manifest's tag.
        check_comment_names(comment, manifest.tag)
    date = (comment_date(comment) if comment is not None else None) or (
        manifest.date if DATE_RE.fullmatch(manifest.date) else None)
    # A release the mirror's fresh, signed index lists is vouched for by it: its own index
    # may be past its expiry (an old release asked for by tag), not otherwise.
    vouched = root_index.release(manifest.tag) if root_index is not None else None
    index = _signed_index(url, fetcher, pubkey=key, kind="release", missing_ok=False, now=now,
                          check_expiry=vouched is None)
    assert index is not None
    listed = sums.get(INDEX_NAME)
    if listed is not None and listed != _sha256(fetcher.get(_join(url, INDEX_NAME),
                                                            limit=INDEX_MAX_BYTES) or b""):
        raise IntegrityError(f"{INDEX_NAME} does not match its sha256 in {SUMS_NAME}",
                             hint="the mirror's index was changed after signing")
    entry = index.release(manifest.tag)
    if entry is None or entry.commit != manifest.commit:
        raise IntegrityError(f"{_join(url, INDEX_NAME)} is not the index of release "
                             f"{manifest.tag}", hint="the mirror is damaged or hostile: do not "
                                                     "install from it")
    if [a.record for a in entry.assets] != [a.record for a in manifest.assets]:
        raise IntegrityError(f"{_join(url, INDEX_NAME)} and {MANIFEST_NAME} list different "
                             "assets", hint="the release is damaged: do not install it")
    if vouched is not None and [a.record for a in vouched.assets] != [a.record for a in
                                                                       entry.assets]:
        raise IntegrityError(f"{_join(url, INDEX_NAME)} lists other assets than the mirror's "
                             f"signed {INDEX_NAME} for {manifest.tag}",
                             hint="the mirror is damaged or hostile: do not install from it")
    _check_index_project(index, manifest, root_index, where=_join(url, INDEX_NAME))
    # Only an index that passed every check raises what this machine has seen of the mirror
    # (a refused one, e.g. another project's signed with the same key, must not lock the
    # mirror's real index out as a rollback).
    if root_index is not None and key is not None and trust is not None:
        trust.remember(root_index, key, origin=source)
    if root_index is None and "{tag}" not in source and known_tag is not None and tag == "latest":
        notes.append("the mirror has no signed index.json: its 'latest' file cannot be "
                     "checked against a rollback")
    return Release(url=url, project=index.project, tag=manifest.tag, manifest=manifest,
                   sums=sums,
                   signed=comment is not None, date=date, index=entry, notes=tuple(notes))


def _check_index_project(index: ReleaseIndex, manifest: ReleaseManifest,
                         root_index: ReleaseIndex | None, *, where: str) -> None:
    """The project the release's index names becomes a directory and a file name
    (``~/.<project>``, ``.<project>-install.json``): it must be a plain name (``parse_index``
    already holds it to ``PROJECT_RE``; checked again here, where it becomes a path), the
    manifest's project and the mirror index's."""
    try:
        check_project(index.project, what=f"{where}: the project")
    except ConfigError as exc:
        raise IntegrityError(exc.message, hint="the release is damaged or hostile: do not "
                                               "install it") from exc
    check_project_of(index, manifest.project, source=where,
                     hint="the release is damaged or hostile: do not install it")
    if root_index is not None and root_index.project != index.project:
        raise IntegrityError(f"the mirror's {INDEX_NAME} is an index of project "
                             f"{root_index.project!r}, the release's of {index.project!r}",
                             hint="the mirror is damaged or hostile: do not install from it")


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------
# unpacking and installing

# The unpacking's parts under the names they had here (the hostile-archive tests use them).
_Member = ArchiveMember
_write_members = write_archive_members


@dataclass(frozen=True, kw_only=True)
class InstallResult:
    prefix: Path
    project: str
    entry_id: str
    tag: str
    asset: str
    replaced: str | None  # "b41 ubuntu-x64" when an install was replaced
    bin: Path  # the install's bin/ directory (what goes on PATH)
    programs: tuple[str, ...] = ()  # the files in bin/, sorted
    downgrade: bool = False  # the replaced install was newer (--allow-downgrade)


def find_install_records(prefix: Path) -> list[Path]:
    """The install records (``.<project>-install.json`` files) in ``prefix``, sorted."""
    try:
        entries = list(prefix.iterdir())
    except OSError:
        return []
    return sorted(e for e in entries if INSTALL_RECORD_RE.fullmatch(e.name) and e.is_file())


def _record_path(prefix: Path, project: str | None) -> Path | None:
    """``prefix/.<project>-install.json``; without a project, the single record in
    ``prefix`` (``None`` when there is none; several are refused: whose is it?)."""
    if project is not None:
        return prefix / install_record_name(project)
    found = find_install_records(prefix)
    if len(found) > 1:
        raise InstallError(f"{prefix} holds several install records "
                           f"({', '.join(f.name for f in found)}): cannot tell which "
                           "project is installed there",
                           hint="pass --project NAME to say which")
    return found[0] if found else None


def read_install_record(prefix: Path, project: str | None = None) -> dict[str, Any] | None:
    """The record of the install of ``project`` in ``prefix`` (without ``project``: of the
    single install record there); ``None`` when there is none or it is not a JSON object."""
    path = _record_path(prefix, project)
    return _read_record(path) if path is not None else None


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _check_prefix(prefix: Path, project: str) -> dict[str, Any] | None:
    """The current install's record; refuse a prefix that holds something else (another
    project's install included)."""
    if not prefix.exists():
        return None
    if not prefix.is_dir():
        raise InstallError(f"--prefix {prefix} exists and is not a directory",
                           hint="pass a new or empty directory")
    record = read_install_record(prefix, project)
    if record is None:
        others = [f.name for f in find_install_records(prefix)
                  if f.name != install_record_name(project)]
        if others:
            raise InstallError(f"--prefix {prefix} holds an install of another project "
                               f"({', '.join(others)}), not of {project}",
                               hint="pass another --prefix; kiln replaces an install only "
                                    "with one of the same project")
        if any(prefix.iterdir()):
            raise InstallError(f"--prefix {prefix} is not empty and was not made by kiln "
                               f"install (no {install_record_name(project)})",
                               hint="pass a new or empty directory; kiln replaces only its "
                                    "own installs")
    return record


def unpack(archive: Path, dest: Path, *, max_bytes: int) -> Path:
    """Unpack ``archive`` (.tar.gz or .zip) into the empty directory ``dest`` with
    ``kiln.files.safe_unpack``; return the tree's root (the single top-level directory when
    the archive wraps its tree in one).

    Every member is checked before anything is written (docs/install.md, "What an installer
    refuses"); no more than ``max_bytes`` (the signed ``unpacked_size``) of file content. A
    refusal is an ``IntegrityError``, a damaged archive an ``InstallError``; ``dest`` may then
    hold part of the archive and is the caller's to remove."""
    try:
        safe_unpack(archive, dest, max_bytes=max_bytes)
    except UNPACK_DAMAGE as exc:
        raise InstallError(f"cannot unpack {archive.name}: {exc}",
                           hint="the archive is damaged; run again to download it anew") \
            from exc
    except OSError as exc:
        raise InstallError(f"cannot unpack {archive.name} into {dest}: {exc}",
                           hint="the archive is damaged, or the disk is full") from exc
    entries = list(dest.iterdir())
    # One top directory holding the tree (<project>-bN-bin-ID/bin/...) is the root; a flat
    # archive whose only folder is bin/ is not stripped.
    top = entries[0] if len(entries) == 1 else None
    if (top is not None and not top.is_symlink() and top.is_dir() and top.name != "bin"
            and _find_bin(top) is not None):
        return top
    return dest


def _find_bin(root: Path) -> Path | None:
    """``root/bin`` when it is a directory (not a link) holding at least one regular file."""
    bin_dir = root / "bin"
    if bin_dir.is_symlink() or not bin_dir.is_dir():
        return None
    if any(not p.is_symlink() and p.is_file() for p in bin_dir.iterdir()):
        return bin_dir
    return None


def _programs(bin_dir: Path) -> tuple[str, ...]:
    """The files in ``bin_dir`` (links to files included), sorted."""
    return tuple(sorted(p.name for p in bin_dir.iterdir() if p.is_file()))


@contextlib.contextmanager
def _lock(prefix: Path) -> Iterator[None]:
    from filelock import FileLock, Timeout

    lock = prefix.parent / f".{prefix.name}.lock"
    try:
        with FileLock(str(lock), timeout=60):
            yield
    except Timeout as exc:
        raise InstallError(f"{prefix} is being installed by another process ({lock})",
                           hint="wait for it to finish") from exc


def _swap_into_place(tree: Path, prefix: Path) -> None:
    """Rename ``tree`` to ``prefix``; the old ``prefix`` goes aside first and comes back if
    the rename fails."""
    old = prefix.with_name(f".{prefix.name}.old-{os.getpid()}")
    if prefix.exists():
        prefix.rename(old)
    try:
        tree.rename(prefix)
    except OSError as exc:
        if old.exists():
            old.rename(prefix)
        raise InstallError(f"cannot move the new install into {prefix}: {exc.strerror}",
                           hint="check the permissions of its parent directory") from exc
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def cache_dir(env: Mapping[str, str]) -> Path:
    root = cache_root_from_env(env)
    if root is not None:
        return root / "downloads"
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]) / "kiln" / "downloads"
    if env.get("LOCALAPPDATA"):
        return Path(env["LOCALAPPDATA"]) / "kiln" / "cache" / "downloads"
    home = env.get("HOME") or env.get("USERPROFILE") or "."
    return Path(home) / ".cache" / "kiln" / "downloads"


def trust_store(env: Mapping[str, str]) -> TrustStore:
    """Where the highest index versions seen are kept: beside the download cache."""
    return TrustStore(cache_dir(env).parent / "trust.json")


def default_prefix(env: Mapping[str, str], project: str) -> Path:
    """Where ``project`` is installed by default: ``~/.<project>``
    (``%LOCALAPPDATA%\\<project>`` on Windows)."""
    check_project(project)
    if sys.platform == "win32" and env.get("LOCALAPPDATA"):
        return Path(env["LOCALAPPDATA"]) / project
    home = env.get("HOME") or env.get("USERPROFILE")
    if not home:
        raise ConfigError("cannot tell where to install: HOME is not set",
                          hint="pass --prefix DIR")
    return Path(home) / f".{project}"


def download_asset(release: Release, candidate: Candidate, *, cache: Path,
                   fetcher: Fetcher) -> Path:
    """The chosen archive in the cache, size and sha256 checked against the signed sums."""
    r = candidate.record
    want = release.sums.get(r.name)
    if want is None:
        raise IntegrityError(f"{r.name} is not listed in {SUMS_NAME}",
                             hint="the mirror's manifest and checksums disagree")
    if want != r.sha256:
        raise IntegrityError(f"{r.name}: sha256 in {MANIFEST_NAME} differs from {SUMS_NAME}")
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / f"{want}-{r.name}"
    if final.is_file() and sha256_file(final) == want:
        return final
    part = cache / f"{want}-{r.name}.part"
    url = _join(release.url, r.name)
    fetcher.download(url, part, size=r.size)
    got = sha256_file(part)
    if got != want:
        part.unlink()
        raise IntegrityError(
            f"{r.name}: sha256 {got[:16]}... does not match {want[:16]}... in the signed "
            f"{SUMS_NAME}", hint="the archive on the mirror was changed or damaged: do not "
                                 "use it; report it to the mirror's owner")
    part.replace(final)
    return final


def check_downgrade(previous: Mapping[str, Any] | None, release: Release, prefix: Path, *,
                    allow_downgrade: bool) -> bool:
    """Refuse to replace an install by an older release (a lower build number), unless
    ``allow_downgrade``: a mirror whose ``latest`` points back in time (or an old ``--tag``)
    must not silently roll a machine back to a build with known bugs. The same tag may be
    reinstalled. Returns whether this is a downgrade."""
    if previous is None:
        return False
    installed = previous.get("tag")
    new = build_number(release.tag)
    if not isinstance(installed, str) or not TAG_RE.fullmatch(installed):
        if allow_downgrade:
            return False
        raise InstallError(f"cannot tell whether {release.project} {release.tag} is older "
                           f"than the one installed in {prefix}: its "
                           f"{install_record_name(release.project)} names the tag "
                           f"{installed!r}",
                           hint="pass --allow-downgrade to replace it anyway, or uninstall "
                                "it first (kiln uninstall --prefix ...)")
    if new >= int(installed[1:]):
        return False
    if allow_downgrade:
        return True
    raise InstallError(f"refusing to replace {release.project} {installed} (installed in "
                       f"{prefix}) with "
                       f"the older {release.tag} (the mirror's 'latest' or --tag points back "
                       "in time); pass --allow-downgrade to install it anyway",
                       hint=f"{release.tag} is build {new}, the installed {installed} is "
                            f"build {installed[1:]}: if the mirror should offer the newer "
                            "release, tell its owner")


def _tree_files(root: Path) -> list[str]:
    """The files and links of an unpacked tree, relative and '/'-separated; links to
    directories are listed, never followed."""
    out: list[str] = []
    for here, dirs, files in os.walk(root):
        base = Path(here)
        for name in files + [d for d in dirs if (base / d).is_symlink()]:
            out.append((base / name).relative_to(root).as_posix())
    return sorted(out)


def _clear_install_records(root: Path, name: str) -> None:
    """Remove what the archive put at the top of its tree under an install record's name
    (``.<any project>-install.json``; a file or a link is removed, not written through): only
    an installer writes a record, so a prefix never holds one that tells of another install.
    A directory at the name of this install's record ``name`` is refused."""
    for entry in root.iterdir():
        if entry.name != name and not INSTALL_RECORD_RE.fullmatch(entry.name):
            continue
        if entry.is_symlink() or not entry.is_dir():
            entry.unlink()
        elif entry.name == name:
            raise IntegrityError(f"the archive holds a directory named {name}",
                                 hint="the archive is hostile or broken: do not install it")


def _write_install_record(root: Path, name: str, record: Mapping[str, Any]) -> None:
    """Write the install record ``name`` (``.<project>-install.json``) into the unpacked
    tree, from which ``_clear_install_records`` removed the archive's own."""
    atomic_write_text(root / name, json.dumps(record, indent=2, sort_keys=True) + "\n")


def install(release: Release, candidate: Candidate, prefix: Path, *, cache: Path,
            fetcher: Fetcher, host_summary: str = "",
            allow_downgrade: bool = False) -> InstallResult:
    """Download, verify, unpack and rename into ``prefix``; atomic (see the docstring). An
    older release than the installed one is refused unless ``allow_downgrade``."""
    prefix = prefix.absolute()
    record_name = install_record_name(release.project)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with _lock(prefix):
        previous = _check_prefix(prefix, release.project)
        downgrade = check_downgrade(previous, release, prefix,
                                    allow_downgrade=allow_downgrade)
        archive = download_asset(release, candidate, cache=cache, fetcher=fetcher)
        stage = prefix.with_name(f".{prefix.name}.staging-{os.getpid()}")
        if stage.exists():
            shutil.rmtree(stage)
        stage.mkdir()
        try:
            r = candidate.record
            root = unpack(archive, stage, max_bytes=r.unpacked_size)
            bin_dir = _find_bin(root)
            if bin_dir is None:
                raise InstallError(f"{candidate.record.name} holds no programs (looked for a "
                                   "bin/ directory with at least one file, at the top of the "
                                   "archive or in its single top directory)",
                                   hint="the release's archive is malformed")
            programs = _programs(bin_dir)
            _clear_install_records(root, record_name)
            record: dict[str, Any] = {
                "schema": 1, "tag": release.tag, "entry_id": r.entry_id, "asset": r.name,
                "sha256": r.sha256, "url": _join(release.url, r.name),
                "signed": release.signed, "installed_by": "kiln install",
                "host": host_summary,
                "files": [f for f in _tree_files(root) if f != record_name]}
            if release.date is not None:
                record["date"] = release.date
            _write_install_record(root, record_name, record)
            _swap_into_place(root, prefix)
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)
    replaced = None
    if previous is not None:
        replaced = f"{previous.get('tag', '?')} {previous.get('entry_id', '?')}"
    return InstallResult(prefix=prefix, project=release.project, entry_id=candidate.entry_id,
                         tag=release.tag, asset=candidate.record.name, replaced=replaced,
                         bin=prefix / bin_dir.relative_to(root), programs=programs,
                         downgrade=downgrade)


def uninstall(prefix: Path, project: str | None = None) -> dict[str, Any]:
    """Remove an install made by ``kiln install``, ``install.sh`` or ``install.ps1``; refuse
    anything else. ``prefix`` must hold the install record ``.<project>-install.json``
    (without ``project``: exactly one install record, whose name tells the project). Returns
    the record, with ``"project"`` set to the project removed."""
    prefix = prefix.absolute()
    path = _record_path(prefix, project)
    record = _read_record(path) if path is not None else None
    if path is None or record is None:
        what = install_record_name(project) if project is not None else \
            "install record .<project>-install.json"
        raise InstallError(f"nothing installed by kiln at {prefix} (no {what})",
                           hint="pass the --prefix used to install")
    match = INSTALL_RECORD_RE.fullmatch(path.name)
    assert match is not None
    with _lock(prefix):
        gone = prefix.with_name(f".{prefix.name}.removing-{os.getpid()}")
        prefix.rename(gone)
        shutil.rmtree(gone)
    return {**record, "project": match["project"]}


def progress_printer(stream: IO[str], *, terminal: bool) -> ProgressFn:
    """Progress for downloads: a rewritten line on a terminal, nothing in logs."""
    state = {"last": 0.0}

    def show(name: str, done: int, total: int | None) -> None:
        if not terminal:
            return
        now = time.monotonic()
        if now - state["last"] < 0.1 and (total is None or done < total):
            return
        state["last"] = now
        mib = done / (1 << 20)
        text = f"\r  {name}: {mib:.1f} MiB"
        if total:
            text += f" of {total / (1 << 20):.1f} MiB ({100 * done // max(total, 1)}%)"
        stream.write(text + ("\n" if total and done >= total else ""))
        stream.flush()

    return show


def pubkey_from(value: str | None) -> str | None:
    """``--pubkey``: the base64 key itself, or a path to a ``minisign.pub`` file."""
    if not value:
        return None
    v = value.strip()
    if re.fullmatch(r"RW[A-Za-z0-9+/=]{40,}", v):
        return v
    path = Path(v).expanduser()
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--pubkey {value}: neither a minisign key (RW...) nor a readable "
                          f"file: {exc.strerror}") from exc



# --------------------------------------------------------------------------------------------
# the whole step as one call (``kiln install`` and the library API)


@dataclass(frozen=True, kw_only=True)
class Installation:
    """What ``install_release`` did: the checked release, the choice for the host (with every
    reason), and the install (``None`` for a dry run)."""

    release: Release
    choice: Choice
    result: InstallResult | None


def install_release(source: str, *, tag: str = "latest", prefix: Path | None = None,
                    pubkey: str | None = None, backend: str | None = None,
                    host: Host | None = None, env: Mapping[str, str] | None = None,
                    fetcher: Fetcher | None = None, allow_downgrade: bool = False,
                    insecure_skip_signature: bool = False, dry_run: bool = False,
                    on_choice: Callable[[Release, Choice], None] | None = None,
                    ) -> Installation:
    """Fetch and check release ``tag`` from ``source`` (a mirror root, a release directory,
    or a URL with ``{tag}``) against the minisign key ``pubkey`` (base64 text), rank its
    assets for ``host`` (default: this machine, probed), and install the best into
    ``prefix`` (default ``~/.<project>``, the project named by the release's signed index),
    atomically.

    ``on_choice`` sees the release and the choice before anything is downloaded (the CLI
    prints them there). With ``dry_run`` nothing is downloaded and an empty choice is not an
    error (``require_choice`` makes it one); otherwise a host nothing fits is an
    ``InstallError`` (exit code 11) and a damaged or tampered release an ``IntegrityError``
    (12). ``env`` defaults to ``os.environ`` (``HOME``, ``KILN_CACHE``)."""
    env = dict(os.environ) if env is None else env
    fetcher = fetcher or Fetcher()
    release = fetch_release(source, tag, pubkey=pubkey, fetcher=fetcher,
                            insecure_skip_signature=insecure_skip_signature,
                            trust=trust_store(env))
    if host is None:
        from kiln.install.host import LiveSource, probe

        host = probe(LiveSource(env))
    choice = rank(release.manifest, host, backend=backend, placement=release.placement())
    if on_choice is not None:
        on_choice(release, choice)
    if dry_run:
        return Installation(release=release, choice=choice, result=None)
    best = require_choice(choice)
    result = install(release, best, prefix or default_prefix(env, release.project),
                     cache=cache_dir(env),
                     fetcher=fetcher, host_summary=host.summary,
                     allow_downgrade=allow_downgrade)
    return Installation(release=release, choice=choice, result=result)


