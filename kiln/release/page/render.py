"""Render the release page (``index.html`` + ``page.css`` + ``page.js`` of a release directory)
and the mirror's root page, from the release index.

Python computes every value; the Jinja2 templates (``kiln/release/templates/page/``, autoescaped)
only loop and print. The pages make no request of their own beyond their two sibling files,
work from ``file://``, and need script only for the "your download" recommendation: the table
of builds, every link and checksum, and a per-platform table of recommendations are plain HTML.
The output is a function of its inputs (no clock, no randomness), so a release made twice from
one commit has the same page.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from kiln.errors import ReleaseError
from kiln.package.records import AssetRecord
from kiln.release.index import IndexRelease, ReleaseIndex
from kiln.release.manifest import ReleaseManifest
from kiln.release.notes import OS_TITLES, backend_text, cpu_text, runs_on_text, size_text
from kiln.release.page.choices import VISITORS, recommendations
from kiln.release.page.svg import Bar, bar_chart

__all__ = ["BENCH_NAME", "PAGE_FILES", "check_bench", "mirror_page", "read_bench",
           "release_page"]

PAGE_FILES = ("index.html", "page.css", "page.js")
# The project's CPU speed against llama.cpp that a release may carry (bench/bench_cpu.py --json),
# drawn by the release and mirror pages.
BENCH_NAME = "bench-cpu.json"
_TEMPLATES = Path(__file__).resolve().parents[1] / "templates" / "page"
_METHODS = {"native": "ran natively", "qemu": "ran under qemu-user", "wine": "ran under wine",
            "lavapipe": "ran on lavapipe (Vulkan on the CPU)", "inspect": "inspected (not run)",
            "pocl": "ran on PoCL (OpenCL on the CPU)", "openvino-cpu": "ran on OpenVINO's CPU "
            "plugin"}


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
                              autoescape=True, undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def _static() -> dict[str, str]:
    return {name: (_TEMPLATES / name).read_text(encoding="utf-8")
            for name in ("page.css", "page.js")}


def _seconds(s: float) -> str:
    if s >= 59.5:
        whole = round(s)
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{s:.1f} s"


def _size_change(now: float, was: float) -> str:
    if was == 0:
        return "new"
    pct = (now - was) / was * 100
    if abs(pct) < 0.05:
        return "unchanged"
    return f"{pct:+.1f}%"


def _platform(r: AssetRecord) -> str:
    return f"{OS_TITLES.get(r.os, r.os)} {r.arch}"


@dataclass(frozen=True, kw_only=True)
class _Row:
    id: str
    anchor: str
    file: str
    kind: str
    platform: str
    backend: str
    runs_on: str
    cpu: str
    measured: str
    size: int
    size_text: str
    previous_size: str
    sha256: str
    method: str
    method_text: str
    ok: bool
    checks: tuple[str, ...]
    build_time: str


def _measured(floors: Mapping[str, str | int | None]) -> str:
    names = {"glibc": "glibc", "glibcxx": "libstdc++", "macos": "macOS", "windows": "Windows",
             "x86_64_level": "x86-64 level", "android_api": "Android API"}
    parts = [f"{label} {floors[k]}" for k, label in names.items() if floors.get(k) is not None]
    return ", ".join(parts)


def _rows(release: IndexRelease, previous: Mapping[str, int],
          build_seconds: Mapping[str, float]) -> list[_Row]:
    rows = []
    for a in release.assets:
        r = a.record
        was = previous.get(r.name) if r.kind == "wheel" else previous.get(r.entry_id)
        key = r.name if r.kind == "wheel" else r.entry_id
        seconds = build_seconds.get(r.entry_id)
        rows.append(_Row(
            id=r.entry_id, anchor=f"verify-{key}", file=r.name, kind=r.kind,
            platform=_platform(r), backend=backend_text(r), runs_on=runs_on_text(r),
            cpu=cpu_text(r), measured=_measured(a.floors), size=r.size,
            size_text=size_text(r.size),
            previous_size=("" if was is None else f"{size_text(was)}, "
                           f"{_size_change(r.size, was)}"),
            sha256=r.sha256, method=r.verification.method,
            method_text=_METHODS.get(r.verification.method, r.verification.method),
            ok=r.verification.ok,
            checks=tuple(c.strip() for c in r.verification.detail.split("; ") if c.strip()),
            build_time="" if seconds is None else _seconds(seconds)))
    return rows


def check_bench(data: object, *, source: str) -> dict[str, Any]:
    """The parts of a ``bench/bench_cpu.py --json`` report a page shows, checked: the date,
    the CPU, and per row the model, threads and the pp / tg ratios against llama.cpp."""
    if not isinstance(data, Mapping):
        raise ReleaseError(f"{source}: a bench report is a JSON object")
    rows = data.get("rows")
    if not isinstance(data.get("cpu"), str) or not isinstance(data.get("date"), str) \
            or not isinstance(rows, list) or not rows:
        raise ReleaseError(f"{source}: a bench report has 'date', 'cpu' and a list of 'rows' "
                           "(bench/bench_cpu.py --json FILE writes one)")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ReleaseError(f"{source}: rows[{i}] is not an object")
        try:
            model, threads = str(row["model"]), int(row["threads"])
            pp, tg = float(row["pp_ratio"]), float(row["tg_ratio"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ReleaseError(f"{source}: rows[{i}]: needs model, threads, pp_ratio and "
                               f"tg_ratio ({exc})") from exc
        if not all(math.isfinite(v) and v > 0 for v in (pp, tg)) or threads < 1:
            raise ReleaseError(f"{source}: rows[{i}]: ratios must be positive numbers")
        out.append({"model": model, "threads": threads, "pp_ratio": pp, "tg_ratio": tg})
    return {"date": str(data["date"]), "cpu": str(data["cpu"]), "rows": out}


def read_bench(path: Path, *, source: str) -> tuple[str, dict[str, Any]]:
    """A ``bench/bench_cpu.py --json`` report read from ``path``: its text and the checked
    figures (``check_bench``). ``ReleaseError`` names ``source`` when it cannot be read or
    does not hold."""
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ReleaseError(f"{source}: cannot read the bench report: {exc}") from exc
    return text, check_bench(data, source=source)


def _geomean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _release_context(manifest: ReleaseManifest, release: IndexRelease, *, project: str,
                     repo_url: str | None, previous_tag: str | None,
                     previous: Mapping[str, int], build_seconds: Mapping[str, float],
                     bench: Mapping[str, Any] | None) -> dict[str, Any]:
    rows = _rows(release, previous, build_seconds)
    archives = [r for r in rows if r.kind == "archive"]
    wheels = [r for r in rows if r.kind == "wheel"]
    choices = recommendations(manifest, release)
    size_bars = [Bar(label=r.id, value=r.size, compared=previous.get(r.id),
                     tone="now" if r.id not in previous else (
                         "up" if r.size > previous[r.id] else "down"
                         if r.size < previous[r.id] else "now"))
                 for r in archives]
    size_chart = bar_chart(
        size_bars, chart_id="chart-size", title=f"Archive size per build, {release.tag}"
        + (f" against {previous_tag}" if previous_tag and previous else ""),
        desc="One bar per archive: its size"
        + ("; the dark tick is the size in the previous release" if previous else ""),
        fmt=lambda v: size_text(int(v)), change=_size_change) if archives else ""
    timed = [r for r in archives if r.id in build_seconds]
    time_chart = bar_chart(
        [Bar(label=r.id, value=build_seconds[r.id]) for r in timed], chart_id="chart-time",
        title=f"Build time per entry, {release.tag}",
        desc="One bar per build: the wall-clock time of its build and verification on the "
             "release host (a cached build takes seconds)",
        fmt=_seconds) if timed else ""
    bench_chart = ""
    if bench is not None:
        bench_chart = bar_chart(
            [Bar(label=f"{row['model']}, {row['threads']} thread"
                 + ("s" if row["threads"] > 1 else "") + f", {what}", value=row[key],
                 tone="up" if row[key] >= 1.0 else "down")
             for row in bench["rows"] for what, key in (("prompt", "pp_ratio"),
                                                        ("generation", "tg_ratio"))],
            chart_id="chart-bench", title=f"{project} on the CPU against llama.cpp",
            desc=f"Speed ratios {project} / llama.cpp measured on {bench['cpu']} "
                 f"({bench['date']})"
                 "; 1.0 is the same speed", fmt=lambda v: f"{v:.2f}x", reference=1.0,
            reference_label="llama.cpp = 1.0")
    files = [
        ("SHA256SUMS", "the sha256 of every file of the release"),
        ("SHA256SUMS.minisig", "its minisign signature"),
        ("minisign.pub", "the release's public key"),
        ("index.json", "the signed release index the installers choose from"),
        ("manifest.json", "every asset's record"),
        ("sbom.cdx.json", "the CycloneDX SBOM"),
        ("provenance.intoto.json", "the signed build provenance (in-toto, SLSA v1)"),
        ("RELEASE_NOTES.md", "the release notes"),
        ("install.sh", "the installer for Linux, macOS and Android (Termux)"),
        ("install.ps1", "the installer for Windows"),
    ]
    return {
        "project": project, "tag": release.tag, "date": release.date,
        "commit": release.commit,
        "commit_url": f"{repo_url}/commit/{release.commit}" if repo_url else None,
        "release_url": f"{repo_url}/releases/tag/{release.tag}" if repo_url else None,
        "previous_tag": previous_tag if previous else None,
        "archives": archives, "wheels": wheels,
        "disabled": release.disabled, "missing": release.missing,
        "platforms": [(v.key, choices[v.key]) for v in VISITORS],
        "choices_json": json.dumps(choices, sort_keys=True, separators=(",", ":"))
        .replace("</", "<\\/"),
        "size_chart": size_chart, "time_chart": time_chart, "bench_chart": bench_chart,
        "bench": bench, "files": files, "base_url": manifest.base_url,
        "total_size": size_text(sum(r.size for r in rows)),
    }


def release_page(manifest: ReleaseManifest, index: ReleaseIndex, *, repo_url: str | None = None,
                 previous_tag: str | None = None, previous: Mapping[str, int] | None = None,
                 build_seconds: Mapping[str, float] | None = None,
                 bench: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The files of a release's page, by name (``PAGE_FILES``). ``index`` is the release's own
    index; ``previous`` maps entry ids (and wheel names) to their size in ``previous_tag``;
    ``build_seconds`` entry ids to their build time here; ``bench`` is a checked bench report
    (``check_bench``)."""
    release = index.release(manifest.tag)
    if release is None:
        raise ReleaseError(f"the index given for the page of {manifest.tag} does not list it")
    context = _release_context(manifest, release, project=index.project, repo_url=repo_url,
                               previous_tag=previous_tag, previous=previous or {},
                               build_seconds=build_seconds or {}, bench=bench)
    files = {"index.html": _env().get_template("release.html.j2").render(page=context)}
    files.update(_static())
    return files


