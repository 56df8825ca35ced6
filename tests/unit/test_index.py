"""kiln.release.index: the signed release index, its schema, its parser and its freshness."""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import minisign  # type: ignore[import-untyped]
import pytest
from test_rank import matrix_manifest

from kiln.errors import IntegrityError, ReleaseError
from kiln.matrix import Matrix, load_matrix
from kiln.release.index import (
    INDEX_MAX_BYTES,
    ReleaseIndex,
    TrustStore,
    check_fresh,
    general_distros,
    matrix_index,
    mirror_index,
    origin_id,
    parse_index,
    parse_index_comment,
)

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "docs" / "index.schema.json"
PUB = bytes(minisign.KeyPair.generate().public_key).decode()
KEY_LINE = PUB.strip().splitlines()[-1]
# Floors as kiln release measures them from the binaries, for two of the archives.
FLOORS: dict[str, dict[str, str | int | None]] = {
    "ember-b42-bin-ubuntu-x64.tar.gz": {"glibc": "2.17", "glibcxx": "3.4.19",
                                        "x86_64_level": 1},
    "ember-b42-bin-win-cpu-x64.zip": {"windows": "10.0"},
}


@functools.cache
def _matrix() -> Matrix:
    return load_matrix(REPO / "matrix")


@functools.cache
def release(tag: str = "b42", expiry_days: int = 365) -> ReleaseIndex:
    return matrix_index(matrix_manifest(tag=tag), _matrix(), floors=FLOORS,
                        expiry_days=expiry_days)


def raw(index: ReleaseIndex) -> dict[str, Any]:
    return copy.deepcopy(index.to_json())


def dump(data: object) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True).encode()


def asset(index: ReleaseIndex, entry_id: str) -> Any:
    return next(a for a in index.releases[0].assets if a.record.entry_id == entry_id)


# ------------------------------------------------------------------------ (a) schema, round trip


def test_a_real_index_validates_against_the_schema() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    index = release()
    assert index.kind == "release" and index.version == 42
    assert index.expires == "2027-01-01T00:00:00Z"  # 2026-01-01 + 365 days
    assert len(index.releases) == 1 and len(index.releases[0].assets) == 25
    assert not list(validator.iter_errors(json.loads(index.text())))
    mirror = mirror_index(None, index, now=datetime(2026, 2, 1, tzinfo=UTC), expiry_days=30)
    assert not list(validator.iter_errors(json.loads(mirror.text())))


@pytest.mark.parametrize("change", ["unknown top field", "bad tag", "bad scope", "bad sha256",
                                    "missing record key", "bad kind"])
def test_the_schema_refuses_what_the_parser_refuses(change: str) -> None:
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text(encoding="utf-8")))
    data = raw(release())
    first = data["releases"][0]["assets"][0]
    if change == "unknown top field":
        data["extra"] = 1
    elif change == "bad tag":
        data["releases"][0]["tag"] = "v42"
    elif change == "bad scope":
        first["scope"] = "everywhere"
    elif change == "bad sha256":
        first["sha256"] = "A" * 64
    elif change == "missing record key":
        del first["record"]["min_driver"]
    else:
        data["kind"] = "nightly"
    assert list(validator.iter_errors(data))
    with pytest.raises(IntegrityError):
        parse_index(dump(data), source="index.json")


def test_round_trip_gives_an_equal_value_and_identical_text() -> None:
    index = release()
    text = index.text()
    parsed = parse_index(text.encode(), source="index.json")
    assert parsed.text() == text
    assert parsed.comment() == "ember release-index version 42 expires 2027-01-01T00:00:00Z"
    again = parse_index(parsed.text().encode(), source="index.json")
    assert again == parsed
    assert [a.record for a in parsed.releases[0].assets] == [
        a.record for a in index.releases[0].assets]
    assert parsed.releases[0].disabled == index.releases[0].disabled


def test_a_built_index_equals_its_parsed_copy() -> None:
    index = release()
    assert parse_index(index.text().encode(), source="index.json") == index


