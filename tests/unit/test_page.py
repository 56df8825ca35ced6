"""The release page's data and rendering, without a browser (tests/integration/test_release_page.py
drives Chromium): recommendations come from the installers' ranking, hostile text is escaped,
bench reports are checked, the page is a function of its inputs."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from test_rank import matrix_manifest

from kiln.errors import ReleaseError
from kiln.install.installer import rank
from kiln.matrix import load_matrix
from kiln.release.index import matrix_index
from kiln.release.manifest import MissingBuild
from kiln.release.page import VISITORS, mirror_page, recommendations, release_page, visitor_host
from kiln.release.page.render import check_bench
from kiln.release.page.svg import Bar, bar_chart

REPO = Path(__file__).resolve().parents[2]
MATRIX = load_matrix(REPO / "matrix")


def _index(manifest: Any) -> Any:
    return matrix_index(manifest, MATRIX)


def _choices_json(html: str) -> dict[str, Any]:
    m = re.search(r'<script type="application/json" id="kiln-choices">(.*?)</script>', html,
                  re.S)
    assert m is not None
    data: dict[str, Any] = json.loads(m.group(1))
    return data


def test_every_visitor_profile_loads_and_says_only_what_a_page_knows() -> None:
    for v in VISITORS:
        host = visitor_host(v.key)
        assert (host.os, host.arch) == (v.os, v.arch)
        assert host.gpus == () and host.nvidia_driver is None and host.cpu.level in (
            None, "apple-m1")  # a browser tells no CPU model; an arm64 Mac is an M1 or later
        if v.os == "linux":
            assert (host.libc, host.libc_version) == ("glibc", None)


def test_the_cpu_default_is_rank_on_the_visitor_profile() -> None:
    manifest = matrix_manifest(missing=("ubuntu-x64",))
    index = _index(manifest)
    choices = recommendations(manifest, index.releases[0])
    placement = {a.record.entry_id: (a.distro, a.scope) for a in index.releases[0].assets}
    for v in VISITORS:
        want = rank(manifest, visitor_host(v.key), placement=placement).chosen
        got = choices[v.key]["options"][0]
        assert got["key"] == "cpu"
        assert (got["choice"]["id"] if got["choice"] else None) == (
            want.entry_id if want else None)
    # ubuntu-x64 is missing: a Linux x64 visitor is not sent to openEuler's own build
    linux = choices["linux-x86_64"]["options"][0]
    assert linux["choice"] is None or not linux["choice"]["id"].startswith("openeuler")


def test_gpu_options_are_the_backends_built_for_the_platform() -> None:
    manifest = matrix_manifest()
    choices = recommendations(manifest, _index(manifest).releases[0])
    win = {o["key"]: o for o in choices["windows-x86_64"]["options"]}
    assert win["cuda-13.3"]["choice"]["id"] == "win-cuda-13.3-x64"
    assert "driver" in win["cuda-13.3"]["label"]
    assert win["cuda-13.3"]["install"]["command"].endswith("--backend cuda-13.3")
    assert "install.ps1" in win["cpu"]["install"]["command"]
    arm = {o["key"] for o in choices["windows-aarch64"]["options"]}
    assert arm == {"cpu", "opencl-3.0"}
    assert choices["linux-s390x"]["options"][0]["install"]["command"] == (
        "curl -fsSL https://example.invalid/install.sh | sh")


def test_hostile_text_is_escaped_in_the_page() -> None:
    evil = "<script>alert(1)</script></script><img src=x onerror=alert(2)>"
    manifest = dataclasses.replace(
        matrix_manifest(missing=("ubuntu-x64",)),
        missing=(MissingBuild(entry_id="ubuntu-x64", reason=evil),))
    html = release_page(manifest, _index(manifest))["index.html"]
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)" in html
    # the embedded JSON cannot close its script element
    assert _choices_json(html)["linux-x86_64"]["label"] == "Linux (x86_64)"


def test_the_page_is_a_function_of_its_inputs() -> None:
    manifest = matrix_manifest()
    a = release_page(manifest, _index(manifest), previous_tag="b41",
                     previous={"ubuntu-x64": 900}, build_seconds={"ubuntu-x64": 61.0})
    b = release_page(manifest, _index(manifest), previous_tag="b41",
                     previous={"ubuntu-x64": 900}, build_seconds={"ubuntu-x64": 61.0})
    assert a == b
    html = a["index.html"]
    assert "1 min 01 s" in html and "+11.1%" in html
    assert set(a) == {"index.html", "page.css", "page.js"}
    # no request leaves the page: no absolute http(s) URL in src= or href= of a resource
    assert not re.search(r'(?:src|href)="(?:https?:)?//', html.replace(
        'href="https://', ""))  # links to tracking PRs are links, not resources
    assert "<link rel=\"stylesheet\" href=\"page.css\">" in html


@pytest.mark.parametrize("bad, why", [
    ([], "a JSON object"),
    ({"date": "x", "cpu": "y", "rows": []}, "list of 'rows'"),
    ({"date": "x", "cpu": 3, "rows": [{}]}, "'cpu'"),
    ({"date": "x", "cpu": "y", "rows": [{"model": "Q4_1", "threads": 1}]}, "pp_ratio"),
    ({"date": "x", "cpu": "y", "rows": [{"model": "Q4_1", "threads": 1, "pp_ratio": "nan",
                                         "tg_ratio": 1}]}, "positive"),
    ({"date": "x", "cpu": "y", "rows": [{"model": "Q4_1", "threads": 0, "pp_ratio": 1,
                                         "tg_ratio": -1}]}, "positive"),
    ({"date": "x", "cpu": "y", "rows": ["row"]}, "not an object"),
])
def test_bad_bench_reports_are_refused_by_name(bad: object, why: str) -> None:
    with pytest.raises(ReleaseError, match=re.escape(why)):
        check_bench(bad, source="bench.json")


def test_the_mirror_page_draws_bench_figures_only_where_a_release_has_them() -> None:
    old, new = matrix_manifest(tag="b41"), matrix_manifest(tag="b42")
    index = dataclasses.replace(_index(new), kind="mirror",
                                releases=(_index(new).releases[0], _index(old).releases[0]))
    bench = check_bench({"date": "d", "cpu": "c", "rows": [
        {"model": "Q4_1", "threads": 1, "pp_ratio": 2.0, "tg_ratio": 0.5}]}, source="b")
    html = mirror_page(index, bench={"b42": bench})["index.html"]
    assert 'href="b42/index.html"' in html and 'href="b41/index.html"' in html
    assert "b42 prompt" in html and "b41 prompt" not in html
    assert "2.00x" in html and "0.50x" in html
    assert "No release on this mirror carries" in mirror_page(index)["index.html"]


def test_a_chart_names_itself_and_marks_the_previous_value() -> None:
    svg = bar_chart([Bar(label="a<b", value=10, compared=5)], chart_id="c", title="T",
                    desc="D", fmt=lambda v: f"{v:.0f}", change=lambda n, w: f"{n - w:+.0f}")
    assert '<title id="c-t">T</title>' in svg and 'aria-labelledby="c-t c-d"' in svg
    assert "a&lt;b" in svg and "10 (+5)" in svg and 'class="was"' in svg
