"""A CycloneDX 1.5 (JSON) software bill of materials for a release.

It lists ember's source files (path and SHA-256, from the directories named by
``[tool.kiln] sources``), each program that built the assets (name and pinned version, as the
assets' records carry them, and which entries used it), and the release's assets themselves.

Written as plain JSON rather than through ``cyclonedx-python-lib``: kiln emits one small,
fixed document and parses none, and the library's defaults (a random serial number, the
current time) would break byte-identical releases; here the serial number is a UUID derived
from project, tag and commit, and the timestamp is the commit's time.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln import __version__
from kiln.files import sha256_file
from kiln.package.records import AssetRecord
from kiln.run import run

__all__ = ["SourceFile", "Toolchain", "cyclonedx", "source_files", "toolchains_from_records"]

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


def cyclonedx(*, project: str, tag: str, commit: str, date: str, repo_url: str,
              sources: Sequence[SourceFile], toolchains: Sequence[Toolchain],
              assets: Mapping[str, str]) -> str:
    """The SBOM as JSON text (sorted keys, stable order): ``assets`` maps name to sha256."""
    root_ref = f"{project}@{tag}"
    components: list[dict[str, Any]] = []
    for f in sorted(sources, key=lambda s: s.path):
        components.append({
            "type": "file", "bom-ref": _ref("source", f.path), "name": f.path,
            "hashes": [{"alg": "SHA-256", "content": f.sha256}],
        })
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
             "dependsOn": [c["bom-ref"] for c in components if c["type"] == "file"
                           and c["bom-ref"].startswith("source:")]},
        ],
    }
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"
