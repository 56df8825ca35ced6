"""``reproduce()``: rebuild a published release from its commit and compare it byte for byte.

A release says which commit it was built from (``manifest.json``), with which toolchain each
asset was built (the records' ``toolchain``), its build number and, through the commit's time,
its ``SOURCE_DATE_EPOCH``. Anyone with a clone of the project can therefore check that the
signed assets come from that source:

1. read the release (a directory, or a ``file://`` / ``http(s)://`` URL of one, downloaded with
   a size cap per file into a scratch directory), check its checksums and its minisign
   signature;
2. check out the release's commit into a detached ``git worktree`` of the current repository;
3. refuse, before anything is built, an entry whose recorded toolchain is not the one this
   kiln would build it with (by name and version);
4. build the selected local entries with ``kiln.build.jobs.build_jobs`` from that worktree,
   with the release's build number and the commit's time, and with empty build caches: the
   pinned toolchains (and zig's libc cache) are shared with kiln's cache, the builds, the work
   directories and ccache's objects are not, so nothing of an earlier build is reused;
5. compare every rebuilt asset (archives and wheels) with the release's bytes; on a difference
   run ``diffoscope`` on the two files and keep its text and HTML report;
6. when everything that was rebuilt is identical, write an in-toto Statement v1 (predicate
   type ``PREDICATE_TYPE``) that names the reproduced assets with their sha256, signed with
   minisign when a key is given.

The report directory holds ``reproduce.json`` (every asset's outcome), ``logs/`` (build logs),
``rebuilt/`` and ``diffoscope/`` (only for differing assets) and, on a full match,
``reproduced.intoto.json`` with its signature and public key.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import platform
import shutil
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kiln import __version__
from kiln.build.cache import CacheLayout, default_cache_dir
from kiln.build.jobs import BuildSummary, build_jobs
from kiln.build.toolchains import TOOLCHAINS, recipe_for, refusal
from kiln.console import Console
from kiln.errors import (
    BuildError,
    ConfigError,
    IntegrityError,
    KilnError,
    SelectionError,
    ToolMissing,
)
from kiln.files import atomic_write_text, sha256_file
from kiln.matrix import Matrix, load_matrix
from kiln.package.records import AssetRecord, Tool
from kiln.plan import Job, make_job
from kiln.project import FILE as PROJECT_FILE
from kiln.project import Project, load_project
from kiln.release.manifest import (
    MANIFEST_MAX_BYTES,
    MANIFEST_NAME,
    PUBLIC_KEY_NAME,
    SIGNATURE_MAX_BYTES,
    SIGNATURE_NAME,
    SUMS_MAX_BYTES,
    SUMS_NAME,
    ReleaseAsset,
    ReleaseManifest,
    is_safe_name,
    iso_date,
    parse_sums,
    read_release,
)
from kiln.release.sign import (
    KEY_ENV,
    MinisignSigner,
    SigningKey,
    resolve_key,
    scrub_env,
    verify_signature,
)
from kiln.run import require_tool, run
from kiln.vcs import subdirectory

__all__ = [
    "DIFFERENT",
    "IDENTICAL",
    "NOT_REBUILT",
    "PREDICATE_TYPE",
    "REPORT_NAME",
    "SMALL_FILE_MAX_BYTES",
    "STATEMENT_NAME",
    "STATEMENT_TYPE",
    "AssetCheck",
    "ReproduceResult",
    "check_toolchains",
    "default_report_dir",
    "download_release",
    "fetch_capped",
    "outcome_error",
    "release_location",
    "reproduce",
    "reproduced_statement",
    "select_assets",
]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
# kiln's own predicate: "these subjects were rebuilt from the named commit and came out
# byte-identical" (docs/reproduce.md describes its fields).
PREDICATE_TYPE = "https://kiln.dev/reproduced/v1"
STATEMENT_NAME = "reproduced.intoto.json"
REPORT_NAME = "reproduce.json"
SIGNER_KEY_NAME = "reproduced.minisign.pub"
# Files of a release other than its assets are small; assets are capped at their signed size.
SMALL_FILE_MAX_BYTES = 16 << 20
IDENTICAL = "identical"
DIFFERENT = "DIFFERENT"
NOT_REBUILT = "not rebuilt"
# What a run writes into the report directory: removed first, so that nothing of an earlier
# run (a statement above all) survives into this one's.
_REPORT_PARTS = (STATEMENT_NAME, f"{STATEMENT_NAME}.minisig", SIGNER_KEY_NAME, REPORT_NAME,
                 "logs", "rebuilt", "diffoscope")


@dataclass(frozen=True, kw_only=True)
class AssetCheck:
    """One asset of the release and what its rebuild gave."""

    entry_id: str
    name: str
    status: str  # IDENTICAL, DIFFERENT or NOT_REBUILT
    released_sha256: str
    rebuilt_sha256: str | None = None
    why: str | None = None
    report: Path | None = None  # diffoscope's text report of a difference

    def to_json(self) -> dict[str, Any]:
        return {"entry_id": self.entry_id, "name": self.name, "status": self.status,
                "released_sha256": self.released_sha256, "rebuilt_sha256": self.rebuilt_sha256,
                "why": self.why, "report": None if self.report is None else self.report.name}


@dataclass(frozen=True, kw_only=True)
class ReproduceResult:
    manifest: ReleaseManifest
    checks: tuple[AssetCheck, ...]
    report_dir: Path
    statement: Path | None = None
    signed: bool = False
    build_failed: tuple[str, ...] = field(default=())

    @property
    def identical(self) -> tuple[AssetCheck, ...]:
        return tuple(c for c in self.checks if c.status == IDENTICAL)

    @property
    def different(self) -> tuple[AssetCheck, ...]:
        return tuple(c for c in self.checks if c.status == DIFFERENT)


# --------------------------------------------------------------------------------------------
# Where the release is


def release_location(text: str) -> tuple[str, str | Path]:
    """``("dir", Path)`` for a directory or a ``file://`` URL, ``("url", url)`` for an
    ``http(s)://`` URL; anything else is a ``ConfigError``."""
    if "://" not in text:
        return "dir", Path(text)
    parsed = urllib.parse.urlparse(text)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ConfigError(f"--release {text}: a file:// URL names a local path "
                              "(file:///path or file://localhost/path)")
        return "dir", Path(urllib.parse.unquote(parsed.path))
    if parsed.scheme in ("http", "https") and parsed.netloc:
        return "url", text.rstrip("/") + "/"
    raise ConfigError(f"--release {text}: not a directory nor a file://, http:// or https:// "
                      "URL", hint="pass the release directory or the URL it is published at")


