"""``install.sh`` and ``install.ps1``: the installers published with each release.

``render(manifest, pubkey, base_url, installer=...)`` fills
``kiln/release/templates/install.{sh,ps1}.j2``. ``Installer`` names what they install, from
``kiln.toml``: the project (the default prefix ``~/.<name>``, ``<name>-install`` in messages,
the ``.<name>-install.json`` record, the ``<NAME>_INSTALL_SYSROOT`` variable), the program
that proves an unpacked archive is whole (the smoke test's), and how to build from source.
Python computes every value (the pinned public key, the default mirror, one line per build
with its floors, driver minimum and device code, the rank tier and order; from the
catalogue, ``kiln.matrix.catalogue``, the CPU level orders, the x86-64 level feature lists
(archspec's), the IBM Z machine types and the backends that need no runtime); the templates
only print, and do the same detection and the same ranking as ``kiln install`` with no Python
on the machine.

The table describes the release the script is published with. With ``--tag`` another release
can be installed: its ``SHA256SUMS`` says which builds exist, and the table says what each
needs; a build id the table does not know is skipped (use that release's own script).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from kiln.errors import ConfigError
from kiln.install.host.probe import Z_MACHINES, archspec_targets, features_of
from kiln.install.installer import parse_manifest, read_pubkey, version_tuple
from kiln.matrix.catalogue import (
    APPLE_SILICON_LEVEL,
    BACKEND_BY_NAME,
    BACKENDS,
    CPU_ARCH_BY_NAME,
    CPU_ARCHES,
    EMULATED_X86_LEVEL,
    UNKNOWN_TIER,
)
from kiln.release.manifest import ReleaseManifest

if TYPE_CHECKING:
    from kiln.project import Project

__all__ = ["SCRIPTS", "Installer", "catalogue_values", "render", "table_lines"]

TEMPLATES = Path(__file__).parent / "templates"
SCRIPTS = ("install.sh", "install.ps1")
# A table field may not hold the separator or a newline (the scripts keep the tables in quoted
# here-documents and split their lines on "|"); values that go into quoted strings (tag, key,
# URL) may not hold quotes either.
_SAFE = re.compile(r"^[^|\n\r]*$")
_QUOTED = re.compile(r"^[^|'\n\r`$\\\"]*$")
# Build ids and tags become parts of file names and URLs in the scripts (used with fullmatch).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_TAG = re.compile(r"b[0-9]{1,9}")


@dataclass(frozen=True, kw_only=True)
class Installer:
    """What the scripts install: the project's name, the program an install must hold, and
    where its source is and the command that builds it (printed when no build runs on the
    machine)."""

    name: str
    program: str
    source: str
    build_command: str

    @classmethod
    def of(cls, project: Project) -> Installer:
        if project.sdist is not None:
            where = project.sdist.subdir
            source = f"{where} of {project.sdist.requirement}"
        else:
            where = source = str(project.source_dir)
        return cls(name=project.name, program=project.smoke.program, source=source,
                   build_command=f"cmake -S {where} -B build -G Ninja")

    def values(self) -> dict[str, str]:
        """The template values, each checked to be safe inside the scripts' quoted strings."""
        return {"name": _name(self.name, what="project name"),
                "program": _name(self.program, what="program"),
                "env_prefix": self.name.upper().replace("-", "_"),
                "source": _field(self.source, what="source", quoted=True),
                "build_command": _field(self.build_command, what="build command", quoted=True)}


def _field(value: object, *, what: str, quoted: bool = False) -> str:
    text = "" if value is None else str(value)
    if not (_QUOTED if quoted else _SAFE).fullmatch(text):
        raise ConfigError(f"install scripts: {what} {text!r} holds a character the scripts "
                          "cannot carry (| or a newline; in quoted values also ' ` $ \\ \")",
                          hint="fix the value in the matrix or the release settings")
    return text


def _name(value: str, *, what: str) -> str:
    if not _NAME.fullmatch(value) or ".." in value:
        raise ConfigError(f"install scripts: {what} {value!r} is not a name the scripts accept "
                          "([A-Za-z0-9][A-Za-z0-9._+-]*, no '..')",
                          hint="fix the build id in the matrix")
    return _field(value, what=what)


def _text(value: str) -> str:
    """Free text (a reason) made safe for the scripts' tables: one line, no separator."""
    return " ".join(value.split()).replace("|", "/")


def _order(version: str | None) -> str:
    """Four digits that sort newer backend versions first: 9999 - (major * 100 + minor)."""
    parts = (*version_tuple(version), 0, 0)
    return f"{9999 - min(parts[0] * 100 + parts[1], 9999):04d}"


def _tier(backend: str) -> int:
    known = BACKEND_BY_NAME.get(backend)
    return known.tier if known is not None else UNKNOWN_TIER