def test_floors_and_properties_of_an_asset() -> None:
    a = asset(release(), "ubuntu-x64")
    out = a.to_json()
    assert out["floors"] == {"glibc": "2.17", "glibcxx": "3.4.19", "macos": None,
                             "windows": None, "x86_64_level": 1, "android_api": None}
    assert out["file"] == "ember-b42-bin-ubuntu-x64.tar.gz"
    assert out["properties"][:3] == ["os :: name :: linux", "cpu :: arch :: x86_64",
                                     "cpu :: baseline :: x86-64"]
    assert "libc :: glibc :: 2.17" in out["properties"]
    assert "linux :: distro :: ubuntu" in out["properties"]
    assert "linux :: scope :: general" in out["properties"]
    assert out["properties"][-4:] == ["floor :: glibc :: 2.17", "floor :: glibcxx :: 3.4.19",
                                      "floor :: x86_64_level :: 1", "verify :: method :: "
                                      + a.record.verification.method]
    win = asset(release(), "win-cpu-x64").to_json()["properties"]
    assert "os :: scope :: any" in win and "floor :: windows :: 10.0" in win
    assert not any(p.startswith(("linux ::", "libc ::")) for p in win)
    cuda = asset(release(), "ubuntu-cuda-13.3-x64").to_json()["properties"]
    assert "backend :: name :: cuda@13.3" in cuda
    assert "gpu :: driver_floor :: 580.65" in cuda
    assert "gpu :: target :: compute_120" in cuda


# ------------------------------------------------------------------------ (b) scope


def test_scope_by_distribution() -> None:
    index = release()
    scopes = {a.record.entry_id: (a.distro, a.scope) for a in index.releases[0].assets}
    assert scopes["openeuler-x64"] == ("openeuler", "distribution")
    assert scopes["openeuler-arm64"] == ("openeuler", "distribution")
    assert scopes["ubuntu-x64"] == ("ubuntu", "general")
    assert scopes["ubuntu-cuda-13.3-x64"] == ("ubuntu", "general")
    assert scopes["win-cpu-x64"] == (None, "any")
    assert scopes["macos-arm64"] == (None, "any")
    assert scopes["android-arm64"] == (None, "any")
    assert {s for _d, s in scopes.values()} == {"general", "distribution", "any"}


def test_general_distros_takes_the_lowest_glibc_floor() -> None:
    assert general_distros([("linux", "ubuntu", "2.17"), ("linux", "openeuler", "2.28"),
                            ("windows", None, None), ("linux", None, "2.5")]) == {"ubuntu"}
    # compared as numbers, not text: 2.9 is below 2.17
    assert general_distros([("linux", "a", "2.17"), ("linux", "b", "2.9")]) == {"b"}
    # a distribution's lowest floor counts; a tie keeps both
    assert general_distros([("linux", "a", "2.28"), ("linux", "a", "2.17"),
                            ("linux", "b", "2.17")]) == {"a", "b"}
    assert general_distros([("macos", None, None)]) == frozenset()
    assert general_distros(
        (e.os, e.distro, e.libc_floor) for e in _matrix().entries) == {"ubuntu"}


# ------------------------------------------------------------------------ (c) parse refusals


def _refuse(data: object, match: str) -> None:
    body = data if isinstance(data, bytes) else dump(data)
    with pytest.raises(IntegrityError, match=match) as info:
        parse_index(body, source="mirror/index.json")
    assert info.value.message.startswith("mirror/index.json: ")
    assert info.value.exit_code == 12


def test_unknown_and_missing_fields_are_refused() -> None:
    data = raw(release())
    data["signed_by"] = "me"
    _refuse(data, r"the index: fields \[.*'signed_by'.*\] are not")
    data = raw(release())
    del data["expires"]
    _refuse(data, r"the index: fields .* are not .*'expires'")
    data = raw(release())
    data["releases"][0]["assets"][0]["mirror"] = "x"
    _refuse(data, r"releases\[0\]\.assets\[0\]: fields")
    data = raw(release())
    del data["releases"][0]["assets"][1]["floors"]["glibc"]
    _refuse(data, r"releases\[0\]\.assets\[1\]\.floors: fields")
    data = raw(release())
    data["releases"][0]["assets"][0]["record"]["extra"] = 1
    _refuse(data, r"releases\[0\]\.assets\[0\]\.record: .*unknown: \['extra'\]")
    data = raw(release())
    del data["releases"][0]["disabled"][0]["tracking"]
    _refuse(data, r"releases\[0\]\.disabled\[0\]: fields")


def test_wrong_schema_and_kind_are_refused() -> None:
    data = raw(release())
    data["schema"] = "kiln-index/2"
    _refuse(data, "schema: 'kiln-index/2' is not 'kiln-index/1'")
    data["schema"] = "kiln-index/1"
    data["kind"] = "nightly"
    _refuse(data, "kind: 'nightly' is not one of release, mirror")
    data["kind"] = "release"
    data["version"] = -1
    _refuse(data, r"the index\.version: '-1' is not a non-negative integer")
    data["version"] = True
    _refuse(data, r"the index\.version: 'True' is not a non-negative integer")