def default_report_dir(release: str, manifest: ReleaseManifest, *, cwd: Path) -> Path:
    """Beside a release directory (``release`` -> ``release-reproduce``); for a downloaded
    release ``<project>-<tag>-reproduce`` in the current directory."""
    kind, where = release_location(release)
    if kind == "dir":
        path = Path(where).absolute()
        return path.parent / f"{path.name}-reproduce"
    return cwd / f"{manifest.project}-{manifest.tag}-reproduce"


# A function that opens a URL: yields the announced size (or None) and the body's chunks.
Opener = Callable[[str], contextlib.AbstractContextManager[tuple[int | None, Iterator[bytes]]]]


@contextlib.contextmanager
def _requests_open(url: str) -> Iterator[tuple[int | None, Iterator[bytes]]]:
    import requests

    try:
        resp = requests.get(url, timeout=30, stream=True,
                            headers={"User-Agent": f"kiln-reproduce/{__version__}",
                                     "Accept-Encoding": "identity"})
    except requests.RequestException as exc:
        raise ConfigError(f"cannot download {url}: {exc}",
                          hint="check --release and the network") from exc
    with resp:
        if resp.status_code != 200:
            raise ConfigError(f"cannot download {url}: HTTP {resp.status_code} {resp.reason}",
                              hint="check --release: the URL of the release's directory")
        length = resp.headers.get("Content-Length")
        announced = int(length) if length and length.isdigit() else None
        yield announced, resp.iter_content(1 << 16)


