"""A CycloneDX 1.5 (JSON) software bill of materials for a release.

It lists the project's source files (path and SHA-256, from the directories named by
``kiln.toml``'s ``release.sources``), the source distribution the assets are built from when
the project's source is one (``[project.sdist]``: name, version, SHA-256, its package URL),
the third-party libraries vendored among the sources (``release.third_party``: name,
version, licence, the SHA-256 of the upstream source tarball they were taken from and the
patches applied, as the project's record of them says, and what they are compiled into),
each program that built the assets (name and pinned version, as the assets' records carry
them, and which entries used it), and the release's assets themselves.

Written as plain JSON rather than through ``cyclonedx-python-lib``: kiln emits one small,
fixed document and parses none, and the library's defaults (a random serial number, the
current time) would break byte-identical releases; here the serial number is a UUID derived
from project, tag and commit, and the timestamp is the commit's time.
"""

from __future__ import annotations

import json
import urllib.parse
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from kiln import __version__
from kiln.errors import ReleaseError
from kiln.files import sha256_file
from kiln.package.records import AssetRecord
from kiln.project import SdistSource, ThirdParty
from kiln.run import run

__all__ = [
    "SourceFile",
    "Toolchain",
    "Vendored",
    "VendoredPatch",
    "cyclonedx",
    "source_files",
    "toolchains_from_records",
    "vendored_components",
]

# Fixed namespace for the serial numbers (uuid5 of project, tag and commit).
_SERIAL_NS = uuid.UUID("5b0f3c52-7a55-4d0e-9c8a-3f1d6a2e9b41")


@dataclass(frozen=True, kw_only=True)
class SourceFile:
    path: str  # relative to the repository, forward slashes
    sha256: str


@dataclass(frozen=True, kw_only=True)
class Toolchain:
    name: str
    version: str
    used_by: tuple[str, ...]  # entry ids
    purl: str | None = None


@dataclass(frozen=True, kw_only=True)
class VendoredPatch:
    """A patch applied to vendored code (a Debian patch)."""

    name: str
    type: str                 # CycloneDX's patch types: backport, cherry-pick, unofficial, monkey
    resolves: str | None      # a CVE id
    what: str


@dataclass(frozen=True, kw_only=True)
class Vendored:
    """A third-party library vendored among the project's sources."""

    name: str
    version: str              # upstream's
    license: str              # SPDX id
    upstream: str             # the project's repository
    directory: str            # where it is: relative to the record's directory
    within: str               # the record's directory, relative to the project's root
    used_by: str              # what it is compiled into
    debian_source: str
    debian_version: str
    tarballs: tuple[tuple[str, str], ...]  # (url, sha256): the upstream tarball, then debian/
    patches: tuple[VendoredPatch, ...]     # the ones applied, in order

    @property
    def source_sha256(self) -> str:
        """The SHA-256 of the upstream source tarball the files were taken from."""
        return self.tarballs[0][1]

    @property
    def purl(self) -> str:
        """The Debian source package the files come from (a package URL)."""
        version = urllib.parse.quote(self.debian_version, safe="")
        return f"pkg:deb/debian/{self.debian_source}@{version}?arch=source"


def vendored_components(root: Path, third_party: ThirdParty | None) -> tuple[Vendored, ...]:
    """The third-party libraries the project's record (``release.third_party``) lists; none
    when the project names no record. A named record that is missing or malformed is an
    error: the SBOM must not silently leave vendored code out."""
    if third_party is None:
        return ()
    record = third_party.record
    path = root / record
    if not path.is_file():
        raise ReleaseError(f"{record} (kiln.toml's release.third_party.record) is missing",
                           hint="write it with scripts/vendor_third_party.sh, or remove "
                                "[release.third_party]")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        out = []
        for c in doc["components"]:
            patches = tuple(VendoredPatch(name=p["name"], type=p["type"],
                                          resolves=p.get("resolves"), what=p["what"])
                            for p in c["patches"] if p["applied"])
            out.append(Vendored(
                name=c["name"], version=c["version"], license=c["license"],
                upstream=c["upstream"], directory=c["directory"],
                within=PurePosixPath(record).parent.as_posix(), used_by=third_party.used_by,
                debian_source=c["debian"]["source"], debian_version=c["debian"]["version"],
                tarballs=tuple((t["url"], t["sha256"]) for t in c["tarballs"]),
                patches=patches))
    except (ValueError, KeyError, TypeError) as exc:
        raise ReleaseError(f"{record} is not a record of vendored code: {exc!r}",
                           hint="write it again with scripts/vendor_third_party.sh") from exc
    for v in out:
        if not v.tarballs:
            raise ReleaseError(f"{record}: {v.name} names no source tarball",
                               hint="write it again with scripts/vendor_third_party.sh")
    return tuple(sorted(out, key=lambda v: v.name.lower()))


def source_files(repo: Path, env: Mapping[str, str],
                 directories: Sequence[str]) -> tuple[SourceFile, ...]:
    """The files git tracks under ``directories``, hashed as they are in the work tree."""
    if not directories:
        return ()
    listed = run(["git", "-C", str(repo), "ls-files", "-z", "--", *directories], env=env,
                 what="git ls-files").stdout
    out = []
    for rel in sorted(p for p in listed.split("\0") if p):
        path = repo / rel
        if path.is_file():  # a tracked file deleted in an --allow-dirty tree is skipped
            out.append(SourceFile(path=rel, sha256=sha256_file(path)))
    return tuple(out)


