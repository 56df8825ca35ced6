""""Your download": what a release page recommends to a visitor, decided by the installers' own
ranking (``kiln.install.installer.rank``) at release time, not by a second copy of the rules in
the page's script.

A web page learns a visitor's operating system and architecture (``navigator.userAgentData``
or the user agent) and nothing else: no distribution, C library version, CPU model, GPU or
driver. Each of those platforms is described by a machine profile in ``visitors/`` (the format
of ``kiln install --host-profile``) that says exactly that much. For every platform the page
offers the CPU default (``rank`` on that profile, as ``kiln install --dry-run --host-profile
visitors/<platform>.yaml`` would choose) and one choice per GPU backend the release has for
that platform (the visitor says which GPU they have, as ``--backend`` does). The results are
embedded in the page as JSON; the script only looks them up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from kiln.install.host import load_profile, probe
from kiln.install.host.facts import Host
from kiln.install.installer import rank
from kiln.matrix.catalogue import BACKEND_BY_NAME
from kiln.package.records import AssetRecord
from kiln.release.index import IndexRelease
from kiln.release.manifest import ReleaseManifest

__all__ = ["VISITORS", "VISITORS_DIR", "Visitor", "backend_key", "recommendations",
           "visitor_host"]

VISITORS_DIR = Path(__file__).resolve().parent / "visitors"


@dataclass(frozen=True, kw_only=True)
class Visitor:
    key: str  # "<os>-<arch>", the name of its profile in visitors/
    os: str
    arch: str
    label: str


# The platforms a page can tell apart, in the order the page lists them.
VISITORS: tuple[Visitor, ...] = (
    Visitor(key="windows-x86_64", os="windows", arch="x86_64", label="Windows (x64)"),
    Visitor(key="windows-aarch64", os="windows", arch="aarch64", label="Windows on Arm"),
    Visitor(key="macos-aarch64", os="macos", arch="aarch64", label="macOS (Apple silicon)"),
    Visitor(key="macos-x86_64", os="macos", arch="x86_64", label="macOS (Intel)"),
    Visitor(key="linux-x86_64", os="linux", arch="x86_64", label="Linux (x86_64)"),
    Visitor(key="linux-aarch64", os="linux", arch="aarch64", label="Linux (arm64)"),
    Visitor(key="linux-s390x", os="linux", arch="s390x", label="Linux on IBM Z (s390x)"),
    Visitor(key="android-aarch64", os="android", arch="aarch64", label="Android (arm64)"),
)


@cache
def visitor_host(key: str) -> Host:
    """The machine a page visitor on platform ``key`` is taken to be."""
    return probe(load_profile(VISITORS_DIR / f"{key}.yaml"))


def backend_key(record: AssetRecord) -> str:
    """The ``--backend`` value that names ``record``'s backend and version (``cuda-13.3``)."""
    return f"{record.backend}-{record.backend_version}" if record.backend_version \
        else record.backend


# What visitors know about their machine: the device, then the backend's name.
_DEVICE = {"cuda": "NVIDIA GPU", "hip": "AMD Radeon GPU", "sycl": "Intel GPU",
           "vulkan": "a GPU with a Vulkan driver", "opencl": "Qualcomm Adreno GPU",
           "openvino": "Intel CPU, GPU or NPU", "cann": "Huawei Ascend NPU",
           "kleidiai": "Arm CPU"}


def _gpu_label(record: AssetRecord) -> str:
    known = BACKEND_BY_NAME.get(record.backend)
    name = known.label if known is not None else record.backend
    if record.backend_version:
        name += f" {record.backend_version}"
    label = f"{_DEVICE.get(record.backend, record.backend)} ({name})"
    if record.min_driver:
        label += f" (driver {record.min_driver} or newer)"
    return label


def _install_commands(base_url: str, os_name: str, backend: str | None) -> dict[str, str]:
    """The one-line install command for the platform: install.sh through curl, install.ps1
    through PowerShell (Windows), with ``--backend`` when the visitor picked a GPU."""
    if os_name == "windows":
        args = f" --backend {backend}" if backend else ""
        return {"shell": "PowerShell",
                "command": f"& ([scriptblock]::Create((irm {base_url}install.ps1))){args}"}
    args = f" -s -- --backend {backend}" if backend else ""
    return {"shell": "sh", "command": f"curl -fsSL {base_url}install.sh | sh{args}"}


def _option(manifest: ReleaseManifest, host: Host, placement: Mapping[str, tuple[str | None, str]],
            visitor: Visitor, *, backend: str | None, label: str) -> dict[str, Any]:
    choice = rank(manifest, host, backend=backend, placement=placement)
    best = choice.chosen
    option: dict[str, Any] = {"key": backend or "cpu", "label": label, "backend": backend}
    if best is None:
        option["choice"] = None
        option["why"] = "no build of this release runs on " + visitor.label
        return option
    option["choice"] = {"id": best.entry_id, "file": best.record.name,
                        "size": best.record.size, "sha256": best.record.sha256}
    option["why"] = best.why
    option["notes"] = list(best.notes)
    option["fallbacks"] = [c.entry_id for c in choice.candidates[1:]]
    option["install"] = _install_commands(manifest.base_url, visitor.os, backend)
    return option


def recommendations(manifest: ReleaseManifest, release: IndexRelease) -> dict[str, Any]:
    """Per visitor platform: the options (CPU first, the default, then one per GPU backend
    built for it), each with the build ``rank`` chooses, the reason, notes, fallbacks and the
    install command. ``release`` is the release as its index lists it (the distribution and
    scope of each Linux build)."""
    placement = {a.record.entry_id: (a.distro, a.scope) for a in release.assets}
    out: dict[str, Any] = {}
    for visitor in VISITORS:
        host = visitor_host(visitor.key)
        options = [_option(manifest, host, placement, visitor, backend=None,
                           label="CPU only / not sure (default)")]
        seen: set[str] = set()
        for asset in release.assets:
            r = asset.record
            if r.kind != "archive" or r.os != visitor.os or r.arch != visitor.arch:
                continue
            if r.backend == "cpu" or backend_key(r) in seen:
                continue
            seen.add(backend_key(r))
            options.append(_option(manifest, host, placement, visitor, backend=backend_key(r),
                                   label=_gpu_label(r)))
        out[visitor.key] = {"label": visitor.label, "os": visitor.os, "arch": visitor.arch,
                            "profile": f"{visitor.key}.yaml", "options": options}
    return out
