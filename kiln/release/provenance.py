"""The release's build provenance: an in-toto Statement v1 whose predicate is SLSA provenance
v1, written as ``provenance.intoto.json`` and signed with the release's minisign key.

Its subjects are the release's assets (archives and wheels) with their sha256, exactly as
``SHA256SUMS`` lists them. The predicate says how they were made:

- ``buildDefinition.buildType``: ``BUILD_TYPE`` under the project's repository, versioned;
- ``externalParameters``: the tag, the build number, the source repository and commit, and
  the digest of ``matrix/*.yaml`` (``matrix_digest``);
- ``internalParameters``: ``SOURCE_DATE_EPOCH`` and the digest of the recipe that each
  released entry's backend was built with (``recipes/<backend>.yaml`` and the CMake
  templates, as ``kiln.build.toolchains.recipe.load_recipe`` hashes them);
- ``resolvedDependencies``: the source commit, then every program that built an asset at
  its pinned version (the records' ``toolchain``);
- ``runDetails``: kiln as the builder, and the commit's time as start and end.

Nothing in it depends on the machine, the run or the clock, so releasing a commit twice gives
the same bytes, and the same signature (Ed25519 is deterministic). The run's own identity (which
CI job, which runner) is what GitHub's artifact attestation of the release workflow adds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from kiln import __version__
from kiln.build.toolchains.recipe import load_recipe, recipe_path
from kiln.errors import IntegrityError
from kiln.release.manifest import (
    COMMIT_RE,
    PROVENANCE_NAME,
    ReleaseManifest,
    release_comment,
)
from kiln.release.sbom import Toolchain, toolchains_from_records

__all__ = [
    "BUILD_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "Provenance",
    "matrix_digest",
    "parse_provenance",
    "provenance_comment",
    "recipe_digests",
    "release_provenance",
    "statement",
    "statement_text",
]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
# Appended to the project's repository URL: the document that defines the build type (what
# the parameters mean). A change of their meaning is a new version.
BUILD_TYPE = "/blob/main/docs/verify.md#build-type-v1"
BUILDER = "/tree/main/kiln"


def matrix_digest(matrix_dir: Path) -> str:
    """sha256 over ``matrix_dir/*.yaml`` in the order of their names (byte order): for each
    file its name, a NUL, its size in decimal, a NUL, then its bytes."""
    h = hashlib.sha256()
    for path in sorted(matrix_dir.glob("*.yaml"), key=lambda p: p.name.encode()):
        data = path.read_bytes()
        h.update(path.name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return h.hexdigest()


def recipe_digests(backends: Mapping[str, str], recipes: Path) -> dict[str, str]:
    """Entry id -> sha256 of its backend's recipe (``backends``: entry id -> backend), for the
    entries whose backend has a recipe in ``recipes``."""
    out: dict[str, str] = {}
    cache: dict[str, str] = {}
    for entry_id, backend in sorted(backends.items()):
        if backend not in cache:
            if not recipe_path(recipes, backend).is_file():
                continue
            cache[backend] = load_recipe(recipes, backend).sha256
        out[entry_id] = cache[backend]
    return out


def _tool_uri(tool: Toolchain) -> str:
    return f"pkg:generic/{quote(tool.name, safe='')}@{quote(tool.version, safe='')}"


def statement(manifest: ReleaseManifest, *, repo_url: str, matrix_sha256: str,
              recipes: Mapping[str, str], epoch: int,
              toolchains: Sequence[Toolchain]) -> dict[str, Any]:
    """The in-toto Statement of ``manifest``'s release as a JSON value."""
    repo_url = repo_url.rstrip("/")
    subjects = [{"name": a.record.name, "digest": {"sha256": a.record.sha256}}
                for a in sorted(manifest.assets, key=lambda a: a.record.name)]
    dependencies: list[dict[str, Any]] = [{
        "uri": f"git+{repo_url}@refs/tags/{manifest.tag}",
        "digest": {"gitCommit": manifest.commit},
    }]
    for tool in sorted(toolchains, key=lambda t: (t.name, t.version)):
        dependencies.append({
            "uri": _tool_uri(tool), "name": tool.name,
            "annotations": {"version": tool.version, "usedBy": list(tool.used_by)},
        })
    return {
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": repo_url + BUILD_TYPE,
                "externalParameters": {
                    "project": manifest.project,
                    "tag": manifest.tag,
                    "buildNumber": manifest.build_number,
                    "source": {"repository": repo_url, "commit": manifest.commit},
                    "matrix": {"path": "matrix/*.yaml", "digest": {"sha256": matrix_sha256}},
                },
                "internalParameters": {
                    "SOURCE_DATE_EPOCH": str(epoch),
                    "recipes": {entry_id: {"sha256": digest}
                                for entry_id, digest in sorted(recipes.items())},
                },
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {"id": repo_url + BUILDER, "version": {"kiln": __version__}},
                "metadata": {"startedOn": manifest.date, "finishedOn": manifest.date},
            },
        },
    }


def statement_text(value: Mapping[str, Any]) -> str:
    """The file's bytes: sorted keys, two-space indent, a newline at the end."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=True) + "\n"


def release_provenance(manifest: ReleaseManifest, *, repo_url: str, matrix_dir: Path,
                       recipes: Path, epoch: int) -> str:
    """``provenance.intoto.json`` of the release that ``manifest`` describes, built from the
    matrix in ``matrix_dir`` and the recipes in ``recipes`` at ``epoch`` (the commit time)."""
    records = [a.record for a in manifest.assets]
    return statement_text(statement(
        manifest, repo_url=repo_url, matrix_sha256=matrix_digest(matrix_dir),
        recipes=recipe_digests({r.entry_id: r.backend for r in records}, recipes),
        epoch=epoch, toolchains=toolchains_from_records(records)))


def provenance_comment(manifest: ReleaseManifest) -> str:
    """The trusted comment of the provenance's signature: the release's identity, as
    ``SHA256SUMS.minisig`` carries it, and the file it signs."""
    return f"{release_comment(manifest)} file {PROVENANCE_NAME}"


@dataclass(frozen=True, kw_only=True)
class Provenance:
    """What ``kiln verify`` reads back from a provenance statement."""

    subjects: Mapping[str, str]  # name -> sha256
    project: str
    tag: str
    commit: str


def parse_provenance(text: str, *, source: str) -> Provenance:
    """Parse a statement written by ``release_provenance``; anything else is an
    ``IntegrityError`` naming the field."""
    def bad(why: str) -> IntegrityError:
        return IntegrityError(f"{source}: {why}",
                              hint="the provenance was changed or not written by `kiln "
                                   "release`; do not trust the release")

    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise bad(f"not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise bad("expected a JSON object")
    if data.get("_type") != STATEMENT_TYPE:
        raise bad(f"_type is {data.get('_type')!r}, not {STATEMENT_TYPE}")
    if data.get("predicateType") != PREDICATE_TYPE:
        raise bad(f"predicateType is {data.get('predicateType')!r}, not {PREDICATE_TYPE}")
    subjects: dict[str, str] = {}
    raw = data.get("subject")
    if not isinstance(raw, list):
        raise bad("subject is not a list")
    for i, item in enumerate(raw):
        name = item.get("name") if isinstance(item, dict) else None
        digest = item.get("digest") if isinstance(item, dict) else None
        sha = digest.get("sha256") if isinstance(digest, dict) else None
        if not isinstance(name, str) or not isinstance(sha, str):
            raise bad(f"subject[{i}] is not {{name, digest: {{sha256}}}}")
        if name in subjects:
            raise bad(f"subject {name!r} is listed twice")
        subjects[name] = sha
    try:
        params = data["predicate"]["buildDefinition"]["externalParameters"]
        project, tag = params["project"], params["tag"]
        commit = params["source"]["commit"]
    except (KeyError, TypeError) as exc:
        raise bad(f"predicate.buildDefinition.externalParameters lacks {exc}") from exc
    if not all(isinstance(v, str) for v in (project, tag, commit)) or not COMMIT_RE.fullmatch(
            commit):
        raise bad("externalParameters: project, tag and source.commit must be strings "
                  "(a full commit id)")
    return Provenance(subjects=subjects, project=project, tag=tag, commit=commit)
