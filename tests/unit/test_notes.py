"""Release notes rendered from the real template with synthetic releases, and the SBOM."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from ember_project import EMBER
from test_release import CI_ONLY, COMMIT, local_assets

from kiln.errors import ReleaseError
from kiln.matrix import Matrix, load_matrix
from kiln.package.records import Tool
from kiln.release.assemble import gate, release_manifest
from kiln.release.manifest import ReleaseManifest
from kiln.release.notes import (
    MAX_CHANGES,
    Change,
    check_links,
    markdown_subject,
    notes_context,
    render_notes,
)
from kiln.release.sbom import (
    SourceFile,
    Toolchain,
    cyclonedx,
    toolchains_from_records,
    vendored_components,
)

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "release_notes"
REPO_URL = "https://github.com/ember-ml/ember"
FILES = {"sums": "SHA256SUMS", "signature": "SHA256SUMS.minisig", "public_key": "minisign.pub",
         "manifest": "manifest.json", "sbom": "sbom.cdx.json"}
PUBKEY = "untrusted comment: minisign public key ABC\nRWTfakepublickeyAAAA\n"


@pytest.fixture(scope="module")
def matrix() -> Matrix:
    return load_matrix(REPO / "matrix")


@pytest.fixture
def manifest(tmp_path: Path, matrix: Matrix) -> ReleaseManifest:
    result = gate(matrix, local_assets(tmp_path, matrix), build_number=42, commit=COMMIT,
                  allow_missing=frozenset(CI_ONLY))
    return release_manifest(result, project="ember", tag="b42", build_number=42,
                            commit=COMMIT, commit_epoch=1_700_000_000,
                            base_url=f"{REPO_URL}/releases/download/b42")


def render(manifest: ReleaseManifest, changes: list[Change] | None = None,
           previous: str | None = "b40", templates: Path = TEMPLATES) -> str:
    ctx = notes_context(manifest, repo_url=REPO_URL, changes=changes or [
        Change(sha="1" * 40, subject="ggml: faster q4_1 dot product (#123)"),
        Change(sha="2" * 40, subject="fix <tag> and a|pipe in *names* (#7)"),
    ], previous=previous, public_key=PUBKEY, file_names=FILES)
    return render_notes(templates, ctx)


def test_every_asset_is_linked_and_grouped_by_os(manifest: ReleaseManifest) -> None:
    text = render(manifest)
    check_links(text, manifest)
    for a in manifest.assets:
        assert text.count(f"[{a.record.name}]({a.url})") >= 1
    headings = re.findall(r"^### (\w+)$", text, flags=re.M)
    assert headings == ["macOS", "Linux", "Android", "Windows"]


def test_disabled_builds_with_reason_and_tracking_link(manifest: ReleaseManifest,
                                                       matrix: Matrix) -> None:
    text = render(manifest)
    section = text.split("## Disabled builds", 1)[1].split("\n## ", 1)[0]
    for e in matrix.disabled:
        assert e.disabled is not None
        assert f"`{e.id}`" in section
        assert f"]({e.disabled.tracking})" in section
        assert e.disabled.reason.split(".")[0][:60] in section
    assert "[ggml-org/llama.cpp#21259](https://github.com/ggml-org/llama.cpp/pull/21259)" \
        in section


def test_missing_builds_are_listed(manifest: ReleaseManifest) -> None:
    text = render(manifest)
    section = text.split("## Not in this release", 1)[1].split("\n## ", 1)[0]
    for entry_id in CI_ONLY:
        assert f"`{entry_id}`" in section


def test_cuda_section_explains_no_runtime_download(manifest: ReleaseManifest) -> None:
    text = render(manifest)
    assert "no separate CUDA runtime download" in text
    cuda = [a for a in manifest.assets if a.record.backend == "cuda"]
    assert len(cuda) == 4
    section = text.split("no separate CUDA runtime download", 1)[1].split("\n## ", 1)[0]
    for a in cuda:
        assert f"]({a.url})" in section
        assert f"{a.record.min_driver} or newer" in section


def test_changes_link_pull_requests_and_escape_markdown(manifest: ReleaseManifest) -> None:
    text = render(manifest)
    assert f"([#123]({REPO_URL}/pull/123))" in text
    assert r"fix \<tag\> and a\|pipe in \*names\*" in text
    assert f"[`1111111111`]({REPO_URL}/commit/{'1' * 40})" in text
    assert f"({REPO_URL}/compare/b40...b42)" in text


def test_many_changes_are_cut_with_a_link(manifest: ReleaseManifest) -> None:
    changes = [Change(sha=f"{i:040x}", subject=f"change {i}") for i in range(MAX_CHANGES + 5)]
    text = render(manifest, changes)
    assert "and 5 earlier changes" in text
    assert f"change {MAX_CHANGES - 1}" in text and f"change {MAX_CHANGES}\n" not in text


def test_first_release_has_no_compare_link(manifest: ReleaseManifest) -> None:
    text = render(manifest, previous=None)
    assert "First release." in text and "/compare/" not in text


def test_markdown_subject() -> None:
    assert markdown_subject("a_b (#5)", "https://g/o/r") == r"a\_b ([#5](https://g/o/r/pull/5))"


def test_a_misspelt_variable_is_an_error(tmp_path: Path, manifest: ReleaseManifest) -> None:
    (tmp_path / "release.md.j2").write_text("{{ notes.tga }}\n")
    with pytest.raises(ReleaseError, match="tga"):
        render(manifest, templates=tmp_path)


def test_a_template_that_drops_an_asset_fails_the_check(tmp_path: Path,
                                                        manifest: ReleaseManifest) -> None:
    # A template that forgets the last OS group: the link check must catch it.
    (tmp_path / "release.md.j2").write_text(
        "{% for g in notes.groups[:-1] %}{% for a in g.assets %}[{{ a.name }}]({{ a.url }})\n"
        "{% endfor %}{% endfor %}")
    text = render(manifest, templates=tmp_path)
    with pytest.raises(ReleaseError, match=r"do not link these assets: .*win-cpu-x64"):
        check_links(text, manifest)


def test_sbom_is_cyclonedx_and_deterministic() -> None:
    args = dict(project="ember", tag="b42", commit=COMMIT, date="2023-11-14T22:13:20Z",
                repo_url=REPO_URL,
                sources=[SourceFile(path="runtime/src/b.c", sha256="b" * 64),
                         SourceFile(path="runtime/src/a.c", sha256="a" * 64)],
                toolchains=[Toolchain(name="nvcc 13.3", version="13.3",
                                      used_by=("ubuntu-cuda-13.3-x64",))],
                assets={"ember-b42-bin-ubuntu-x64.tar.gz": "c" * 64})
    text = cyclonedx(**args)  # type: ignore[arg-type]
    assert text == cyclonedx(**args)  # type: ignore[arg-type]
    doc = json.loads(text)
    assert doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.5"
    assert doc["serialNumber"].startswith("urn:uuid:")
    assert doc["metadata"]["timestamp"] == "2023-11-14T22:13:20Z"
    names = [c["name"] for c in doc["components"]]
    assert names == ["runtime/src/a.c", "runtime/src/b.c", "nvcc 13.3",
                     "ember-b42-bin-ubuntu-x64.tar.gz"]
    assert doc["dependencies"][0]["dependsOn"] == ["source:runtime/src/a.c",
                                                   "source:runtime/src/b.c"]


def test_sbom_lists_the_vendored_libraries() -> None:
    """civetweb and cJSON (ember-server's HTTP and JSON) are components of their own: version,
    licence, the sha256 of the upstream tarball they were taken from, the Debian patches
    applied, and the root depends on them."""
    vendored = vendored_components(REPO, EMBER.release_settings().third_party)
    assert [v.name for v in vendored] == ["civetweb", "cJSON"]
    doc = json.loads(cyclonedx(project="ember", tag="b42", commit=COMMIT,
                               date="2023-11-14T22:13:20Z", repo_url=REPO_URL,
                               sources=[SourceFile(path="runtime/src/a.c", sha256="a" * 64)],
                               toolchains=[], assets={}, vendored=vendored))
    libs = {c["name"]: c for c in doc["components"] if c["type"] == "library"}
    assert list(libs) == ["civetweb", "cJSON"]
    civetweb, cjson = libs["civetweb"], libs["cJSON"]
    assert (civetweb["version"], cjson["version"]) == ("1.16", "1.7.18")
    assert civetweb["licenses"] == cjson["licenses"] == [{"license": {"id": "MIT"}}]
    assert civetweb["hashes"] == [{"alg": "SHA-256", "content":
                                   "41dbfd68cd3b914ce440a5813f21058813b61a972600cc04fb8233a0d2d04fe4"}]
    assert cjson["hashes"] == [{"alg": "SHA-256", "content":
                                "3aa806844a03442c00769b83e99970be70fbef03735ff898f4811dd03b9f5ee5"}]
    assert civetweb["purl"] == "pkg:deb/debian/civetweb@1.16%2Bdfsg-2%2Bdeb13u1?arch=source"
    assert {"type": "vcs", "url": "https://github.com/civetweb/civetweb"} in \
        civetweb["externalReferences"]
    fixed = [i.get("id") for p in civetweb["pedigree"]["patches"] for i in p["resolves"]]
    assert "CVE-2025-55763" in fixed and "CVE-2025-9648" in fixed
    assert doc["dependencies"][0]["dependsOn"] == [
        "source:runtime/src/a.c", "vendored:civetweb@1.16", "vendored:cJSON@1.7.18"]
    assert libs["cJSON"]["description"] == ("vendored in runtime/third_party/cjson/, "
                                            "compiled into ember-server")


def test_toolchains_come_from_the_records(manifest: ReleaseManifest) -> None:
    """One SBOM component per program and version the assets' records name, with the
    entries that used it; nothing is parsed out of display strings."""
    zig = (Tool(name="zig", version="0.17.1"),)
    records = [dataclasses.replace(a.record, toolchain=zig + extra) for a, extra in zip(
        manifest.assets[:3], [(), (Tool(name="nvcc", version="13.3.73"),),
                              (Tool(name="NVRTC", version="12.4.127"),
                               Tool(name="ptxas", version="12.4.131"))], strict=True)]
    ids = [r.entry_id for r in records]
    got = toolchains_from_records(records)
    assert [(t.name, t.version, t.used_by) for t in got] == [
        ("NVRTC", "12.4.127", (ids[2],)),
        ("nvcc", "13.3.73", (ids[1],)),
        ("ptxas", "12.4.131", (ids[2],)),
        ("zig", "0.17.1", tuple(sorted(ids))),
    ]
    doc = json.loads(cyclonedx(project="ember", tag="b42", commit=COMMIT,
                               date="2023-11-14T22:13:20Z", repo_url=REPO_URL, sources=[],
                               toolchains=got, assets={}))
    refs = [c["bom-ref"] for c in doc["components"]]
    assert refs == ["toolchain:NVRTC@12.4.127", "toolchain:nvcc@13.3.73",
                    "toolchain:ptxas@12.4.131", "toolchain:zig@0.17.1"]