@pytest.mark.parametrize(("field", "value"), [
    ("sha256", "1" * 64), ("size", 1001), ("unpacked_size", 1), ("file", "other.tar.gz"),
    ("id", "ubuntu-x64"), ("backend", "vulkan"), ("verification", "run")])
def test_a_flat_field_that_disagrees_with_the_record_is_refused(field: str, value: Any) -> None:
    data = raw(release())
    data["releases"][0]["assets"][0][field] = value
    _refuse(data, rf"releases\[0\]\.assets\[0\]\.{field}: .* differs from the record's")


def test_properties_that_do_not_match_are_refused() -> None:
    data = raw(release())
    props = data["releases"][0]["assets"][0]["properties"]
    props.reverse()
    _refuse(data, r"releases\[0\]\.assets\[0\]\.properties: do not match the asset's record")
    data = raw(release())
    data["releases"][0]["assets"][0]["properties"].append("cpu :: dispatch :: avx512")
    _refuse(data, r"releases\[0\]\.assets\[0\]\.properties: do not match")
    # a scope that does not fit the build's OS
    data = raw(release())
    data["releases"][0]["assets"][0]["scope"] = "general"
    _refuse(data, r"releases\[0\]\.assets\[0\]\.scope: 'general' is not one of any")


@pytest.mark.parametrize("name", ["../ember.tar.gz", "sub/ember.tar.gz", "ember..tar.gz",
                                  ".hidden.tar.gz", "a\\b.zip"])
def test_file_names_that_are_not_plain_are_refused(name: str) -> None:
    data = raw(release())
    first = data["releases"][0]["assets"][0]
    first["file"] = first["record"]["name"] = name
    _refuse(data, r"releases\[0\]\.assets\[0\]\.record\.name: .* is not a plain file name")


def test_a_file_listed_twice_is_refused() -> None:
    data = raw(release())
    assets = data["releases"][0]["assets"]
    assets.append(copy.deepcopy(assets[0]))
    _refuse(data, r"releases\[0\]\.assets\[25\]\.file: 'ember-b42-bin-macos-arm64\.tar\.gz' "
                  "is listed twice")


@pytest.mark.parametrize(("where", "value", "match"), [
    ("tag", "b42x", r"releases\[0\]\.tag: 'b42x' is not valid"),
    ("date", "2026-01-01 00:00:00", r"releases\[0\]\.date: .* is not valid"),
    ("commit", "abc", r"releases\[0\]\.commit: 'abc' is not valid"),
])
def test_release_fields_are_checked(where: str, value: str, match: str) -> None:
    data = raw(release())
    data["releases"][0][where] = value
    _refuse(data, match)


def test_releases_must_be_newest_first() -> None:
    b41, b42 = raw(release("b41")), raw(release("b42"))
    data = raw(release("b42"))
    data["kind"] = "mirror"
    data["releases"] = [b41["releases"][0], b42["releases"][0]]
    _refuse(data, "releases: not newest first, or a tag is listed twice")
    data["releases"] = [b42["releases"][0], b42["releases"][0]]
    _refuse(data, "releases: not newest first, or a tag is listed twice")
    data["releases"] = [b42["releases"][0], b41["releases"][0]]
    parsed = parse_index(dump(data), source="index.json")
    assert [r.tag for r in parsed.releases] == ["b42", "b41"]


def test_a_release_index_lists_exactly_one_release() -> None:
    data = raw(release("b42"))
    data["releases"].append(raw(release("b41"))["releases"][0])
    _refuse(data, "releases: a release's index lists exactly that release")
    data["releases"] = []
    _refuse(data, "releases: a release's index lists exactly that release")


def test_a_record_of_another_build_is_refused() -> None:
    data = raw(release())
    data["releases"][0]["assets"][2]["record"]["build_number"] = 41
    _refuse(data, r"releases\[0\]\.assets\[2\]: '.*' was built for b41 at 000000000000, not "
                  r"for this release \(b42 at 000000000000\)")
    data = raw(release())
    data["releases"][0]["assets"][2]["record"]["commit"] = "1" * 40
    _refuse(data, r"releases\[0\]\.assets\[2\]: .* was built for b42 at 111111111111")