def mirror_page(index: ReleaseIndex, *, bench: Mapping[str, Mapping[str, Any]] | None = None
                ) -> dict[str, str]:
    """The files of a mirror root's page: every release of the mirror's ``index`` (newest
    first) with links to its page and files, the total download size per release, and the
    project's CPU speed ratios of the releases that carry a bench report (``bench``: tag ->
    report)."""
    bench = bench or {}
    releases = []
    for r in index.releases:
        archives = [a.record for a in r.assets if a.record.kind == "archive"]
        releases.append({
            "tag": r.tag, "date": r.date, "commit": r.commit,
            "archives": len(archives), "wheels": len(r.assets) - len(archives),
            "size": size_text(sum(a.size for a in archives)),
            "disabled": len(r.disabled), "missing": len(r.missing),
        })
    oldest_first = list(reversed(index.releases))
    size_chart = bar_chart(
        [Bar(label=r.tag, value=sum(a.record.size for a in r.assets
                                    if a.record.kind == "archive"))
         for r in oldest_first], chart_id="chart-sizes",
        title="Total archive size per release",
        desc="One bar per release, oldest first: the sum of its archives' sizes",
        fmt=lambda v: size_text(int(v))) if oldest_first else ""
    bench_rows = []
    bars = []
    for r in oldest_first:
        report = bench.get(r.tag)
        if report is None:
            continue
        pp = _geomean([row["pp_ratio"] for row in report["rows"]])
        tg = _geomean([row["tg_ratio"] for row in report["rows"]])
        bench_rows.append({"tag": r.tag, "cpu": report["cpu"], "date": report["date"],
                           "pp": f"{pp:.2f}x", "tg": f"{tg:.2f}x",
                           "rows": len(report["rows"])})
        bars += [Bar(label=f"{r.tag} prompt", value=pp, tone="up" if pp >= 1 else "down"),
                 Bar(label=f"{r.tag} generation", value=tg, tone="up" if tg >= 1 else "down")]
    bench_chart = bar_chart(
        bars, chart_id="chart-bench-history",
        title=f"{index.project} on the CPU against llama.cpp, per release",
        desc="For each release that carries bench/bench_cpu.py figures: the geometric mean of "
             f"its prompt and generation speed ratios ({index.project} / llama.cpp); 1.0 is "
             "the same speed", fmt=lambda v: f"{v:.2f}x", reference=1.0,
        reference_label="llama.cpp = 1.0") if bars else ""
    latest = index.latest
    context = {"project": index.project, "releases": releases,
               "latest": latest.tag if latest else None, "size_chart": size_chart,
               "bench_chart": bench_chart, "bench_rows": bench_rows,
               "version": index.version}
    files = {"index.html": _env().get_template("mirror.html.j2").render(page=context)}
    files.update(_static())
    return files