def fetch_capped(url: str, dest: Path, cap: int, *, opener: Opener = _requests_open) -> None:
    """Download ``url`` into ``dest``, refusing (``IntegrityError``) a body over ``cap``
    bytes, announced or not; nothing is left at ``dest`` on a failure."""
    def too_big() -> IntegrityError:
        return IntegrityError(f"{url}: larger than the {cap} bytes the release allows it",
                              hint="the server does not hold the release as it was signed")

    try:
        with opener(url) as (announced, chunks), dest.open("wb") as fh:
            if announced is not None and announced > cap:
                raise too_big()
            got = 0
            for chunk in chunks:
                got += len(chunk)
                if got > cap:
                    raise too_big()
                fh.write(chunk)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


def download_release(url: str, dest: Path, *, opener: Opener = _requests_open) -> Path:
    """Download the release published at ``url`` (its directory, with a trailing ``/``) into
    ``dest``: ``SHA256SUMS`` first, then every file it lists, each capped (an asset at the size
    ``manifest.json`` gives it, the other files at ``SMALL_FILE_MAX_BYTES``). Nothing is
    trusted yet: ``read_release`` and the signature check come after."""
    base = url if url.endswith("/") else url + "/"
    dest.mkdir(parents=True, exist_ok=True)
    fetch_capped(base + SUMS_NAME, dest / SUMS_NAME, SUMS_MAX_BYTES, opener=opener)
    listed = parse_sums((dest / SUMS_NAME).read_text(encoding="utf-8", errors="replace"),
                        source=base + SUMS_NAME)
    bad = sorted(n for n in listed if not is_safe_name(n))
    if bad:
        raise IntegrityError(f"{base}{SUMS_NAME}: file names that are not plain names: "
                             f"{', '.join(repr(n) for n in bad[:5])}")
    fetch_capped(base + SIGNATURE_NAME, dest / SIGNATURE_NAME, SIGNATURE_MAX_BYTES,
                 opener=opener)
    fetch_capped(base + MANIFEST_NAME, dest / MANIFEST_NAME, MANIFEST_MAX_BYTES, opener=opener)
    try:
        raw = json.loads((dest / MANIFEST_NAME).read_text(encoding="utf-8"))
        sizes = {str(a["name"]): int(a["size"]) for a in raw["assets"]}
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{base}{MANIFEST_NAME}: not a release manifest ({exc})") from exc
    for name in sorted(listed):
        if name in (MANIFEST_NAME, SIGNATURE_NAME, SUMS_NAME):
            continue
        fetch_capped(base + urllib.parse.quote(name), dest / name,
                     sizes.get(name, SMALL_FILE_MAX_BYTES), opener=opener)
    return dest


# --------------------------------------------------------------------------------------------
# What to rebuild


def select_assets(manifest: ReleaseManifest, only: Sequence[str]) -> tuple[ReleaseAsset, ...]:
    """The release's assets of the entries ``only`` names (ids or globs, as ``kiln build``
    and ``--allow-missing`` take them); all of them when ``only`` is empty. A pattern that
    names no entry of the release is a ``SelectionError``."""
    if not only:
        return manifest.assets
    ids = sorted({a.record.entry_id for a in manifest.assets})
    chosen: set[str] = set()
    for pattern in only:
        hits = [i for i in ids if fnmatch.fnmatchcase(i, pattern)]
        if not hits:
            raise SelectionError(f"--only {pattern}: no asset of release {manifest.tag} is of "
                                 "such an entry",
                                 hint="the release's entries: " + ", ".join(ids))
        chosen.update(hits)
    return tuple(a for a in manifest.assets if a.record.entry_id in chosen)