def test_oversized_non_utf8_and_non_json_input_is_refused() -> None:
    _refuse(b" " * (INDEX_MAX_BYTES + 1), "the file: larger than 16777216 bytes")
    _refuse(b'{"schema": "\xff"}', "the file: not JSON")
    _refuse(b"{", "the file: not JSON")
    _refuse(b"[" * 100000, "the file: not JSON")
    _refuse(b"[]", "the index: not a JSON object")


# ------------------------------------------------------------------------ (d) freshness


NOW = datetime(2026, 6, 1, tzinfo=UTC)


def test_a_fresh_index_with_its_own_comment_passes() -> None:
    index = release()
    comment = index.comment()
    assert comment == "ember release-index version 42 expires 2027-01-01T00:00:00Z"
    assert parse_index_comment(comment) == ("ember", "release", 42, "2027-01-01T00:00:00Z")
    check_fresh(index, comment, now=NOW, source="index.json")
    check_fresh(index, comment, now=datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC),
                source="index.json")


@pytest.mark.parametrize("comment", [
    "ember release-index version 41 expires 2027-01-01T00:00:00Z",
    "ember release-index version 43 expires 2027-01-01T00:00:00Z",
    "ember release-index version 42 expires 2027-01-02T00:00:00Z",
    "ember mirror-index version 42 expires 2027-01-01T00:00:00Z",
    "other release-index version 42 expires 2027-01-01T00:00:00Z",
])
def test_a_comment_that_disagrees_is_refused(comment: str) -> None:
    with pytest.raises(IntegrityError, match=r"the signed comment says .* the file says ember "
                                             r"release-index version 42 expires "
                                             r"2027-01-01T00:00:00Z"):
        check_fresh(release(), comment, now=NOW, source="index.json")


def test_an_expired_index_is_refused() -> None:
    index = release()
    for now in (datetime(2027, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC)):
        with pytest.raises(IntegrityError, match=r"expired on 2027-01-01T00:00:00Z .*freeze"):
            check_fresh(index, index.comment(), now=now, source="index.json")
    short = release(expiry_days=10)
    assert short.expires == "2026-01-11T00:00:00Z"
    with pytest.raises(IntegrityError, match="expired"):
        check_fresh(short, short.comment(), now=NOW, source="index.json")


def test_an_impossible_expiry_date_is_an_integrity_error() -> None:
    data = raw(release())
    data["expires"] = "2026-13-45T00:00:00Z"
    with pytest.raises(IntegrityError, match=r"expires: '2026-13-45T00:00:00Z' is not a date"):
        parse_index(dump(data), source="index.json")


@pytest.mark.parametrize("junk", [
    "", "ember b42 commit 0000 date 2026-01-01T00:00:00Z",
    "ember release-index version 42 expires 2027-01-01",
    "ember release-index version -1 expires 2027-01-01T00:00:00Z",
    "ember release-index version 1234567890123 expires 2027-01-01T00:00:00Z",
    "ember nightly-index version 1 expires 2027-01-01T00:00:00Z",
    "ember release-index version 42 expires 2027-01-01T00:00:00Z\n",
    "ember release-index version 42 expires 2027-01-01T00:00:00Z extra",
    "-ember release-index version 42 expires 2027-01-01T00:00:00Z",
])
def test_junk_comments_are_refused(junk: str) -> None:
    with pytest.raises(IntegrityError, match="does not name an index"):
        parse_index_comment(junk)


# ------------------------------------------------------------------------ (e) trust store


M = "https://mirror.example/ember"


def _mirror(version: int) -> ReleaseIndex:
    base = mirror_index(None, release(), now=NOW, expiry_days=30)
    return ReleaseIndex(project=base.project, kind="mirror", version=version,
                        expires=base.expires, releases=base.releases)


