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

from kiln.matrix import REQUIREMENT_FIELDS, Entry, Requirements, load_matrix
from kiln.package.records import AssetRecord, Verification, read_record, record_for, write_record

ROOT = Path(__file__).resolve().parents[2]
MATRIX = load_matrix(ROOT / "matrix")

# The per-asset JSON (and so each asset of manifest.json) keeps exactly these keys: moving the
# platform fields into Requirements changed the code, not the format.
RECORD_KEYS = {
    "name", "kind", "entry_id", "os", "arch", "backend", "backend_version", "libc",
    "libc_floor", "min_os", "cpu_baseline", "cpu_dispatch", "gpu_targets", "min_driver",
    "build_number", "commit", "size", "sha256", "unpacked_size", "verification",
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