def catalogue_values() -> dict[str, object]:
    """What the scripts know of backends and CPU levels, from the catalogue: the x86-64 level
    feature lists (archspec's), the level order of each architecture and which first levels
    every CPU meets, the Arm levels told by cpuinfo flags, the IBM Z machine types, the level
    an x86-64 emulator provides, the backends that need no runtime."""
    targets = archspec_targets()
    x86 = {f"x86_{lv.name.rsplit('-', 1)[1]}": " ".join(sorted(features_of(targets[lv.archspec])))
           for lv in CPU_ARCH_BY_NAME["x86_64"].levels if lv.archspec is not None}
    arm = CPU_ARCH_BY_NAME["aarch64"]
    checked = [a.levels[0].name for a in CPU_ARCHES if not a.first_implied]
    no_runtime = [b.name for b in BACKENDS if b.runtime is None]
    return {
        **x86,
        "level_orders": " ".join(f'"{" ".join(a.names)}"' for a in CPU_ARCHES),
        # POSIX sh: the first level of an architecture is met by every CPU of it, except these.
        "first_level_implied": " && ".join(f'[ "$lo_first" != {n} ]' for n in checked) or "true",
        # The x86-64 detection is written out per level (X86_V2 ... X86_V4 above).
        "x86_levels": list(CPU_ARCH_BY_NAME["x86_64"].names),
        "apple_silicon_level": APPLE_SILICON_LEVEL,
        "arm_base": arm.levels[0].name,
        "arm_flag_levels": [(" ".join(lv.cpuinfo_flags), lv.name) for lv in arm.levels
                            if lv.cpuinfo_flags],
        "z_machines": " ".join(f"{k}={v}" for k, v in sorted(Z_MACHINES.items())),
        "emulated_x86_level": EMULATED_X86_LEVEL,
        "no_runtime_sh": "|".join(no_runtime),
        "no_runtime_ps1": ", ".join(f"'{n}'" for n in no_runtime),
    }


def table_lines(manifest: ReleaseManifest,
                placement: Mapping[str, tuple[str | None, str]] | None = None,
                ) -> tuple[list[str], list[str]]:
    """The scripts' build table and the list of builds not in the release. ``placement``
    (entry id -> distribution and scope, from the release index) gives the last two cells;
    without it, a Linux entry's distribution is its id's first word and every build is
    general."""
    placement = placement or {}
    entries = []
    for a in manifest.assets:
        r = a.record
        if r.kind != "archive":
            continue
        ext = "zip" if r.name.endswith(".zip") else "tar.gz"
        cells = [_name(r.entry_id, what="build id"), r.os, r.arch, r.backend,
                 r.backend_version, r.libc, r.libc_floor, r.min_os, r.cpu_baseline,
                 r.min_driver, _tier(r.backend),
                 _order(r.backend_version), " ".join(r.gpu_targets), ext,
                 *placement.get(r.entry_id, (r.entry_id.split("-", 1)[0] if r.os == "linux"
                                             else None, "general" if r.os == "linux"
                                             else "any"))]
        entries.append("|".join(_field(c, what=f"{r.entry_id}:") for c in cells))
    skipped = ["|".join((_field(d.entry_id, what="id"), "disabled",
                         _text(f"{d.reason} (tracking: {d.tracking})")))
               for d in manifest.disabled]
    skipped += ["|".join((_field(m.entry_id, what="id"), "not in release", _text(m.reason)))
                for m in manifest.missing]
    return entries, skipped


def _key_line(pubkey: str) -> str:
    lines = [ln.strip() for ln in pubkey.strip().splitlines() if ln.strip()]
    key = lines[-1] if lines else ""
    read_pubkey(key)  # a key minisign cannot read fails here, not on a user's machine
    return _field(key, what="public key", quoted=True)


def render(manifest: ReleaseManifest | Mapping[str, Any], pubkey: str,
           base_url: str, *, installer: Installer,
           placement: Mapping[str, tuple[str | None, str]] | None = None) -> dict[str, str]:
    """``{"install.sh": text, "install.ps1": text}`` for ``manifest``'s release of the project
    ``installer`` names.

    ``pubkey``: the minisign public key (``minisign.pub``'s text or its base64 line) the
    scripts pin. ``base_url``: their default ``--from``: a mirror root (``latest`` and
    ``<tag>/``), one release's directory, or a URL with ``{tag}``.
    """
    if not isinstance(manifest, ReleaseManifest):
        manifest = parse_manifest(manifest, source="manifest.json")
    if not _TAG.fullmatch(manifest.tag):
        raise ConfigError(f"install scripts: tag {manifest.tag!r} is not b followed by 1 to 9 "
                          "digits", hint="release tags are bN")
    entries, skipped = table_lines(manifest, placement)
    base = _field(base_url, what="base URL", quoted=True)
    script_base = base.replace("{tag}", manifest.tag)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    values = {
        "tag": _field(manifest.tag, what="tag", quoted=True), "base_url": base,
        "pubkey": _key_line(pubkey), "entries": entries, "skipped": skipped,
        "script_url": script_base.rstrip("/") + "/install.sh", **catalogue_values(),
        **installer.values(),
    }
    return {name: env.get_template(f"{name}.j2").render(**values) for name in SCRIPTS}
