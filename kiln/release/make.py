"""``make_release()``: the whole of a release as one call, for ``kiln release`` and for
pipelines that use kiln as a library.

It reads the project settings, git state, signing key and matrix once, and hands typed values
to ``kiln.release.assemble`` (gate, manifest, assembly), ``kiln.release.notes``,
``kiln.release.sbom`` and ``kiln.release.sign``: check the work tree and the tag, build the
local entries (or take ``artifacts``), apply the completeness gate, write the manifest, notes
and SBOM, sign, assemble the directory atomically, create the tag, and keep the notes under
``release_notes/``.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kiln.console import Console
from kiln.errors import KilnError, ReleaseError
from kiln.files import atomic_write_text
from kiln.matrix import Matrix, load_matrix
from kiln.plan import artifact_name, plan
from kiln.project import Project, load_project
from kiln.release.assemble import (
    LocalAsset,
    assemble,
    create_tag,
    expand_allowed,
    gate,
    release_manifest,
    scan_artifacts,
    tag_commit,
)
from kiln.release.index import matrix_index
from kiln.release.install_scripts import Installer
from kiln.release.manifest import (
    MANIFEST_NAME,
    PUBLIC_KEY_NAME,
    SBOM_NAME,
    SIGNATURE_NAME,
    SUMS_NAME,
    ReleaseManifest,
    iso_date,
    parse_tag,
)
from kiln.release.notes import check_links, git_changes, notes_context, previous_tag, render_notes
from kiln.release.page.render import BENCH_NAME, PAGE_FILES, read_bench, release_page
from kiln.release.provenance import release_provenance
from kiln.release.sbom import (
    cyclonedx,
    source_files,
    toolchains_from_records,
    vendored_components,
)
from kiln.release.sign import MinisignSigner, resolve_key, scrub_env
from kiln.run import require_tool
from kiln.vcs import build_number, commit_sha, commit_time, is_dirty, subdirectory

__all__ = ["NOTES_DIR", "ReleaseResult", "log_dir_for", "make_release", "measured_floors"]

NOTES_DIR = "release_notes"


@dataclass(frozen=True, kw_only=True)
class ReleaseResult:
    """What ``make_release`` made: the directory, its manifest (the assets, the missing and
    disabled entries), where the notes were kept, and whether the tag was created now."""

    tag: str
    git_tag: str  # the tag in the project's repository: tag_prefix + tag
    commit: str
    out: Path
    manifest: ReleaseManifest
    notes: Path
    tag_created: bool


def log_dir_for(out: Path) -> Path:
    """Where a release's build logs go: beside ``out`` (``release`` -> ``release-logs``), not
    in the scratch directory, which is deleted whatever happens, and not inside ``out``, which
    holds only what ``SHA256SUMS`` lists. Emptied at the start of each release."""
    logs = out.absolute().parent / f"{out.absolute().name}-logs"
    if logs.exists():
        shutil.rmtree(logs)
    logs.mkdir(parents=True)
    return logs


def _build_here(matrix: Matrix, number: int, out: Path, env: Mapping[str, str], *,
                repo: Path, project: Project, parallel: int, console: Console, log_dir: Path,
                seconds: dict[str, float]) -> tuple[tuple[LocalAsset, ...], dict[str, str]]:
    """Build every local enabled entry with ``kiln.build.jobs.build_jobs`` into ``out``, with
    the per-entry logs in ``log_dir`` (they outlive the build's scratch directory); each
    entry's build time goes into ``seconds``."""
    try:
        build = importlib.import_module("kiln.build.jobs")
    except ModuleNotFoundError as exc:
        raise ReleaseError("this kiln cannot build yet (no kiln.build.jobs)",
                           hint="pass --artifacts DIR with built archives and records") from exc
    from kiln.build.toolchains import refusal

    failures: dict[str, str] = {}
    jobs = []
    for job in plan(matrix, build_number=number, local=True, names=project.names):
        # Entries whose backend this kiln cannot build yet are missing, with the reason; the
        # completeness gate then decides (--allow-missing).
        why = refusal(job.entry, repo / "recipes")
        if why is None:
            jobs.append(job)
        else:
            failures[job.entry.id] = f"not built here: {why}"
    if not jobs:
        return scan_artifacts(out), failures
    summary = build.build_jobs(jobs, repo=repo, out=out, env=env, parallel=parallel,
                               console=console, log_dir=log_dir, project=project)
    for result in summary.results:
        seconds[str(result.entry_id)] = result.seconds
        if not result.ok:
            failures[str(result.entry_id)] = f"build failed here: {result.error}"
    return scan_artifacts(out), failures


def _check_names(project: Project, matrix: Matrix, assets: Sequence[LocalAsset],
                 number: int) -> None:
    """Every archive is named as the project names its archives (kiln.toml's project.name and
    project.archive): archives of another project, or of a build that named them otherwise,
    are never released under this project's name."""
    wrong = []
    for a in assets:
        r = a.record
        if r.kind != "archive":
            continue
        want = artifact_name(matrix.get(r.entry_id), number, project.names)
        if r.name != want:
            wrong.append(f"{r.name} (expected {want})")
    if wrong:
        raise ReleaseError(f"archives not named as {project.name}'s kiln.toml names them: "
                           + ", ".join(wrong),
                           hint="release the archives this project's builds made (kiln -C "
                                "the project's directory)")


def measured_floors(matrix: Matrix, assets: Sequence[LocalAsset]
                    ) -> dict[str, dict[str, str | int | None]]:
    """The floors read from each archive's binaries (``kiln.verify.floors``), by asset name.
    A floor above what the matrix promises fails the release, naming the file and the floor:
    a build that silently needs a newer glibc or OS than its entry says is not released."""
    from kiln.verify.floors import check_promise, measure_archive

    by_id = {e.id: e for e in matrix.entries}
    out: dict[str, dict[str, str | int | None]] = {}
    broken: list[str] = []
    for a in assets:  # archives and wheels: a wheel's library is measured like the archive's
        floors = measure_archive(a.path)
        entry = by_id.get(a.record.entry_id)
        if entry is not None:
            broken += [f"{a.record.entry_id}: {why}"
                       for why in check_promise(floors, entry.requirements())]
        out[a.record.name] = floors.to_json()
    if broken:
        raise ReleaseError("floors measured in the binaries are above what the matrix "
                           "promises:\n  " + "\n  ".join(broken),
                           hint="lower what the code needs, or raise the entry's floor in "
                                "matrix/ on purpose (the notes then say it rose)")
    return out


def _manifest_entry(manifest: ReleaseManifest, asset: str) -> str:
    """The entry id of the asset named ``asset``."""
    return next(a.record.entry_id for a in manifest.assets if a.record.name == asset)


def _floor_changes(notes_dir: Path, previous: str | None,
                  floors: Mapping[str, Mapping[str, str | int | None]]) -> list[str]:
    """What differs between the floors measured now (by entry id) and those kept for the
    previous release (``<notes_dir>/<previous>.floors.json``, by entry id), one sentence per
    change, for the notes; nothing when the previous release kept none."""
    from kiln.verify.floors import FLOOR_FIELDS, Floors, describe_changes

    if previous is None:
        return []
    path = notes_dir / f"{previous}.floors.json"
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(old, dict):
        return []
    out: list[str] = []
    for entry, value in sorted(floors.items()):
        before = old.get(entry)
        if not isinstance(before, dict):
            continue
        def pick(d: Mapping[str, object]) -> dict[str, object]:
            return {k: d.get(k) for k in FLOOR_FIELDS}
        try:
            a, b = Floors.from_json(pick(before)), Floors.from_json(pick(value))
        except KilnError:
            continue
        out += [f"{entry}: {c}" for c in describe_changes(a, b)]
    return out


def _previous_sizes(notes_dir: Path, previous: str | None) -> dict[str, int]:
    """The asset sizes kept for the previous release (``<notes_dir>/<previous>.sizes.json``:
    entry id, or wheel name, -> bytes); nothing when it kept none."""
    if previous is None:
        return {}
    try:
        data = json.loads((notes_dir / f"{previous}.sizes.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): v for k, v in data.items()
            if isinstance(v, int) and not isinstance(v, bool) and v >= 0}


def _sizes(manifest: ReleaseManifest) -> dict[str, int]:
    return {(a.record.entry_id if a.record.kind == "archive" else a.record.name): a.record.size
            for a in manifest.assets}


def make_release(out: Path, *, repo: Path, tag: str | None = None,
                 artifacts: Path | None = None, allow_missing: Sequence[str] = (),
                 allow_dirty: bool = False, signing_key: str | None = None,
                 base_url: str | None = None, git_tag: bool = True,
                 parallel: int | None = None, matrix: Matrix | None = None,
                 env: Mapping[str, str] | None = None,
                 console: Console | None = None, bench: Path | None = None) -> ReleaseResult:
    """Write the signed release directory ``out`` for the commit checked out in ``repo``.

    ``tag`` defaults to ``b<N>`` with N = ``git rev-list --count HEAD``. With ``artifacts``,
    the archives and ``.json`` records under it are released; without, the local enabled
    entries are built here (``parallel`` at once). ``allow_missing`` names enabled entries
    (ids or globs) that may be missing. ``signing_key`` is a minisign secret key file
    (default: ``$KILN_SIGNING_KEY``; password from ``$KILN_SIGNING_PASSWORD``). ``base_url``
    is where the assets will be downloaded from (``{tag}`` is replaced). The annotated tag is
    created unless ``git_tag`` is false (an existing one must point at HEAD); its name is
    kiln.toml's ``release.tag_prefix`` followed by the tag. ``env`` defaults
    to ``os.environ``; ``console`` (for warnings and build progress) to standard error.
    ``bench`` is a ``bench/bench_cpu.py --json`` report the release carries (``bench-cpu.json``)
    and its page draws.
    Raises ``ReleaseError`` (exit code 9) and the errors of the steps."""
    env_in: Mapping[str, str] = dict(os.environ) if env is None else env
    console = console or Console.from_env(env_in, stream=sys.stderr)
    matrix = matrix or load_matrix(repo / "matrix")
    project = load_project(repo)
    config = project.release_settings()
    genv = scrub_env(env_in)
    head = commit_sha(repo, genv)
    if is_dirty(repo, genv):
        if not allow_dirty:
            raise ReleaseError(f"the work tree of {repo} has uncommitted changes",
                               hint="commit or stash them (a release is of a commit), or pass "
                                    "--allow-dirty")
        console.note("warning: releasing from a work tree with uncommitted changes")
    number = parse_tag(tag) if tag else build_number(repo, genv)
    tag = tag or f"b{number}"
    tag_name = config.git_tag(tag)  # the project's tag in its repository (release.tag_prefix)
    tagged = tag_commit(repo, genv, tag_name)
    if tagged is not None and tagged != head:
        raise ReleaseError(f"tag {tag_name} exists and points at {tagged[:12]}, not at HEAD "
                           f"({head[:12]})",
                           hint=f"check out {tag_name} to release it again, or pick another "
                                "--tag")
    key = resolve_key(signing_key, env_in, repo=repo)
    require_tool("minisign", path=genv.get("PATH"))  # fail now, not after a long build
    allowed = expand_allowed(matrix, allow_missing)
    bench_text, bench_data = (read_bench(Path(bench), source=f"--bench {bench}")
                              if bench is not None else (None, None))
    epoch = commit_time(repo, genv)
    out = Path(out)
    out.absolute().parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix=".kiln-build-", dir=out.absolute().parent) as tmp:
        failures: dict[str, str] = {}
        seconds: dict[str, float] = {}
        if artifacts is not None:
            assets = scan_artifacts(Path(artifacts))
        else:
            build_env = dict(genv)
            build_env.setdefault("SOURCE_DATE_EPOCH", str(epoch))
            assets, failures = _build_here(
                matrix, number, Path(tmp), build_env, repo=repo, project=project,
                parallel=parallel or max(1, os.cpu_count() or 1), console=console,
                log_dir=log_dir_for(out), seconds=seconds)
        result = gate(matrix, assets, build_number=number, commit=head,
                      allow_missing=allowed, failures=failures)
        _check_names(project, matrix, result.assets, number)
        floors = measured_floors(matrix, result.assets)
        manifest = release_manifest(result, project=project.name, tag=tag,
                                    build_number=number, commit=head, commit_epoch=epoch,
                                    base_url=base_url.replace("{tag}", tag) if base_url
                                    else config.base_url(tag))
        signer = MinisignSigner(key, env=genv)
        public_key = signer.public_key()
        previous = previous_tag(repo, genv, prefix=config.tag_prefix)
        by_entry = {_manifest_entry(manifest, name): value for name, value in floors.items()}
        changed = _floor_changes(repo / NOTES_DIR, previous, by_entry)
        context = notes_context(
            manifest, repo_url=config.repo_url,
            changes=git_changes(repo, genv, config.git_tag(previous) if previous else None,
                                paths=(".",) if subdirectory(repo, genv) else ()),
            previous=previous, public_key=public_key, tag_prefix=config.tag_prefix,
            sdist=project.sdist,
            file_names={"sums": SUMS_NAME, "signature": SIGNATURE_NAME,
                        "public_key": PUBLIC_KEY_NAME, "manifest": MANIFEST_NAME,
                        "sbom": SBOM_NAME, "page": PAGE_FILES[0]},
            floor_changes=changed)
        notes = render_notes(repo / NOTES_DIR, context)
        check_links(notes, manifest)
        sbom = cyclonedx(
            project=project.name, tag=tag, commit=head, date=manifest.date,
            repo_url=config.repo_url, sources=source_files(repo, genv, config.sources),
            sdist=project.sdist,
            toolchains=toolchains_from_records(x.record for x in manifest.assets),
            assets={x.record.name: x.record.sha256 for x in manifest.assets},
            vendored=vendored_components(repo, config.third_party))
        # The signed build provenance (in-toto Statement, SLSA provenance v1).
        provenance = release_provenance(manifest, repo_url=config.repo_url,
                                        matrix_dir=matrix.root, recipes=repo / "recipes",
                                        epoch=epoch)
        index = matrix_index(manifest, matrix, floors=floors,
                             expiry_days=config.index_expiry_days)
        if index.expires <= iso_date(int(time.time())):
            raise ReleaseError(f"the index of {tag} would have expired on {index.expires} "
                               f"(the commit is from {manifest.date})",
                               hint="raise kiln.toml's release.index_expiry_days, or release "
                                    "a newer commit")
        # The release page (index.html and its style and script), from the index.
        extra = release_page(manifest, index, repo_url=config.repo_url, previous_tag=previous,
                             previous=_previous_sizes(repo / NOTES_DIR, previous),
                             build_seconds=seconds, bench=bench_data)
        if bench_text is not None:
            extra[BENCH_NAME] = bench_text
        assemble(out, assets=result.assets, manifest=manifest, notes=notes, sbom=sbom,
                 signer=signer, index=index, provenance=provenance, extra=extra,
                 installer=Installer.of(project))

    created = tagged is None and git_tag
    if created:
        create_tag(repo, genv, tag_name, head, f"{project.name} {tag}")
    kept = repo / NOTES_DIR / f"{tag}.md"
    atomic_write_text(kept, notes)  # release_notes/ exists: the template came from there
    # The measured floors, kept beside the notes so the next release can say what changed.
    atomic_write_text(repo / NOTES_DIR / f"{tag}.floors.json",
                      json.dumps(by_entry, indent=2, sort_keys=True) + "\n")
    # The sizes, for the next release's page (the change per archive).
    atomic_write_text(repo / NOTES_DIR / f"{tag}.sizes.json",
                      json.dumps(_sizes(manifest), indent=2, sort_keys=True) + "\n")
    return ReleaseResult(tag=tag, git_tag=tag_name, commit=head, out=out, manifest=manifest,
                         notes=kept, tag_created=created)

