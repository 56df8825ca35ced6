"""Asset records are read with the types kiln writes, nothing converted: a hostile manifest or
index cannot turn ``"false"`` into a passed verification or ``"abc"`` into CPU features."""

from __future__ import annotations

from typing import Any

import pytest

from kiln.errors import ReleaseError
from kiln.package.records import AssetRecord, Tool, Verification


def honest() -> dict[str, Any]:
    return AssetRecord(
        name="ember-b42-bin-ubuntu-x64.tar.gz", kind="archive", entry_id="ubuntu-x64",
        os="linux", arch="x86_64", backend="cpu", backend_version=None, libc="glibc",
        libc_floor="2.17", min_os=None, cpu_baseline="x86-64", cpu_dispatch=("avx2",),
        gpu_targets=(), min_driver=None, build_number=42, commit="c" * 40,
        toolchain=(Tool(name="zig", version="0.17.1"),), size=10, sha256="0" * 64,
        unpacked_size=20, verification=Verification(method="native", ok=True, detail="ok"),
    ).to_json()


def test_an_honest_record_round_trips() -> None:
    data = honest()
    assert AssetRecord.from_json(data, source="r").to_json() == data


@pytest.mark.parametrize(("key", "value", "what"), [
    ("build_number", "42", "a non-negative integer"),
    ("build_number", True, "a non-negative integer"),
    ("build_number", -1, "a non-negative integer"),
    ("name", 5, "a string"),
    ("commit", None, "a string"),
    ("backend_version", 12.4, "a string or null"),
    ("libc_floor", ["2.17"], "a string or null"),
    ("cpu_dispatch", "abc", "a list of strings"),
    ("gpu_targets", [80], "a list of strings"),
])
def test_a_field_of_another_type_is_refused(key: str, value: object, what: str) -> None:
    data = honest()
    data[key] = value
    with pytest.raises(ReleaseError, match=rf"field '{key}' must be {what}"):
        AssetRecord.from_json(data, source="r")


@pytest.mark.parametrize("ok", ["false", 0, None])
def test_a_verification_outcome_must_be_a_boolean(ok: object) -> None:
    data = honest()
    data["verification"]["ok"] = ok
    with pytest.raises(ReleaseError, match=r"field 'verification' must be \{method: string, "
                                           r"ok: true or false"):
        AssetRecord.from_json(data, source="r")