def _tools_text(tools: Sequence[Tool]) -> str:
    return ", ".join(f"{t.name} {t.version}" for t in tools) or "none"


def check_toolchains(records: Sequence[AssetRecord],
                     expected: Mapping[str, Sequence[Tool]]) -> list[str]:
    """For each record whose entry has an ``expected`` toolchain (what this kiln would build
    it with), a line naming the difference when the release's recorded toolchain is not the
    same programs at the same versions."""
    problems: list[str] = []
    for r in records:
        want = expected.get(r.entry_id)
        if want is None:
            continue
        have = {t.name: t.version for t in r.toolchain}
        here = {t.name: t.version for t in want}
        if have == here:
            continue
        parts = []
        for name in sorted(set(have) | set(here)):
            if have.get(name) != here.get(name):
                parts.append(f"{name} {have.get(name, '(not used)')} in the release, "
                             f"{here.get(name, '(not used)')} here")
        problems.append(f"{r.entry_id} ({r.name}): " + "; ".join(parts))
    return problems


def _commit_known(repo: Path, commit: str, env: Mapping[str, str]) -> bool:
    done = run(["git", "-C", str(repo), "cat-file", "-e", f"{commit}^{{commit}}"], env=env,
               check=False, what="git cat-file")
    return done.returncode == 0


@contextlib.contextmanager
def _worktree(repo: Path, commit: str, dest: Path, env: Mapping[str, str]) -> Iterator[Path]:
    """A detached worktree of ``repo`` at ``commit``, removed afterwards."""
    run(["git", "-C", str(repo), "worktree", "add", "--detach", "--quiet", str(dest), commit],
        env=env, what="git worktree add")
    try:
        yield dest
    finally:
        run(["git", "-C", str(repo), "worktree", "remove", "--force", str(dest)], env=env,
            check=False, what="git worktree remove")
        shutil.rmtree(dest, ignore_errors=True)
        run(["git", "-C", str(repo), "worktree", "prune"], env=env, check=False,
            what="git worktree prune")


# --------------------------------------------------------------------------------------------
# The statement


def reproduced_statement(manifest: ReleaseManifest, checks: Sequence[AssetCheck], *,
                         epoch: int, toolchains: Mapping[str, Sequence[Tool]],
                         date: str) -> dict[str, Any]:
    """The in-toto Statement v1 that says: these assets of ``manifest`` were rebuilt from its
    commit and are byte-identical. ``toolchains`` (entry id -> tools) are the rebuilding
    machine's; ``date`` is when the rebuild was made."""
    subjects = [{"name": c.name, "digest": {"sha256": c.released_sha256}}
                for c in sorted(checks, key=lambda c: c.name) if c.status == IDENTICAL]
    return {
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "project": manifest.project,
            "tag": manifest.tag,
            "build_number": manifest.build_number,
            "commit": manifest.commit,
            "source_date_epoch": epoch,
            "release_date": manifest.date,
            "reproduced_at": date,
            "rebuilder": {
                "kiln_version": __version__,
                "machine": f"{platform.system()} {platform.machine()}",
                "toolchains": {entry_id: [{"name": t.name, "version": t.version}
                                          for t in tools]
                               for entry_id, tools in sorted(toolchains.items())},
            },
            "not_rebuilt": [{"name": c.name, "entry_id": c.entry_id, "why": c.why}
                            for c in sorted(checks, key=lambda c: c.name)
                            if c.status == NOT_REBUILT],
        },
    }


