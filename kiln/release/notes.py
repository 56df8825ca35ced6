"""Release notes: Python computes every line's content, a Jinja2 template prints it.

Inputs: the git history since the previous ``b<N>`` tag (``previous_tag``, ``git_changes``),
the release manifest (assets, missing entries) and the matrix's disabled entries. Output:
``RELEASE_NOTES.md``, rendered from ``release_notes/release.md.j2`` with ``StrictUndefined``
(a misspelt variable is an error, not an empty string).

Markdown is computed here: commit subjects are escaped, then ``(#123)`` becomes a link to the
pull request. ``check_links`` makes sure every asset of the manifest is linked from the
rendered notes, so a template edit cannot silently drop a download.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2

from kiln.errors import ReleaseError
from kiln.package.authenticode import signers_in
from kiln.package.records import AssetRecord
from kiln.project import SdistSource
from kiln.release.manifest import TAG_RE, ReleaseManifest
from kiln.run import run

__all__ = [
    "MAX_CHANGES",
    "OS_TITLES",
    "TEMPLATE",
    "AssetLine",
    "Change",
    "ChangeLine",
    "CudaLine",
    "DisabledLine",
    "MissingLine",
    "NotesContext",
    "OsGroup",
    "SdistLine",
    "backend_text",
    "check_links",
    "cpu_text",
    "git_changes",
    "markdown_subject",
    "notes_context",
    "previous_tag",
    "render_notes",
    "runs_on_text",
    "size_text",
]

TEMPLATE = "release.md.j2"
MAX_CHANGES = 200
OS_TITLES = {"macos": "macOS", "linux": "Linux", "android": "Android", "windows": "Windows"}


# --------------------------------------------------------------------------------------------
# git history


@dataclass(frozen=True, kw_only=True)
class Change:
    sha: str
    subject: str


def previous_tag(repo: Path, env: Mapping[str, str], *, prefix: str = "") -> str | None:
    """The newest ``<prefix>b<N>`` tag on HEAD's history, not counting tags at HEAD itself (so
    a re-run of a release that already tagged HEAD finds the same previous tag), as the
    release tag ``b<N>`` (without the prefix)."""
    out = run(["git", "-C", str(repo), "tag", "--list", f"{prefix}b[0-9]*", "--merged", "HEAD",
               "--no-contains", "HEAD"], env=env, what="git tag").stdout
    tags = [t.strip()[len(prefix):] for t in out.splitlines()
            if t.strip().startswith(prefix) and TAG_RE.fullmatch(t.strip()[len(prefix):])]
    return max(tags, key=lambda t: int(t[1:]), default=None)


def git_changes(repo: Path, env: Mapping[str, str], since: str | None, *,
                paths: Sequence[str] = ()) -> tuple[Change, ...]:
    """First-parent commits after the git tag ``since`` up to HEAD, newest first; with
    ``paths``, only those that touch them (a project in a directory of a larger repository)."""
    span = f"{since}..HEAD" if since else "HEAD"
    out = run(["git", "-C", str(repo), "log", "--first-parent", "--format=%H%x1f%s%x1e",
               span, *(("--", *paths) if paths else ())], env=env, what="git log").stdout
    changes = []
    for record in out.split("\x1e"):
        record = record.strip("\n")
        if not record:
            continue
        sha, _, subject = record.partition("\x1f")
        changes.append(Change(sha=sha, subject=subject.strip()))
    return tuple(changes)


# --------------------------------------------------------------------------------------------
# what the template prints


@dataclass(frozen=True, kw_only=True)
class ChangeLine:
    short: str
    url: str
    text: str  # Markdown


@dataclass(frozen=True, kw_only=True)
class AssetLine:
    name: str
    url: str
    entry_id: str
    arch: str
    backend: str
    runs_on: str
    cpu: str
    size: str
    sha256: str
    verified: str


@dataclass(frozen=True, kw_only=True)
class OsGroup:
    title: str
    assets: tuple[AssetLine, ...]


@dataclass(frozen=True, kw_only=True)
class CudaLine:
    name: str
    url: str
    cuda: str
    min_driver: str
    targets: str


@dataclass(frozen=True, kw_only=True)
class DisabledLine:
    entry_id: str
    platform: str
    backend: str
    reason: str
    tracking: str
    tracking_label: str


@dataclass(frozen=True, kw_only=True)
class MissingLine:
    entry_id: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class NotesContext:
    project: str
    tag: str
    commit: str
    commit_url: str
    date: str
    previous_tag: str | None
    compare_url: str | None
    changes: tuple[ChangeLine, ...]
    more_changes: int
    groups: tuple[OsGroup, ...]
    asset_count: int
    cuda: tuple[CudaLine, ...]
    disabled: tuple[DisabledLine, ...]
    missing: tuple[MissingLine, ...]
    public_key: str
    sums: str
    signature: str
    public_key_file: str
    manifest: str
    sbom: str
    # how the Windows binaries are signed, one Markdown line per certificate (none: no Windows
    # asset); read from the Windows assets' verification records
    windows_signing: tuple[str, ...] = ()
    # floors (docs/floors.md) that differ from the previous release's, one sentence each
    floor_changes: tuple[str, ...] = ()
    # the release's page (index.html: the build for the visitor's system, every build's
    # evidence), linked from the notes' top; empty when the release has none
    page_url: str = ""
    # the pinned source distribution the assets are built from ("NAME==VERSION", its sha256,
    # the directory of the project in it); None for a project built from its own directory
    sdist: SdistLine | None = None


@dataclass(frozen=True, kw_only=True)
class SdistLine:
    requirement: str
    sha256: str
    subdir: str
    url: str  # the package index's page of that version


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|])")
_PR_REF = re.compile(r"\(#(\d+)\)")


def markdown_subject(subject: str, repo_url: str) -> str:
    """A commit subject as Markdown: special characters escaped, ``(#123)`` linked."""
    text = _MD_SPECIAL.sub(r"\\\1", subject)
    return _PR_REF.sub(lambda m: f"([#{m.group(1)}]({repo_url}/pull/{m.group(1)}))", text)


def _cell(text: str) -> str:
    """Text for a Markdown table cell: a ``|`` would end the cell."""
    return text.replace("|", "\\|")


def _tracking_label(url: str) -> str:
    # fullmatch: with re.match, "$" would also accept a URL followed by a newline.
    m = re.fullmatch(r"https://github\.com/([^/]+/[^/]+)/pull/(\d+)", url)
    if m:
        return f"{m.group(1)}#{m.group(2)}"
    m = re.fullmatch(r"https://gitlab\.com/(.+)/-/merge_requests/(\d+)", url)
    return f"{m.group(1)}!{m.group(2)}" if m else url


def size_text(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{n} B"


def runs_on_text(r: AssetRecord) -> str:
    if r.os == "linux":
        return f"glibc {r.libc_floor}+" if r.libc == "glibc" else "any Linux (static musl)"
    if r.os == "android":
        return f"Android API {r.min_os}+"
    if r.os == "macos":
        return f"macOS {r.min_os}+"
    return f"Windows {r.min_os}+"


def backend_text(r: AssetRecord) -> str:
    return r.backend if r.backend_version is None else f"{r.backend} {r.backend_version}"


def cpu_text(r: AssetRecord) -> str:
    return r.cpu_baseline + (f" (+{', '.join(r.cpu_dispatch)} at run time)"
                             if r.cpu_dispatch else "")


def _targets(targets: Sequence[str]) -> str:
    sms = sorted(int(t[3:].rstrip("af")) for t in targets if t.startswith("sm_"))
    ptx = [t for t in targets if t.startswith("compute_")]
    parts = []
    if sms:
        parts.append(f"sm_{sms[0]} to sm_{sms[-1]}" if len(sms) > 1 else f"sm_{sms[0]}")
    if ptx:
        parts.append("PTX " + ", ".join(ptx))
    return "; ".join(parts)


def _windows_signing(manifest: ReleaseManifest) -> tuple[str, ...]:
    """The certificates the Windows assets' verification found on their .exe and .dll files."""
    windows = [a.record for a in manifest.assets if a.record.os == "windows"]
    if not windows:
        return ()
    lines = []
    signers = {s: None for r in windows for s in signers_in(r.verification.detail)}
    for s in signers:
        kind = ("a throwaway self-signed certificate made for a local build (Windows does not "
                "trust it)" if s.throwaway else "the certificate")
        subject = s.subject.replace("`", "'")
        lines.append(f"The Windows `.exe` and `.dll` files are Authenticode-signed with {kind}: "
                     f"subject `{subject}`, sha256 `{s.sha256}`.")
    unsigned = [r.name for r in windows if not signers_in(r.verification.detail)]
    if unsigned:
        lines.append("Not Authenticode-signed: " + ", ".join(f"`{n}`" for n in unsigned) + ".")
    return tuple(lines)


def notes_context(manifest: ReleaseManifest, *, repo_url: str, changes: Sequence[Change],
                  previous: str | None, public_key: str, file_names: Mapping[str, str],
                  floor_changes: Sequence[str] = (), tag_prefix: str = "",
                  sdist: SdistSource | None = None) -> NotesContext:
    """Everything the template prints. ``file_names`` names the release's own files (keys
    ``sums``, ``signature``, ``public_key``, ``manifest``, ``sbom``, and ``page`` when the
    release has a page). ``tag_prefix`` is the project's git tag prefix (the comparison link
    is between git tags); ``sdist`` the source distribution a project is built from."""
    shown = changes[:MAX_CHANGES]
    change_lines = tuple(ChangeLine(short=c.sha[:10], url=f"{repo_url}/commit/{c.sha}",
                                    text=markdown_subject(c.subject, repo_url))
                         for c in shown)
    groups = []
    for os_name, title in OS_TITLES.items():
        rows = tuple(AssetLine(
            name=a.record.name, url=a.url, entry_id=a.record.entry_id, arch=a.record.arch,
            backend=backend_text(a.record), runs_on=runs_on_text(a.record), cpu=cpu_text(a.record),
            size=size_text(a.record.size), sha256=a.record.sha256,
            verified=f"{a.record.verification.method}: "
                     + ("passed" if a.record.verification.ok else "FAILED"))
            for a in manifest.assets if a.record.os == os_name)
        if rows:
            groups.append(OsGroup(title=title, assets=rows))
    cuda = tuple(CudaLine(name=a.record.name, url=a.url, cuda=a.record.backend_version or "",
                          min_driver=a.record.min_driver or "see the NVIDIA CUDA release notes",
                          targets=_targets(a.record.gpu_targets))
                 for a in manifest.assets if a.record.backend == "cuda")
    key_lines = [ln for ln in public_key.splitlines() if ln and not ln.startswith("untrusted")]
    return NotesContext(
        project=manifest.project, tag=manifest.tag, commit=manifest.commit,
        commit_url=f"{repo_url}/commit/{manifest.commit}", date=manifest.date[:10],
        previous_tag=previous,
        compare_url=(f"{repo_url}/compare/{tag_prefix}{previous}...{tag_prefix}{manifest.tag}"
                     if previous else None),
        changes=change_lines, more_changes=max(0, len(changes) - len(shown)),
        groups=tuple(groups), asset_count=len(manifest.assets), cuda=cuda,
        disabled=tuple(DisabledLine(entry_id=d.entry_id, platform=d.platform,
                                    backend=d.backend, reason=_cell(d.reason), tracking=d.tracking,
                                    tracking_label=_tracking_label(d.tracking))
                       for d in manifest.disabled),
        missing=tuple(MissingLine(entry_id=m.entry_id, reason=_cell(m.reason))
                      for m in manifest.missing),
        public_key=key_lines[0] if key_lines else "",
        sums=file_names["sums"], signature=file_names["signature"],
        public_key_file=file_names["public_key"], manifest=file_names["manifest"],
        sbom=file_names["sbom"], windows_signing=_windows_signing(manifest),
        page_url=manifest.base_url + file_names["page"] if "page" in file_names else "",
        floor_changes=tuple(_cell(c) for c in floor_changes),
        sdist=None if sdist is None else SdistLine(
            requirement=sdist.requirement, sha256=sdist.sha256, subdir=sdist.subdir,
            url="https://pypi.org/project/{}/{}/".format(*sdist.requirement.split("=="))),
    )


def render_notes(template_dir: Path, context: NotesContext) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir)),
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True,
        trim_blocks=True, lstrip_blocks=True)
    try:
        text = env.get_template(TEMPLATE).render(notes=context)
    except jinja2.TemplateNotFound as exc:
        raise ReleaseError(f"release notes template {template_dir / TEMPLATE} not found",
                           hint="run from the repository root (release_notes/ holds it)"
                           ) from exc
    except jinja2.TemplateError as exc:
        where = getattr(exc, "lineno", None)
        raise ReleaseError(f"release notes template {template_dir / TEMPLATE}"
                           + (f":{where}" if where else "") + f": {exc}") from exc
    # Collapse runs of blank lines left by empty sections; Markdown ignores them anyway.
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def check_links(text: str, manifest: ReleaseManifest) -> None:
    """Every asset must be linked (``[...](url)``) from the notes."""
    unlinked = [a.record.name for a in manifest.assets if f"]({a.url})" not in text]
    if unlinked:
        raise ReleaseError("the release notes do not link these assets: " + ", ".join(unlinked),
                           hint="fix release_notes/release.md.j2: every asset of every OS "
                                "group must be linked")
