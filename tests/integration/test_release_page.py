"""The release page in a real browser: Debian's ``chromium`` driven by Playwright for Python
(with the system browser's executable; Playwright's own browser download is never used).

Two releases of a throwaway project (synthetic archives with their records, real git, real
minisign; the second has a bench report, one archive grown and one shrunk) are published with
``kiln publish file://`` to a mirror, which a real HTTP server on 127.0.0.1 serves. Then:

* for the user agents of Windows x64, Windows on Arm, macOS arm64, Linux x64, Linux arm64 and
  Android (with client hints, as Chromium sends them, and without, as Firefox and Safari), the
  archive the page recommends, for the CPU default and for every GPU the visitor can pick, is
  the one ``kiln install --dry-run --host-profile <that platform's visitor profile>`` (with
  ``--backend`` for a GPU) picks from the same mirror;
* every link of the page leads to a file of the release and every checksum on it is that
  file's line of ``SHA256SUMS``; the copy button copies it;
* axe-core (npm, pinned by sha256) finds no WCAG 2.0/2.1 A or AA violation on the release page
  and the mirror page, at desktop width and at 360 px, where nothing overflows the window;
* without JavaScript the table, every link and the per-platform recommendations are there;
* a missing and a disabled entry are shown with their reasons (and the tracking link);
* the mirror page lists both releases and draws the CPU figures of the one that has them.

Screenshots of the release page are kept as test artifacts in ``build/test-artifacts/``.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_release_cli import LOCAL, MATRIX, REPO, Project, git, make_artifact, make_project

from kiln.cli import main
from kiln.release.manifest import parse_sums
from kiln.release.page.choices import VISITORS_DIR

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("release-page")]

CHROMIUM = shutil.which("chromium")
AXE = REPO / ".venv" / "npm" / "node_modules" / "axe-core" / "axe.min.js"
# axe-core 4.14.1 (MPL-2.0), installed by scripts/bootstrap.sh from npm.
AXE_SHA256 = "29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c"
ARTIFACTS = REPO / "build" / "test-artifacts"

playwright_api = pytest.importorskip("playwright.sync_api",
                                     reason="playwright is not installed (pip install -e .[test])")
if CHROMIUM is None:
    pytest.skip("chromium is not installed (scripts/apt-packages.txt)", allow_module_level=True)
if shutil.which("minisign") is None:
    pytest.skip("minisign is not installed (scripts/apt-packages.txt)", allow_module_level=True)

CHROME_UA = "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/141.0.0.0 Safari/537.36"


@dataclass(frozen=True)
class Visit:
    """A visitor: the user agent, and the client hints (``None``: a browser without
    ``navigator.userAgentData``, like Firefox or Safari)."""

    name: str
    platform: str  # the visitor profile the page should pick (kiln/release/page/visitors/)
    user_agent: str
    hints: dict[str, Any] | None


VISITS = [
    Visit("windows-x64-firefox", "windows-x86_64",
          "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:140.0) Gecko/20100101 Firefox/140.0",
          None),
    Visit("windows-x64-chrome", "windows-x86_64",
          f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) {CHROME_UA}",
          {"platform": "Windows", "platformVersion": "19.0.0", "architecture": "x86",
           "bitness": "64", "mobile": False}),
    # Chrome on Windows on Arm sends the x64 user agent: only the client hints tell.
    Visit("windows-arm64-chrome", "windows-aarch64",
          f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) {CHROME_UA}",
          {"platform": "Windows", "platformVersion": "15.0.0", "architecture": "arm",
           "bitness": "64", "mobile": False}),
    # Chrome on an Apple silicon Mac says "Intel Mac OS X" too; its hints say arm.
    Visit("macos-arm64-chrome", "macos-aarch64",
          f"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) {CHROME_UA}",
          {"platform": "macOS", "platformVersion": "15.1.0", "architecture": "arm",
           "bitness": "64", "mobile": False}),
    Visit("macos-safari", "macos-aarch64",
          "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
          "Gecko) Version/18.1 Safari/605.1.15", None),
    Visit("linux-x64-firefox", "linux-x86_64",
          "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0", None),
    Visit("linux-arm64-chrome", "linux-aarch64",
          f"Mozilla/5.0 (X11; Linux aarch64) {CHROME_UA}",
          {"platform": "Linux", "platformVersion": "6.8.0", "architecture": "arm",
           "bitness": "64", "mobile": False}),
    Visit("linux-arm64-firefox", "linux-aarch64",
          "Mozilla/5.0 (X11; Linux aarch64; rv:140.0) Gecko/20100101 Firefox/140.0", None),
    Visit("android-chrome", "android-aarch64",
          "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/141.0.0.0 Mobile Safari/537.36",
          {"platform": "Android", "platformVersion": "14.0.0", "architecture": "",
           "bitness": "", "mobile": True, "model": "Pixel 8"}),
    Visit("android-firefox", "android-aarch64",
          "Mozilla/5.0 (Android 14; Mobile; rv:140.0) Gecko/140.0 Firefox/140.0", None),
]


@dataclass(frozen=True)
class Site:
    project: Project
    mirror: Path
    old: str
    new: str
    url: str  # the mirror over HTTP, ending with "/"
    pubkey: Path


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return None


def _release(project: Project, art: Path, out: Path, *extra: str) -> None:
    code, _, _ = project.kiln(["release", "--artifacts", str(art), "--out", str(out),
                               "--allow-missing", "*", *extra])
    assert code == 0


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("page")
    project = make_project(root)
    old = f"b{project.number}"
    _release(project, project.artifacts(LOCAL, size=2048), root / "r1")
    # The next release: one archive grew, one shrank, and it carries CPU figures.
    (project.repo / "runtime" / "src" / "next.c").write_text("/* next */\n")
    git(project.repo, project.env, "add", "-A")
    git(project.repo, project.env, "commit", "-q", "-m", "cpu: tiled q8_0 kernels")
    new = f"b{project.number}"
    art = root / "artifacts2"
    for entry_id in LOCAL:
        size = {"ubuntu-x64": 4096, "win-cpu-x64": 1024}.get(entry_id, 2048)
        # One verification log with long unbreakable words, as real ones have (paths, hashes):
        # it must not widen the page at 360 px.
        detail = ("inspect: 3 binaries, PE x86_64, 3 PE files Authenticode-signed; "
                  "bin/ember.dll:" + "0123456789abcdef" * 8) if entry_id == "win-cpu-x64" \
            else "synthetic test asset"
        make_artifact(art / entry_id, entry_id, number=project.number, commit=project.head,
                      size=size, detail=detail)
    bench = root / "bench.json"
    bench.write_text(json.dumps({
        "date": "2026-12-07 04:00 UTC", "cpu": "AMD EPYC 7B13 64-Core Processor", "reps": 3,
        "rows": [{"model": "Q4_1", "threads": 1, "pp_ratio": 1.11, "tg_ratio": 0.88},
                 {"model": "Q8_0", "threads": 2, "pp_ratio": 0.78, "tg_ratio": 0.79}]}))
    _release(project, art, root / "r2", "--bench", str(bench))
    mirror = root / "mirror"
    for r in ("r1", "r2"):
        code, _, _ = project.kiln(["publish", str(root / r), "--to", f"file://{mirror}"])
        assert code == 0
    handler = functools.partial(_Quiet, directory=str(mirror))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Site(project=project, mirror=mirror, old=old, new=new,
                   url=f"http://127.0.0.1:{server.server_address[1]}/",
                   pubkey=root / "r2" / "minisign.pub")
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def _page(browser: Any, visit: Visit | None = None, *, width: int = 1100,
          javascript: bool = True) -> Any:
    ctx = browser.new_context(viewport={"width": width, "height": 900},
                              java_script_enabled=javascript,
                              user_agent=visit.user_agent if visit else None)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.errors = errors
    if visit is not None:
        if visit.hints is None:
            # Firefox and Safari have no navigator.userAgentData.
            page.add_init_script("Object.defineProperty(Navigator.prototype, 'userAgentData', "
                                 "{get: () => undefined});")
        else:
            cdp = ctx.new_cdp_session(page)
            meta = {"brands": [{"brand": "Chromium", "version": "141"}], "fullVersion": "",
                    "model": "", **visit.hints}
            cdp.send("Emulation.setUserAgentOverride",
                     {"userAgent": visit.user_agent, "userAgentMetadata": meta})
    return page


def _recommended(page: Any) -> tuple[str, str, str]:
    page.wait_for_selector("#yd-result[data-choice]")
    return (page.get_attribute("#yd-result", "data-platform"),
            page.get_attribute("#yd-result", "data-option"),
            page.get_attribute("#yd-result", "data-choice"))


def _kiln_choice(site: Site, platform: str, backend: str | None) -> str | None:
    out = io.StringIO()
    argv = ["install", "--dry-run", "--json", "--from", site.url, "--tag", site.new,
            "--pubkey", str(site.pubkey), "--host-profile", str(VISITORS_DIR / f"{platform}.yaml")]
    if backend is not None:
        argv += ["--backend", backend]
    env = dict(site.project.env)
    env["HOME"] = str(site.mirror.parent / "installer-home")
    code = main(argv, env=env, stdout=out, cwd=site.project.repo)
    assert code == 0, out.getvalue()
    data = json.loads(out.getvalue())
    choice = data["choice"]
    return str(choice) if choice is not None else None


@pytest.mark.parametrize("visit", VISITS, ids=[v.name for v in VISITS])
def test_the_recommendation_is_what_kiln_install_picks(site: Site, browser: Any,
                                                       visit: Visit) -> None:
    page = _page(browser, visit)
    page.goto(f"{site.url}{site.new}/index.html")
    platform, option, choice = _recommended(page)
    assert (platform, option) == (visit.platform, "cpu")
    assert choice == _kiln_choice(site, visit.platform, None)
    # The install command is the one for that platform, from the release's own URL.
    command = page.text_content("#yd-command")
    assert ("install.ps1" in command) == visit.platform.startswith("windows")
    # Every GPU the visitor can pick gives what --backend gives.
    gpus = page.eval_on_selector_all("#yd-gpu option", "els => els.map(e => e.value)")
    assert gpus[0] == "cpu"
    for gpu in gpus[1:]:
        page.select_option("#yd-gpu", gpu)
        assert _recommended(page)[1:] == (gpu, _kiln_choice(site, visit.platform, gpu))
        assert f"--backend {gpu}" in page.text_content("#yd-command")
    # The link goes to the archive, in the same release directory.
    href = page.get_attribute("#yd-link", "href")
    assert (site.mirror / site.new / href).is_file()
    assert page.errors == []
    page.context.close()


def test_windows_gpus_are_offered_and_a_platform_can_be_switched(site: Site,
                                                                 browser: Any) -> None:
    page = _page(browser, VISITS[0])
    page.goto(f"{site.url}{site.new}/index.html")
    _recommended(page)
    gpus = page.eval_on_selector_all("#yd-gpu option", "els => els.map(e => e.value)")
    assert {"cuda-12.4", "cuda-13.3", "vulkan-1.3", "openvino-2026.2"} <= set(gpus)
    page.select_option("#yd-platform", "linux-s390x")
    assert _recommended(page) == ("linux-s390x", "cpu", "ubuntu-s390x")
    page.context.close()


def _sums(site: Site, tag: str) -> dict[str, str]:
    path = site.mirror / tag / "SHA256SUMS"
    return parse_sums(path.read_text(encoding="utf-8"), source=str(path))


def test_links_and_checksums_are_the_release_files(site: Site, browser: Any) -> None:
    page = _page(browser)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto(f"{site.url}{site.new}/index.html")
    sums = _sums(site, site.new)
    hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))")
    local = [h for h in hrefs if not h.startswith(("#", "https://"))]
    assert local, hrefs
    for href in local:
        assert "/" not in href and (href in sums or href in ("SHA256SUMS",
                                                             "SHA256SUMS.minisig")), href
        # and the server has it: the page works from the mirror as from the directory
        assert page.request.get(f"{site.url}{site.new}/{href}").ok
    for anchor in (h[1:] for h in hrefs if h.startswith("#")):
        assert page.locator(f"[id='{anchor}']").count() == 1, anchor
    archives = [n for n in sums if n.endswith((".tar.gz", ".zip"))]
    assert len(archives) == len(LOCAL)
    for name in archives:
        row = page.locator("tr", has=page.locator(f"a[href='{name}']"))
        assert row.locator("code.sha").text_content() == sums[name]
    # The copy button copies the checksum.
    first = page.locator("button.copy[data-copy]").first
    first.click()
    assert page.evaluate("navigator.clipboard.readText()") == first.get_attribute("data-copy")
    assert page.errors == []
    page.context.close()


def _axe(page: Any) -> list[dict[str, Any]]:
    source = AXE.read_bytes()
    assert hashlib.sha256(source).hexdigest() == AXE_SHA256, "axe-core is not the pinned one"
    page.add_script_tag(content=source.decode("utf-8"))
    result = page.evaluate("""async () => {
        const r = await axe.run(document, {runOnly: {type: 'tag',
            values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa']}});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}));
    }""")
    return list(result)


@pytest.mark.skipif(not AXE.is_file(), reason="axe-core is not installed (scripts/bootstrap.sh)")
@pytest.mark.parametrize("width", [1100, 360])
@pytest.mark.parametrize("which", ["release", "mirror"])
def test_axe_finds_no_violation_and_nothing_overflows(site: Site, browser: Any, width: int,
                                                      which: str) -> None:
    page = _page(browser, VISITS[5], width=width)
    path = f"{site.new}/index.html" if which == "release" else "index.html"
    page.goto(site.url + path)
    if which == "release":
        _recommended(page)
        page.click("#yd-table summary")  # open the details: check what they hold too
        for d in page.locator("details").all():
            d.evaluate("e => e.open = true")
    assert _axe(page) == []
    # Readable at 360 px: the page itself never scrolls sideways (wide tables scroll inside
    # their own focusable region).
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{which}-page-{width}.png"), full_page=width == 360)
    assert page.errors == []
    page.context.close()


def test_without_javascript_everything_but_the_recommendation_is_there(site: Site,
                                                                       browser: Any) -> None:
    page = _page(browser, javascript=False)
    page.goto(f"{site.url}{site.new}/index.html")
    assert not page.is_visible("#yd-app")
    sums = _sums(site, site.new)
    for name in sums:
        if name.endswith((".tar.gz", ".zip")):
            assert page.locator(f"table.builds a[href='{name}']").count() == 1
    # the per-platform recommendations are plain HTML
    page.click("#yd-table summary")
    rows = page.locator("#yd-table tbody tr")
    assert rows.count() == 8
    text = page.text_content("#yd-table")
    assert "ubuntu-x64" in text and "win-cpu-x64" in text and "android-arm64" in text
    page.context.close()


def test_missing_and_disabled_builds_are_shown_with_their_reasons(site: Site,
                                                                  browser: Any) -> None:
    page = _page(browser)
    page.goto(f"{site.url}{site.new}/index.html")
    index = json.loads((site.mirror / site.new / "index.json").read_text())
    release = index["releases"][0]
    assert release["missing"] and release["disabled"]
    for m in release["missing"]:
        row = page.locator(f"tr.missing[id='build-{m['id']}']")
        assert m["reason"] in row.text_content()
    for d in release["disabled"]:
        row = page.locator(f"tr.disabled[id='build-{d['id']}']")
        assert d["reason"] in row.text_content()
        assert row.locator(f"a[href='{d['tracking']}']").count() == 1
    page.context.close()


def test_sizes_against_the_previous_release_and_the_mirror_history(site: Site,
                                                                   browser: Any) -> None:
    page = _page(browser)
    page.goto(f"{site.url}{site.new}/index.html")
    size = page.locator("svg#chart-size")
    assert size.count() == 1
    text = size.text_content()
    assert "ubuntu-x64" in text and "+" in text and "-" in text  # one grew, one shrank
    row = page.locator("tr[id='build-ubuntu-x64']").text_content()
    assert site.old in row  # "b3: 2.x KiB, +n%"
    assert page.locator("svg#chart-bench").count() == 1
    page.goto(site.url + "index.html")
    listed = page.eval_on_selector_all("#releases tbody th a", "els => els.map(e => e.textContent)")
    assert listed == [site.new, site.old]
    history = page.locator("svg#chart-bench-history").text_content()
    assert f"{site.new} prompt" in history and site.old not in history  # only b4 has figures
    page.click(f"text={site.new}")
    assert page.url.endswith(f"/{site.new}/index.html")
    page.context.close()


def test_the_page_works_from_file_urls(site: Site, browser: Any) -> None:
    page = _page(browser, VISITS[5])
    page.goto((site.mirror / site.new / "index.html").as_uri())
    assert _recommended(page) == ("linux-x86_64", "cpu", "ubuntu-x64")
    assert page.errors == []
    page.context.close()


def test_the_release_page_lists_every_local_entry(site: Site) -> None:
    text = (site.mirror / site.new / "index.html").read_text(encoding="utf-8")
    for entry_id in LOCAL:
        assert f'id="build-{entry_id}"' in text
    for e in MATRIX.entries:
        assert f'id="build-{e.id}"' in text, e.id  # released, missing or disabled