def outcome_error(result: ReproduceResult) -> KilnError | None:
    """The error a run ends with (after its table is shown), or ``None`` on a full match:
    ``IntegrityError`` when an asset differs, ``BuildError`` when a rebuild failed."""
    if result.different:
        names = ", ".join(c.name for c in result.different)
        return IntegrityError(
            f"{len(result.different)} asset(s) of {result.manifest.tag} differ from their "
            f"rebuild from commit {result.manifest.commit[:12]}: {names}",
            hint=f"diffoscope's reports are in {result.report_dir / 'diffoscope'}")
    if result.build_failed:
        return BuildError(f"the rebuild of {', '.join(result.build_failed)} failed or did not "
                          "make every asset the release has of it",
                          hint=f"the build logs are in {result.report_dir / 'logs'}")
    if not result.identical:
        return BuildError("nothing was reproduced: no asset of the selection was rebuilt",
                          hint="pick entries that build here with --only")
    return None


# --------------------------------------------------------------------------------------------
# The whole of it


def _clear_report_dir(report_dir: Path) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    for name in _REPORT_PARTS:
        path = report_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _diffoscope(released: Path, rebuilt: Path, report_dir: Path,
                env: Mapping[str, str]) -> Path:
    out = report_dir / "diffoscope"
    out.mkdir(parents=True, exist_ok=True)
    text = out / f"{released.name}.txt"
    html = out / f"{released.name}.html"
    # diffoscope exits 1 when the files differ, which is expected here; 2 is its own failure.
    done = run(["diffoscope", "--no-progress", "--text", str(text), "--html", str(html),
                str(released), str(rebuilt)], env=env, check=False,
               what=f"diffoscope {released.name}")
    if done.returncode not in (0, 1) or not text.is_file():
        text.write_text(f"diffoscope failed (exit {done.returncode}):\n{done.stdout}"
                        f"{done.stderr}", encoding="utf-8")
    return text


def _tools_here(jobs: Sequence[Job], recipes: Path) -> dict[str, tuple[Tool, ...]]:
    return {j.entry.id: tuple(TOOLCHAINS[recipe_for(j.entry, recipes).toolchain].tools(j))
            for j in jobs}


def _plan_jobs(matrix: Matrix, assets: Sequence[ReleaseAsset], number: int,
               recipes: Path, project: Project) -> tuple[list[Job], dict[str, str]]:
    """The jobs to rebuild (named as ``project`` names its archives), and why each other
    entry is not rebuilt here."""
    jobs: list[Job] = []
    skipped: dict[str, str] = {}
    for entry_id in sorted({a.record.entry_id for a in assets}):
        try:
            entry = matrix.get(entry_id)
        except KeyError:
            skipped[entry_id] = "not an entry of the commit's matrix"
            continue
        why = refusal(entry, recipes)
        if why is not None:
            skipped[entry_id] = why
            continue
        jobs.append(make_job(entry, number, project.names))
    return jobs, skipped