def test_trust_store_refuses_a_lower_version(tmp_path: Path) -> None:
    store = TrustStore(tmp_path / "cache" / "trust.json")
    assert store.seen(PUB, "mirror", M) is None
    store.check(_mirror(3), PUB, origin=M, source="m")  # nothing seen yet
    store.remember(_mirror(5), PUB, origin=M)
    assert store.seen(PUB, "mirror", M) == 5
    with pytest.raises(IntegrityError, match=r"mirror index version 4 is older than version 5"
                                             r".*rollback") as info:
        store.check(_mirror(4), PUB, origin=M, source="m/index.json")
    assert info.value.exit_code == 12
    store.check(_mirror(5), PUB, origin=M, source="m")
    store.check(_mirror(6), PUB, origin=M, source="m")
    store.remember(_mirror(3), PUB, origin=M)  # never lowered
    assert store.seen(PUB, "mirror", M) == 5
    store.remember(_mirror(9), PUB, origin=M)
    slot = f"{TrustStore.key_id(PUB)}:mirror:{origin_id(M)}"
    assert json.loads((tmp_path / "cache" / "trust.json").read_text()) == {slot: 9}
    # another mirror of the same project keeps its own count
    store.check(_mirror(1), PUB, origin="https://other.example/ember/", source="o")
    assert origin_id(M) == origin_id(M + "/") == hashlib.sha256(M.encode()).hexdigest()[:16]


def test_trust_store_kinds_and_keys_are_separate(tmp_path: Path) -> None:
    store = TrustStore(tmp_path / "trust.json")
    store.remember(_mirror(50), PUB, origin=M)
    store.check(release("b41"), PUB, origin=M, source="r")  # a release index: another kind
    assert store.seen(PUB, "release", M) is None
    other = bytes(minisign.KeyPair.generate().public_key).decode()
    store.check(_mirror(1), other, origin=M, source="m")  # another key
    store.remember(release("b42"), PUB, origin=M)
    assert store.seen(PUB, "release", M) == 42 and store.seen(PUB, "mirror", M) == 50


def test_key_id_is_the_same_for_the_file_and_its_key_line() -> None:
    expected = hashlib.sha256(KEY_LINE.encode()).hexdigest()[:32]
    assert TrustStore.key_id(PUB) == expected
    assert TrustStore.key_id(KEY_LINE) == expected
    assert TrustStore.key_id(f"  {KEY_LINE}\n") == expected
    assert len(expected) == 32
    other = bytes(minisign.KeyPair.generate().public_key).decode()
    assert TrustStore.key_id(other) != expected


@pytest.mark.parametrize("text", ["{", "[]", '{"k:mirror": "5"}', '{"k:mirror": true}',
                                  "\xff"])
def test_a_corrupt_trust_file_is_an_integrity_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "trust.json"
    path.write_text(text, encoding="latin-1")
    store = TrustStore(path)
    with pytest.raises(IntegrityError, match=r"trust\.json"):
        store.check(_mirror(1), PUB, origin=M, source="m")
    with pytest.raises(IntegrityError):
        store.remember(_mirror(1), PUB, origin=M)


# ------------------------------------------------------------------------ (f) mirror index


def test_mirror_index_versions_and_order() -> None:
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    first = mirror_index(None, release("b41"), now=now, expiry_days=30)
    assert (first.kind, first.version, first.expires) == ("mirror", 1, "2026-03-31T12:00:00Z")
    assert first.comment() == "ember mirror-index version 1 expires 2026-03-31T12:00:00Z"
    second = mirror_index(first, release("b43"), now=now, expiry_days=7)
    assert (second.version, second.expires) == (2, "2026-03-08T12:00:00Z")
    third = mirror_index(second, release("b42"), now=now, expiry_days=30)
    assert third.version == 3
    assert [r.tag for r in third.releases] == ["b43", "b42", "b41"]
    assert third.latest is not None and third.latest.tag == "b43"
    assert third.release("b42") == release("b42").releases[0]
    assert third.release("b40") is None
    parsed = parse_index(third.text().encode(), source="index.json")
    assert parsed.text() == third.text()
    assert parse_index(parsed.text().encode(), source="index.json") == parsed


def test_republishing_a_tag_replaces_it() -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    first = mirror_index(None, release("b42"), now=now, expiry_days=30)
    again = matrix_index(matrix_manifest(missing=("ubuntu-x64",)), _matrix())
    second = mirror_index(first, again, now=now, expiry_days=30)
    assert second.version == 2 and len(second.releases) == 1
    assert second.releases[0] == again.releases[0]
    assert [m.entry_id for m in second.releases[0].missing] == ["ubuntu-x64"]


def test_a_mirror_of_another_project_is_refused() -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    first = mirror_index(None, release("b42"), now=now, expiry_days=30)
    other = ReleaseIndex(project="other", kind="release", version=43,
                         expires=first.expires, releases=release("b43").releases)
    with pytest.raises(ReleaseError, match="of project 'ember', not 'other'"):
        mirror_index(first, other, now=now, expiry_days=30)
