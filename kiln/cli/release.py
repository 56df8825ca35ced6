"""``kiln release`` and ``kiln publish``: the command-line edge of the release stage.

``kiln release`` reads the project settings, git state, signing key and matrix here, once, and
hands typed values to ``kiln.release.assemble`` (gate, manifest, assembly), ``kiln.release.notes``,
``kiln.release.sbom`` and ``kiln.release.sign``. ``kiln publish`` checks a release directory and
hands it to
the publisher that ``--to`` names (``kiln.publish``).
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kiln.cli import Context
from kiln.errors import ReleaseError
from kiln.files import atomic_write_text
from kiln.matrix import Matrix
from kiln.plan import make_job, plan
from kiln.publish import PublishOptions, load_release, publisher_for
from kiln.release.assemble import (
    LocalAsset,
    assemble,
    create_tag,
    expand_allowed,
    gate,
    load_project_config,
    release_manifest,
    scan_artifacts,
    tag_commit,
)
from kiln.release.manifest import (
    MANIFEST_NAME,
    PUBLIC_KEY_NAME,
    SBOM_NAME,
    SIGNATURE_NAME,
    SUMS_NAME,
    parse_tag,
)
from kiln.release.notes import check_links, git_changes, notes_context, previous_tag, render_notes
from kiln.release.sbom import cyclonedx, source_files, toolchains_from_jobs
from kiln.release.sign import MinisignSigner, resolve_key, scrub_env
from kiln.run import require_tool
from kiln.vcs import build_number, commit_sha, commit_time, is_dirty

__all__ = ["cmd_publish", "cmd_release", "register"]

NOTES_DIR = "release_notes"


def register(sub: Any) -> None:
    r = sub.add_parser(
        "release", help="collect, check, sign and describe a release (tag b<N>)",
        description="Collect the per-entry archives (built now, or downloaded from CI into "
                    "--artifacts), apply the completeness gate, and write the release "
                    "directory: archives, manifest.json, SHA256SUMS, its minisign signature, "
                    "minisign.pub, an SBOM and RELEASE_NOTES.md. Creates the annotated tag.")
    r.add_argument("--out", required=True, metavar="DIR", help="the release directory to write")
    r.add_argument("--tag", metavar="bN",
                   help="the tag (default: b<N> with N = git rev-list --count HEAD)")
    r.add_argument("--artifacts", metavar="DIR",
                   help="use the archives and .json records under DIR instead of building")
    r.add_argument("--allow-missing", nargs="+", action="extend", default=[], metavar="ID",
                   help="enabled entries (ids or globs) that may be missing; the notes say so")
    r.add_argument("--allow-dirty", action="store_true",
                   help="release from a work tree with uncommitted changes")
    r.add_argument("--signing-key", metavar="FILE",
                   help="minisign secret key (default: $KILN_SIGNING_KEY; password from "
                        "$KILN_SIGNING_PASSWORD)")
    r.add_argument("--base-url", metavar="URL",
                   help="download URL of the release's assets ({tag} is replaced; default: "
                        "the GitHub release of [tool.kiln] github)")
    r.add_argument("--no-git-tag", action="store_true",
                   help="do not create the git tag (it is still checked when it exists)")
    r.add_argument("--parallel", type=int, default=max(1, os.cpu_count() or 1), metavar="N",
                   help="builds run at once when building here")
    r.set_defaults(func=cmd_release)

    p = sub.add_parser(
        "publish", help="publish a release directory (file://PATH or github://OWNER/REPO)",
        description="Check a release directory (checksums, signature) and publish it. "
                    "Re-running after a failure resumes; nothing incomplete is ever visible "
                    "as published. GitHub needs GITHUB_TOKEN.")
    p.add_argument("dir", metavar="DIR", help="a directory made by `kiln release --out DIR`")
    p.add_argument("--to", required=True, metavar="URL",
                   help="file://PATH (mirror directory) or github://OWNER/REPO")
    p.set_defaults(func=cmd_publish)


def _log_dir(out: Path) -> Path:
    """Where a release's build logs go: beside ``--out`` (``release`` -> ``release-logs``),
    not in the scratch directory, which is deleted whatever happens, and not inside ``--out``,
    which holds only what ``SHA256SUMS`` lists. Emptied at the start of each release."""
    logs = out.absolute().parent / f"{out.absolute().name}-logs"
    if logs.exists():
        shutil.rmtree(logs)
    logs.mkdir(parents=True)
    return logs


def _build_here(ctx: Context, matrix: Matrix, number: int, out: Path,
                env: Mapping[str, str], *, log_dir: Path) -> tuple[tuple[LocalAsset, ...],
                                                                    dict[str, str]]:
    """Build every local enabled entry with ``kiln.build.jobs.build_jobs`` into ``out``, with
    the per-entry logs in ``log_dir`` (they outlive the build's scratch directory)."""
    try:
        build = importlib.import_module("kiln.build.jobs")
    except ModuleNotFoundError as exc:
        raise ReleaseError("this kiln cannot build yet (no kiln.build.jobs)",
                           hint="pass --artifacts DIR with built archives and records") from exc
    from kiln.build.toolchains import refusal

    failures: dict[str, str] = {}
    jobs = []
    for job in plan(matrix, build_number=number, local=True):
        # Entries whose backend this kiln cannot build yet are missing, with the reason; the
        # completeness gate then decides (--allow-missing).
        why = refusal(job.entry, ctx.repo / "recipes")
        if why is None:
            jobs.append(job)
        else:
            failures[job.entry.id] = f"not built here: {why}"
    if not jobs:
        return scan_artifacts(out), failures
    summary = build.build_jobs(jobs, repo=ctx.repo, out=out, env=env,
                               parallel=ctx.args.parallel, console=ctx.console,
                               log_dir=log_dir)
    for result in summary.results:
        if not result.ok:
            failures[str(result.entry_id)] = f"build failed here: {result.error}"
    return scan_artifacts(out), failures


def _pinned_toolchains() -> dict[str, str]:
    """Toolchain name -> pinned version, from the build stage's registry (``TOOLCHAINS`` of
    ``kiln.build.toolchains``), for the SBOM. Looked up by name so that the release stage keeps
    working while that registry grows."""
    try:
        module = importlib.import_module("kiln.build.toolchains")
    except ImportError:
        return {}
    table = getattr(module, "TOOLCHAINS", {})
    return {str(name): str(tc.version) for name, tc in table.items()
            if isinstance(getattr(tc, "version", None), str)}


def cmd_release(ctx: Context) -> int:
    a = ctx.args
    repo = ctx.repo
    matrix = ctx.matrix()
    config = load_project_config(repo / "pyproject.toml")
    env = scrub_env(ctx.env)
    head = commit_sha(repo, env)
    if is_dirty(repo, env):
        if not a.allow_dirty:
            raise ReleaseError(f"the work tree of {repo} has uncommitted changes",
                               hint="commit or stash them (a release is of a commit), or pass "
                                    "--allow-dirty")
        ctx.console.note("warning: releasing from a work tree with uncommitted changes")
    number = parse_tag(a.tag) if a.tag else build_number(repo, env)
    tag = a.tag or f"b{number}"
    tagged = tag_commit(repo, env, tag)
    if tagged is not None and tagged != head:
        raise ReleaseError(f"tag {tag} exists and points at {tagged[:12]}, not at HEAD "
                           f"({head[:12]})",
                           hint=f"check out {tag} to release it again, or pick another --tag")
    key = resolve_key(a.signing_key, ctx.env, repo=repo)
    require_tool("minisign", path=env.get("PATH"))  # fail now, not after a long build
    allowed = expand_allowed(matrix, a.allow_missing)
    epoch = commit_time(repo, env)
    out = Path(a.out)
    out.absolute().parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix=".kiln-build-", dir=out.absolute().parent) as tmp:
        failures: dict[str, str] = {}
        if a.artifacts:
            assets = scan_artifacts(Path(a.artifacts))
        else:
            build_env = dict(env)
            build_env.setdefault("SOURCE_DATE_EPOCH", str(epoch))
            assets, failures = _build_here(ctx, matrix, number, Path(tmp), build_env,
                                           log_dir=_log_dir(out))
        result = gate(matrix, assets, build_number=number, commit=head,
                      allow_missing=allowed, failures=failures)
        manifest = release_manifest(result, project=config.project, tag=tag,
                                    build_number=number, commit=head, commit_epoch=epoch,
                                    base_url=a.base_url.replace("{tag}", tag) if a.base_url
                                    else config.base_url(tag))
        signer = MinisignSigner(key, env=env)
        public_key = signer.public_key()
        previous = previous_tag(repo, env)
        context = notes_context(
            manifest, repo_url=config.repo_url, changes=git_changes(repo, env, previous),
            previous=previous, public_key=public_key,
            file_names={"sums": SUMS_NAME, "signature": SIGNATURE_NAME,
                        "public_key": PUBLIC_KEY_NAME, "manifest": MANIFEST_NAME,
                        "sbom": SBOM_NAME})
        notes = render_notes(repo / NOTES_DIR, context)
        check_links(notes, manifest)
        released = {x.record.entry_id for x in manifest.assets}
        sbom = cyclonedx(
            project=config.project, tag=tag, commit=head, date=manifest.date,
            repo_url=config.repo_url, sources=source_files(repo, env, config.sources),
            toolchains=toolchains_from_jobs({e.id: make_job(e, number).toolchain
                                             for e in matrix.enabled if e.id in released},
                                            pins=_pinned_toolchains()),
            assets={x.record.name: x.record.sha256 for x in manifest.assets})
        assemble(out, assets=result.assets, manifest=manifest, notes=notes, sbom=sbom,
                 signer=signer)

    if tagged is None and not a.no_git_tag:
        create_tag(repo, env, tag, head, f"{config.project} {tag}")
        ctx.console.line(f"created tag {tag} at {head[:12]} (push it: git push origin {tag})")
    kept = repo / NOTES_DIR / f"{tag}.md"
    atomic_write_text(kept, notes)  # release_notes/ exists: the template came from there

    rows = [[x.record.entry_id, x.record.name, str(x.record.size),
             x.record.verification.method] for x in manifest.assets]
    ctx.console.table(f"release {tag}: {len(rows)} assets", ["entry", "asset", "bytes",
                                                            "verified"], rows)
    for m in manifest.missing:
        ctx.console.line(f"missing (allowed): {m.entry_id}: {m.reason}")
    ctx.console.line(f"wrote {out} ({len(manifest.disabled)} disabled builds listed in the "
                     f"notes); notes kept as {kept.relative_to(repo)}")
    return 0


def cmd_publish(ctx: Context) -> int:
    release = load_release(Path(ctx.args.dir), env=ctx.env)
    publisher = publisher_for(ctx.args.to, PublishOptions(env=ctx.env, log=ctx.console.note))
    result = publisher.publish(release)
    if result.already_published:
        ctx.console.line(f"{release.tag} was already published to {result.destination}: "
                         f"{result.url}")
    else:
        ctx.console.line(f"published {release.tag} to {result.destination}: {result.url} "
                         f"({len(result.uploaded)} uploaded, {len(result.kept)} already there)")
    return 0