def reproduce(release: str, *, repo: Path, only: Sequence[str] = (),
              report_dir: Path | None = None, signing_key: str | None = None,
              public_key: Path | None = None, parallel: int = 1,
              env: Mapping[str, str] | None = None, console: Console | None = None,
              cwd: Path | None = None) -> ReproduceResult:
    """Rebuild the local assets of ``release`` (a directory or URL) from its commit in
    ``repo`` and compare them; see the module docstring. ``public_key`` pins the key the
    release must be signed with (default: the release's own ``minisign.pub``, which only
    proves that the files belong together). ``signing_key`` (or ``$KILN_SIGNING_KEY``) signs
    the statement; without one it is written unsigned. Returns the outcome; ``outcome_error``
    says what it ends with. Raises ``ConfigError`` (the commit is not in ``repo``),
    ``ToolMissing`` (a recorded toolchain is not this kiln's), ``IntegrityError`` (the
    release's sums or signature) and the build stage's errors."""
    env_in: Mapping[str, str] = dict(os.environ) if env is None else env
    console = console or Console.from_env(env_in)
    genv = scrub_env(env_in)
    repo = repo.absolute()
    for tool in ("git", "minisign", "diffoscope"):
        require_tool(tool, path=genv.get("PATH"))
    key: SigningKey | None = None
    if signing_key or env_in.get(KEY_ENV):
        key = resolve_key(signing_key, env_in, repo=repo)

    with tempfile.TemporaryDirectory(prefix="kiln-reproduce-") as tmp_text:
        tmp = Path(tmp_text)
        kind, where = release_location(release)
        if kind == "url":
            console.note(f"downloading {where}")
            directory = download_release(str(where), tmp / "release")
        else:
            directory = Path(where)
        manifest, _files = read_release(directory)
        pub = public_key or directory / PUBLIC_KEY_NAME
        verify_signature(directory / SUMS_NAME, directory / SIGNATURE_NAME, pub, env=genv)
        # Everything `kiln verify` checks (manifest, provenance, index, floors), before any
        # rebuild: a release that does not verify is not worth reproducing.
        from kiln.release.check import public_key_from, verify_release

        checked = verify_release(directory, key=public_key_from(str(pub)))
        if checked.error is not None:
            raise checked.error
        console.note(f"release {manifest.project} {manifest.tag}: verified as `kiln verify` "
                     f"does ({'pinned key ' + str(pub) if public_key else PUBLIC_KEY_NAME})")
        assets = select_assets(manifest, only)
        out_dir = Path(os.path.abspath(report_dir or default_report_dir(
            release, manifest, cwd=cwd or Path.cwd())))
        if out_dir.resolve() == directory.resolve():
            raise ConfigError(f"--report-dir {out_dir} is the release directory itself",
                              hint="a release directory holds only what `kiln release` wrote; "
                                   "pick another directory")
        if not _commit_known(repo, manifest.commit, genv):
            raise ConfigError(
                f"release {manifest.tag} was built from commit {manifest.commit}, which is not "
                f"in the repository {repo}",
                hint=f"fetch it (git fetch origin {manifest.tag} or the branch that holds it) "
                     "and run again from that clone")

        with _worktree(repo, manifest.commit, tmp / "source", genv) as source:
            # the project's directory in the commit (a project in a subdirectory of its
            # repository, kiln -C examples/llamacpp, is rebuilt from there)
            root = source / subdirectory(repo, genv)
            project = _project_of(root, repo)
            matrix = load_matrix(root / "matrix")
            jobs, skipped = _plan_jobs(matrix, assets, manifest.build_number,
                                       root / "recipes", project)
            tools = _tools_here(jobs, root / "recipes")
            problems = check_toolchains([a.record for a in assets], tools)
            if problems:
                raise ToolMissing(
                    "the release was built with other toolchains than this kiln builds with:\n"
                    + "\n".join(f"  - {p}" for p in problems),
                    hint="run `kiln reproduce` with the kiln of the release's commit (its "
                         "pins are the release's), or leave those entries out with --only")
            if not jobs:
                raise SelectionError(
                    "nothing of the selection can be rebuilt here:\n" + "\n".join(
                        f"  - {k}: {v}" for k, v in sorted(skipped.items())),
                    hint="pick local entries with --only, e.g. --only ubuntu-x64")
            epoch = int(run(["git", "-C", str(source), "log", "-1", "--format=%ct", "HEAD"],
                            env=genv, what="git log").stdout.strip())
            if iso_date(epoch) != manifest.date:
                console.note(f"warning: the commit's time {iso_date(epoch)} is not the "
                             f"release's date {manifest.date}")
            _clear_report_dir(out_dir)
            summary = _rebuild(jobs, source=root, scratch=tmp, env=genv, epoch=epoch,
                               project=project,
                               parallel=parallel, console=console, log_dir=out_dir / "logs")
            checks, failed = _compare(assets, skipped, summary, released=directory,
                                      rebuilt=tmp / "out",
                                      report_dir=out_dir, env=genv)

    result = ReproduceResult(manifest=manifest, checks=tuple(checks), report_dir=out_dir,
                             build_failed=tuple(failed))
    atomic_write_text(out_dir / REPORT_NAME, json.dumps(
        {"tag": manifest.tag, "commit": manifest.commit,
         "assets": [c.to_json() for c in checks]}, indent=2, sort_keys=True) + "\n")
    if result.different or result.build_failed or not result.identical:
        return result
    body = reproduced_statement(manifest, checks, epoch=epoch, toolchains=tools,
                                date=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    statement = out_dir / STATEMENT_NAME
    atomic_write_text(statement, json.dumps(body, indent=2, sort_keys=True) + "\n")
    signed = False
    if key is not None:
        signer = MinisignSigner(key, env=genv)
        signer.sign(statement, out_dir / f"{STATEMENT_NAME}.minisig",
                    trusted_comment=f"kiln reproduced {manifest.project} {manifest.tag} "
                                    f"commit {manifest.commit}")
        atomic_write_text(out_dir / SIGNER_KEY_NAME, signer.public_key())
        signed = True
    return ReproduceResult(manifest=manifest, checks=tuple(checks), report_dir=out_dir,
                           statement=statement, signed=signed)


def _project_of(source: Path, repo: Path) -> Project:
    """The project the release's commit describes; a commit from before kiln.toml existed is
    read with this checkout's description (what the stages did then is what it says now)."""
    if (source / PROJECT_FILE).is_file():
        return load_project(source)
    return replace(load_project(repo), root=source.absolute())


def _rebuild(jobs: Sequence[Job], *, source: Path, scratch: Path, env: Mapping[str, str],
             epoch: int, parallel: int, console: Console, log_dir: Path,
             project: Project) -> BuildSummary:
    build_env = dict(env)
    build_env["SOURCE_DATE_EPOCH"] = str(epoch)
    # Empty build caches (builds/, work/, ccache/ under the scratch directory); the pinned
    # toolchains and zig's libc cache of kiln's own cache are shared.
    layout = CacheLayout.at(default_cache_dir(env)).fresh(scratch / "cache")
    return build_jobs(jobs, repo=source, out=scratch / "out", env=build_env,
                      parallel=parallel, console=console, layout=layout, log_dir=log_dir,
                      project=project)


def _compare(assets: Sequence[ReleaseAsset], skipped: Mapping[str, str],
             summary: BuildSummary, *, released: Path, rebuilt: Path, report_dir: Path,
             env: Mapping[str, str]) -> tuple[list[AssetCheck], list[str]]:
    failures = {r.entry_id: r for r in summary.results if not r.ok}
    missing: set[str] = set()
    checks: list[AssetCheck] = []
    for a in assets:
        r = a.record

        def outcome(status: str, *, why: str | None = None, digest: str | None = None,
                    report: Path | None = None, r: AssetRecord = r) -> AssetCheck:
            return AssetCheck(entry_id=r.entry_id, name=r.name, status=status,
                              released_sha256=r.sha256, rebuilt_sha256=digest, why=why,
                              report=report)

        mine = rebuilt / r.name
        if r.entry_id in skipped:
            checks.append(outcome(NOT_REBUILT, why=skipped[r.entry_id]))
        elif r.entry_id in failures:
            first = (failures[r.entry_id].error or "failed").splitlines()[0]
            checks.append(outcome(NOT_REBUILT, why=f"build failed: {first}"))
        elif not mine.is_file():
            checks.append(outcome(NOT_REBUILT, why="the rebuild made no such file"))
            missing.add(r.entry_id)
        elif (digest := sha256_file(mine)) == r.sha256:
            checks.append(outcome(IDENTICAL, digest=digest))
        else:
            keep = report_dir / "rebuilt"
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(mine, keep / r.name)
            report = _diffoscope(released / r.name, keep / r.name, report_dir, env)
            checks.append(outcome(DIFFERENT, digest=digest, report=report))
    return checks, sorted(set(failures) | missing)