def toolchains_from_records(records: Iterable[AssetRecord]) -> tuple[Toolchain, ...]:
    """One component per program and version that built the release's assets, as each
    asset's record names it (``AssetRecord.toolchain``, written by the build stage from the
    toolchain's own pins), with the entries that used it."""
    users: dict[tuple[str, str], set[str]] = {}
    for record in records:
        for tool in record.toolchain:
            users.setdefault((tool.name, tool.version), set()).add(record.entry_id)
    return tuple(Toolchain(name=name, version=version, used_by=tuple(sorted(ids)))
                 for (name, version), ids in sorted(users.items()))


def _ref(kind: str, name: str) -> str:
    return f"{kind}:{name}"


def _sha256(value: str) -> list[dict[str, str]]:
    return [{"alg": "SHA-256", "content": value}]


def _vendored(v: Vendored) -> dict[str, Any]:
    patches = []
    for p in v.patches:
        issue: dict[str, Any] = {"type": "security" if p.resolves else "enhancement",
                                 "name": p.name, "description": p.what}
        if p.resolves:
            issue["id"] = p.resolves
        patches.append({"type": p.type, "resolves": [issue]})
    return {
        "type": "library", "bom-ref": _ref("vendored", f"{v.name}@{v.version}"),
        "name": v.name, "version": v.version, "scope": "required",
        "description": f"vendored in {v.within}/{v.directory}/, compiled into {v.used_by}",
        "licenses": [{"license": {"id": v.license}}],
        "hashes": _sha256(v.source_sha256),
        "purl": v.purl,
        "externalReferences": [{"type": "vcs", "url": v.upstream}] + [
            {"type": "distribution", "url": url, "hashes": _sha256(sha)}
            for url, sha in v.tarballs],
        "pedigree": {
            "notes": f"taken from Debian's source package {v.debian_source} "
                     f"{v.debian_version}, with the Debian patches that change the vendored "
                     "files",
            "patches": patches,
        },
        "properties": [{"name": "kiln:debian-version", "value": v.debian_version}],
    }


def _sdist(sdist: SdistSource) -> dict[str, Any]:
    name, _, version = sdist.requirement.partition("==")
    return {
        "type": "library", "bom-ref": _ref("sdist", f"{name}@{version}"), "name": name,
        "version": version, "scope": "required",
        "description": f"source distribution the assets are built from (its {sdist.subdir}/)",
        "hashes": _sha256(sdist.sha256),
        "purl": f"pkg:pypi/{name.lower()}@{urllib.parse.quote(version, safe='')}",
    }


def cyclonedx(*, project: str, tag: str, commit: str, date: str, repo_url: str,
              sources: Sequence[SourceFile], toolchains: Sequence[Toolchain],
              assets: Mapping[str, str], vendored: Sequence[Vendored] = (),
              sdist: SdistSource | None = None) -> str:
    """The SBOM as JSON text (sorted keys, stable order): ``assets`` maps name to sha256;
    ``vendored`` are the third-party libraries among the sources (``vendored_components``);
    ``sdist`` the pinned source distribution the assets are built from, if any."""
    root_ref = f"{project}@{tag}"
    components: list[dict[str, Any]] = [_sdist(sdist)] if sdist is not None else []
    for f in sorted(sources, key=lambda s: s.path):
        components.append({
            "type": "file", "bom-ref": _ref("source", f.path), "name": f.path,
            "hashes": _sha256(f.sha256),
        })
    for v in sorted(vendored, key=lambda v: (v.name.lower(), v.version)):
        components.append(_vendored(v))
    for t in sorted(toolchains, key=lambda t: (t.name, t.version)):
        item: dict[str, Any] = {
            "type": "application", "bom-ref": _ref("toolchain", f"{t.name}@{t.version}"),
            "name": t.name,
            "version": t.version, "scope": "excluded",
            "description": "toolchain that built the release assets (not shipped)",
            "properties": [{"name": "kiln:used-by", "value": e} for e in t.used_by],
        }
        if t.purl:
            item["purl"] = t.purl
        components.append(item)
    for name in sorted(assets):
        components.append({
            "type": "file", "bom-ref": _ref("asset", name), "name": name,
            "hashes": [{"alg": "SHA-256", "content": assets[name]}],
        })
    doc = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": "urn:uuid:" + str(uuid.uuid5(_SERIAL_NS, f"{project}:{tag}:{commit}")),
        "version": 1,
        "metadata": {
            "timestamp": date,
            "tools": {"components": [{"type": "application", "name": "kiln",
                                      "version": __version__}]},
            "component": {
                "type": "library", "bom-ref": root_ref, "name": project, "version": tag,
                "externalReferences": [{"type": "vcs", "url": repo_url}],
                "properties": [{"name": "kiln:commit", "value": commit}],
            },
        },
        "components": components,
        "dependencies": [
            {"ref": root_ref,
             "dependsOn": [c["bom-ref"] for c in components
                          if c["bom-ref"].startswith(("source:", "sdist:", "vendored:"))]},
        ],
    }
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"
