"""One ``Requirements`` value: a matrix entry and a release asset's record share it.

The platform facts an installer ranks by (OS, arch, backend and version, libc and floor,
oldest OS, CPU level and dispatch, GPU targets, driver floor) are declared once, in
``kiln.matrix.Requirements``; ``Entry`` and ``AssetRecord`` add only their own fields, and a
record built from an entry carries the entry's requirements unchanged.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import tarfile
from pathlib import Path

import pytest
from ember_project import NAMES

from kiln.errors import KilnError, ReleaseError
from kiln.matrix import REQUIREMENT_FIELDS, Entry, Requirements, load_matrix
from kiln.package.records import (
    AssetRecord,
    Tool,
    Verification,
    read_record,
    record_for,
    write_record,
)

ROOT = Path(__file__).resolve().parents[2]
MATRIX = load_matrix(ROOT / "matrix")

# The per-asset JSON (and so each asset of manifest.json): the platform fields moved into
# Requirements without changing their keys; `toolchain` is the one field records gained.
RECORD_KEYS = {
    "name", "kind", "entry_id", "os", "arch", "backend", "backend_version", "libc",
    "libc_floor", "min_os", "cpu_baseline", "cpu_dispatch", "gpu_targets", "min_driver",
    "build_number", "commit", "toolchain", "size", "sha256", "unpacked_size", "verification",
}


def _own_fields(cls: type) -> set[str]:
    return set(inspect.get_annotations(cls))


def test_the_platform_fields_are_declared_once() -> None:
    assert issubclass(Entry, Requirements) and issubclass(AssetRecord, Requirements)
    assert set(REQUIREMENT_FIELDS) == {f.name for f in dataclasses.fields(Requirements)}
    assert not _own_fields(Entry) & set(REQUIREMENT_FIELDS)
    assert not _own_fields(AssetRecord) & set(REQUIREMENT_FIELDS)


@pytest.mark.parametrize("entry", MATRIX.entries, ids=lambda e: e.id)
def test_a_record_carries_its_entry_requirements(entry: Entry, tmp_path: Path) -> None:
    asset = tmp_path / "ember-b1-bin-x.tar.gz"
    with tarfile.open(asset, "w:gz") as tf:
        tf.add(ROOT / "runtime" / "LICENSE", arcname="LICENSE")
    rec = record_for(entry, asset, kind="archive", build_number=1, commit="c" * 40,
                     toolchain=(Tool(name="zig", version="0.17.1"),),
                     verification=Verification(method="inspect", ok=True, detail="ok"))
    assert rec.requirements() == entry.requirements()
    assert type(rec.requirements()) is Requirements
    assert rec.floor == entry.floor and rec.backend_label == entry.backend_label
    path = write_record(rec, tmp_path)
    data = json.loads(path.read_text())
    assert set(data) == RECORD_KEYS
    assert read_record(path) == rec


def test_a_changed_requirement_is_a_different_value() -> None:
    e = MATRIX.entries[0]
    other = dataclasses.replace(e.requirements(), cpu_baseline="x86-64-v4")
    assert other != e.requirements()


@pytest.mark.parametrize("value", [
    None, [], "zig 0.17.1", [{"name": "zig"}], [{"name": "zig", "version": "0.17.1", "x": 1}],
    [{"name": "zig", "version": 17}], [{"name": "", "version": "1"}],
    [{"name": "zig\n", "version": "0.17.1"}], [{"name": "zig", "version": "0.17.1; rm -rf"}],
    [{"name": "../zig", "version": "1"}], [{"name": "z" * 65, "version": "1"}],
])
def test_a_record_with_a_bad_toolchain_is_refused(value: object) -> None:
    data = {"name": "ember-b1-bin-x.tar.gz", "kind": "archive", "entry_id": "x",
            "os": "linux", "arch": "x86_64", "backend": "cpu", "backend_version": None,
            "libc": "glibc", "libc_floor": "2.17", "min_os": None, "cpu_baseline": "x86-64",
            "cpu_dispatch": [], "gpu_targets": [], "min_driver": None, "build_number": 1,
            "commit": "c" * 40, "toolchain": value, "size": 1, "sha256": "0" * 64,
            "unpacked_size": 1, "verification": {"method": "native", "ok": True, "detail": ""}}
    with pytest.raises(ReleaseError, match="toolchain"):
        AssetRecord.from_json(data, source="rec.json")
    data["toolchain"] = [{"name": "zig", "version": "0.17.1"}]
    assert AssetRecord.from_json(data, source="rec.json").toolchain == (
        Tool(name="zig", version="0.17.1"),)


@pytest.mark.parametrize("entry", [e for e in MATRIX.entries if e.enabled],
                         ids=lambda e: e.id)
def test_every_toolchain_names_its_pinned_programs(entry: Entry) -> None:
    """What a record will carry: zig for every zig-hosted build, plus the device compilers
    at the exact versions kiln pins (CUDA 12.4 is NVRTC + ptxas, 13.3 is nvcc)."""
    from kiln.build.toolchains import TOOLCHAINS, recipe_for
    from kiln.plan import make_job

    try:
        recipe = recipe_for(entry, ROOT / "recipes")
    except KilnError:
        pytest.skip(f"{entry.id}: no recipe in recipes/ (built by a CI runner's own tools)")
    tools = TOOLCHAINS[recipe.toolchain].tools(make_job(entry, 1, NAMES))
    names = {t.name: t.version for t in tools}
    assert tools and all(t.version for t in tools)
    if recipe.toolchain != "oneapi":
        assert names["zig"] == "0.17.1"
    expected = {"cuda": {"12.4": {"NVRTC": "12.4.127", "ptxas": "12.4.131"},
                         "13.3": {"nvcc": "13.3.73"}}}
    if entry.backend == "cuda":
        assert {k: v for k, v in names.items() if k != "zig"} == \
            expected["cuda"][entry.backend_version or ""]
    if entry.backend == "vulkan":
        assert names["glslc"] == "2023.2"
