"""runtime/third_party/: every vendored file is the one SOURCES.json records (sha256), nothing
unrecorded lies beside them, and the record says where each library came from (the tarballs and
patches scripts/vendor_third_party.sh pins). No network: scripts/vendor_third_party.sh --check
re-downloads and rebuilds the folder byte for byte."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from ember_project import EMBER

from kiln.errors import ReleaseError
from kiln.project import ThirdParty
from kiln.release.sbom import vendored_components

REPO = Path(__file__).resolve().parents[2]
THIRD_PARTY = REPO / "runtime" / "third_party"
SCRIPT = REPO / "scripts" / "vendor_third_party.sh"
HEX64 = re.compile(r"^[0-9a-f]{64}$")
TP = EMBER.release_settings().third_party
assert TP is not None
THIRD_PARTY_SOURCES = TP.record


def _record() -> dict[str, Any]:
    data = json.loads((REPO / THIRD_PARTY_SOURCES).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _components() -> list[dict[str, Any]]:
    return list(_record()["components"])


def test_the_record_is_where_the_sbom_reads_it() -> None:
    assert (REPO / THIRD_PARTY_SOURCES).parent == THIRD_PARTY
    assert [c["name"] for c in _components()] == ["civetweb", "cJSON"]


@pytest.mark.parametrize("component", _components(), ids=lambda c: c["name"])
def test_every_vendored_file_has_its_recorded_sha256(component: dict[str, Any]) -> None:
    assert component["files"], component["name"]
    for f in component["files"]:
        path = THIRD_PARTY / f["path"]
        assert path.is_file(), f["path"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == f["sha256"], \
            f"{f['path']} differs from the vendored file (scripts/vendor_third_party.sh)"


@pytest.mark.parametrize("component", _components(), ids=lambda c: c["name"])
def test_nothing_unrecorded_in_a_vendored_folder(component: dict[str, Any]) -> None:
    folder = THIRD_PARTY / component["directory"]
    present = {p.relative_to(THIRD_PARTY).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert present == {f["path"] for f in component["files"]}


def test_the_top_folder_holds_only_the_record_the_notes_and_the_libraries() -> None:
    names = {p.name for p in THIRD_PARTY.iterdir()}
    assert names == {"SOURCES.json", "README.md", ".gitattributes"} | {
        c["directory"] for c in _components()}
    # git keeps the bytes (line endings too) of what the sha256s pin
    assert "* -text" in (THIRD_PARTY / ".gitattributes").read_text(encoding="utf-8")


@pytest.mark.parametrize("component", _components(), ids=lambda c: c["name"])
def test_provenance_is_complete(component: dict[str, Any]) -> None:
    assert component["license"] == "MIT"
    assert component["upstream"].startswith("https://github.com/")
    assert component["version"] and component["debian"]["version"].startswith(
        component["version"])
    tarballs = component["tarballs"]
    assert len(tarballs) == 2  # the upstream (.orig) tarball, then Debian's debian/ tarball
    assert ".orig.tar." in tarballs[0]["url"] and ".debian.tar." in tarballs[1]["url"]
    for t in tarballs:
        assert t["url"].startswith("http://deb.debian.org/debian/pool/main/")
        assert HEX64.match(t["sha256"])
        # the script downloads exactly what the record says, with the same pins
        assert t["sha256"] in SCRIPT.read_text(encoding="utf-8")
    for p in component["patches"]:
        assert HEX64.match(p["sha256"]) and p["what"]
        if p["applied"]:
            assert p["type"] in ("backport", "cherry-pick", "unofficial", "monkey")
    licence = component["license_file"]
    assert licence in {f["path"] for f in component["files"]}
    assert EMBER.wheel is not None  # the wheel ships the licences beside the server
    assert f"share/ember/licenses/{component['license_ship_as']}" in EMBER.wheel.server_licenses


def test_the_debian_security_fixes_are_applied() -> None:
    applied = {c["name"]: {p["resolves"] for p in c["patches"] if p["applied"]}
               for c in _components()}
    assert {"CVE-2025-55763", "CVE-2025-9648"} <= applied["civetweb"]
    assert "CVE-2023-26819" in applied["cJSON"]
    # a Debian patch that is not applied changes no vendored file
    for c in _components():
        for p in c["patches"]:
            assert p["applied"] or "none of it vendored" in p["what"], p["name"]


def test_cmake_installs_the_licences_the_archives_require() -> None:
    cmake = (REPO / "runtime" / "CMakeLists.txt").read_text(encoding="utf-8")
    for c in _components():
        rel = c["license_file"]
        assert f"third_party/{rel}" in cmake, rel
        assert f"RENAME {c['license_ship_as']}" in cmake


def test_the_sbom_reads_the_record() -> None:
    got = {v.name: v for v in vendored_components(REPO, TP)}
    for c in _components():
        v = got[c["name"]]
        assert v.version == c["version"] and v.license == "MIT"
        assert v.source_sha256 == c["tarballs"][0]["sha256"]
        assert [p.name for p in v.patches] == [p["name"] for p in c["patches"] if p["applied"]]


def test_a_broken_record_is_a_release_error(tmp_path: Path) -> None:
    path = tmp_path / THIRD_PARTY_SOURCES
    path.parent.mkdir(parents=True)
    path.write_text('{"components": [{"name": "civetweb"}]}\n')
    with pytest.raises(ReleaseError, match=r"SOURCES\.json"):
        vendored_components(tmp_path, TP)
    record = _record()
    record["components"][0]["tarballs"] = []
    path.write_text(json.dumps(record))
    with pytest.raises(ReleaseError, match="no source tarball"):
        vendored_components(tmp_path, TP)
    # a record kiln.toml names must exist: the SBOM never leaves vendored code out silently
    with pytest.raises(ReleaseError, match="is missing"):
        vendored_components(tmp_path, ThirdParty(record="elsewhere/SOURCES.json", used_by="x"))
    assert vendored_components(tmp_path, None) == ()
