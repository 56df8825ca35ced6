"""The release stage without programs: scanning records, the completeness gate, the merged
manifest, SHA256SUMS, project settings and the atomic release directory (fake signer)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from ember_project import INSTALLER

from kiln.errors import ConfigError, IntegrityError, ReleaseError
from kiln.matrix import Matrix, load_matrix
from kiln.package.records import Tool, Verification, record_for, write_record
from kiln.release.assemble import (
    LocalAsset,
    assemble,
    expand_allowed,
    gate,
    release_manifest,
    scan_artifacts,
)
from kiln.release.index import matrix_index
from kiln.release.manifest import (
    MANIFEST_NAME,
    RELEASE_FILES,
    SIGNATURE_NAME,
    SUMS_NAME,
    ReleaseManifest,
    format_sums,
    parse_sums,
    parse_tag,
    read_release,
    verify_sums,
)

REPO = Path(__file__).resolve().parents[2]
COMMIT = "a" * 40
CI_ONLY = ["ubuntu-rocm-7.2-x64", "ubuntu-sycl-fp32-x64", "ubuntu-sycl-fp16-x64",
           "win-sycl-x64", "win-hip-radeon-x64"]


@pytest.fixture(scope="module")
def matrix() -> Matrix:
    return load_matrix(REPO / "matrix")


def tiny_archive(path: Path, payload: bytes) -> None:
    """A deterministic tar.gz holding one file."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("ember/README")
        info.size = len(payload)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(payload))
    path.write_bytes(gzip.compress(raw.getvalue(), mtime=0))


def make_asset(directory: Path, matrix: Matrix, entry_id: str, *, number: int = 42,
               commit: str = COMMIT, ok: bool = True) -> LocalAsset:
    entry = matrix.get(entry_id)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"ember-b{number}-bin-{entry_id}.{entry.archive}"
    tiny_archive(path, f"ember {entry_id}\n".encode())
    record = record_for(entry, path, kind="archive", build_number=number, commit=commit,
                        toolchain=(Tool(name="zig", version="0.17.1"),),
                        verification=Verification(method=entry.verify, ok=ok,
                                                  detail="synthetic"))
    write_record(record, directory)
    return LocalAsset(record=record, path=path)


def local_assets(directory: Path, matrix: Matrix) -> list[LocalAsset]:
    return [make_asset(directory, matrix, e.id) for e in matrix.enabled if e.local]


class FakeSigner:
    """Stands in for minisign: the 'signature' is a hash of the file."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def public_key(self) -> str:
        # A well-formed minisign public key (algorithm "Ed", key id, 32 key bytes) that signs
        # nothing: the installers embed it, so it must parse.
        key = base64.b64encode(b"Ed" + bytes(range(8)) + bytes(32)).decode()
        return f"untrusted comment: fake\n{key}\n"

    def sign(self, path: Path, signature: Path, *, trusted_comment: str) -> None:
        if self.fail:
            raise ReleaseError("signing failed")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        signature.write_text(f"trusted comment: {trusted_comment}\n{digest}\n")

    def verify(self, path: Path, signature: Path, public_key: Path) -> None:
        assert hashlib.sha256(path.read_bytes()).hexdigest() in signature.read_text()


# --------------------------------------------------------------------------------------------


def test_parse_tag() -> None:
    assert parse_tag("b4242") == 4242
    with pytest.raises(ConfigError, match="b<N>"):
        parse_tag("v1.0")


def test_scan_finds_records_in_subfolders_and_ignores_other_json(tmp_path: Path,
                                                                 matrix: Matrix) -> None:
    make_asset(tmp_path / "ubuntu-x64", matrix, "ubuntu-x64")
    make_asset(tmp_path / "win-cpu-x64", matrix, "win-cpu-x64")
    (tmp_path / "summary.json").write_text('{"jobs": 2}')
    (tmp_path / "broken.json").write_text("{not json")
    found = scan_artifacts(tmp_path)
    assert [a.record.entry_id for a in found] == ["ubuntu-x64", "win-cpu-x64"]


def test_scan_merges_identical_copies_and_refuses_conflicts(tmp_path: Path,
                                                            matrix: Matrix) -> None:
    a = make_asset(tmp_path / "one", matrix, "ubuntu-x64")
    (tmp_path / "two").mkdir()
    for p in (a.path, a.path.with_name(a.path.name + ".json")):
        (tmp_path / "two" / p.name).write_bytes(p.read_bytes())
    assert len(scan_artifacts(tmp_path)) == 1
    make_asset(tmp_path / "three", matrix, "ubuntu-x64", commit="b" * 40)
    with pytest.raises(ReleaseError, match="two different assets named"):
        scan_artifacts(tmp_path)


def test_scan_detects_a_modified_asset(tmp_path: Path, matrix: Matrix) -> None:
    a = make_asset(tmp_path, matrix, "ubuntu-x64")
    a.path.write_bytes(a.path.read_bytes() + b"x")
    with pytest.raises(IntegrityError, match="size or sha256 differs"):
        scan_artifacts(tmp_path)


def test_gate_refuses_missing_entries_and_names_them(tmp_path: Path, matrix: Matrix) -> None:
    assets = local_assets(tmp_path, matrix)
    with pytest.raises(ReleaseError) as info:
        gate(matrix, assets, build_number=42, commit=COMMIT)
    err = info.value
    for entry_id in CI_ONLY:
        assert entry_id in err.message
    assert "5 enabled entries are missing" in err.message
    assert err.hint is not None and "--allow-missing " + " ".join(CI_ONLY) in err.hint


def test_gate_lets_allowed_entries_through(tmp_path: Path, matrix: Matrix) -> None:
    assets = local_assets(tmp_path, matrix)
    allowed = expand_allowed(matrix, ["ubuntu-rocm-*", "*sycl*", "win-hip-radeon-x64"])
    result = gate(matrix, assets, build_number=42, commit=COMMIT, allow_missing=allowed)
    assert len(result.assets) == 20
    assert [m.entry_id for m in result.missing] == CI_ONLY
    assert all("CI runner" in m.reason for m in result.missing)
    assert [d.entry_id for d in result.disabled] == ["macos-arm64-kleidiai",
                                                     "openeuler-ascend-910b-arm64"]


def test_allow_missing_unknown_id_suggests(matrix: Matrix) -> None:
    with pytest.raises(ConfigError) as info:
        expand_allowed(matrix, ["ubuntu-rocm-7.3-x64"])
    assert info.value.hint == "did you mean 'ubuntu-rocm-7.2-x64'?"


def test_unverified_asset_counts_as_missing_with_its_reason(tmp_path: Path,
                                                            matrix: Matrix) -> None:
    assets = local_assets(tmp_path / "ok", matrix)
    assets = [a for a in assets if a.record.entry_id != "ubuntu-s390x"]
    assets.append(make_asset(tmp_path / "bad", matrix, "ubuntu-s390x", ok=False))
    with pytest.raises(ReleaseError, match=r"ubuntu-s390x: verification failed \(qemu\)"):
        gate(matrix, assets, build_number=42, commit=COMMIT,
             allow_missing=frozenset(CI_ONLY))
    result = gate(matrix, assets, build_number=42, commit=COMMIT,
                  allow_missing=frozenset([*CI_ONLY, "ubuntu-s390x"]))
    assert "ubuntu-s390x" not in {a.record.entry_id for a in result.assets}


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"number": 41}, "built as b41, but this release is b42"),
    ({"commit": "c" * 40}, "built from commit cccccccccccc"),
])
def test_gate_refuses_assets_of_another_build(tmp_path: Path, matrix: Matrix,
                                              kwargs: dict[str, object], match: str) -> None:
    asset = make_asset(tmp_path, matrix, "ubuntu-x64", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ReleaseError, match=match):
        gate(matrix, [asset], build_number=42, commit=COMMIT, allow_missing=matrix.ids)


def test_gate_refuses_a_disabled_entry(tmp_path: Path, matrix: Matrix) -> None:
    asset = make_asset(tmp_path, matrix, "macos-arm64-kleidiai")
    with pytest.raises(ReleaseError, match="is disabled in the matrix"):
        gate(matrix, [asset], build_number=42, commit=COMMIT, allow_missing=matrix.ids)


def test_manifest_round_trip_and_urls(tmp_path: Path, matrix: Matrix) -> None:
    result = gate(matrix, local_assets(tmp_path, matrix), build_number=42, commit=COMMIT,
                  allow_missing=frozenset(CI_ONLY))
    m = release_manifest(result, project="ember", tag="b42", build_number=42, commit=COMMIT,
                         commit_epoch=1_700_000_000,
                         base_url="https://github.com/o/r/releases/download/b42")
    data = json.loads(m.text())
    assert data["date"] == "2023-11-14T22:13:20Z"
    first = data["assets"][0]
    assert first["url"] == f"https://github.com/o/r/releases/download/b42/{first['name']}"
    for key in ("entry_id", "os", "arch", "backend", "backend_version", "libc_floor",
                "min_os", "cpu_baseline", "size", "sha256", "verification"):
        assert key in first
    assert {d["entry_id"] for d in data["disabled"]} == {"macos-arm64-kleidiai",
                                                         "openeuler-ascend-910b-arm64"}
    assert [x["entry_id"] for x in data["missing"]] == CI_ONLY
    assert ReleaseManifest.from_json(data, source="m") == m


def test_sums_round_trip_sorted() -> None:
    text = format_sums({"b.zip": "1" * 64, "a.tar.gz": "2" * 64})
    assert text == f"{'2' * 64}  a.tar.gz\n{'1' * 64}  b.zip\n"
    assert parse_sums(text, source="x") == {"a.tar.gz": "2" * 64, "b.zip": "1" * 64}
    with pytest.raises(IntegrityError):
        parse_sums("nonsense\n", source="x")


def _assemble(tmp_path: Path, matrix: Matrix, out: Path,
              signer: FakeSigner | None = None) -> ReleaseManifest:
    result = gate(matrix, local_assets(tmp_path / "art", matrix), build_number=42,
                  commit=COMMIT, allow_missing=frozenset(CI_ONLY))
    manifest = release_manifest(result, project="ember", tag="b42", build_number=42,
                                commit=COMMIT, commit_epoch=0, base_url="https://x/b42")
    assemble(out, assets=result.assets, manifest=manifest, notes="# notes\n", sbom="{}\n",
             signer=signer or FakeSigner(), index=matrix_index(manifest, matrix),
             installer=INSTALLER)
    return manifest


def test_assemble_writes_a_complete_checked_release(tmp_path: Path, matrix: Matrix) -> None:
    out = tmp_path / "release"
    manifest = _assemble(tmp_path, matrix, out)
    names = {p.name for p in out.iterdir()}
    assert names == set(RELEASE_FILES) | {a.record.name for a in manifest.assets}
    listed = verify_sums(out)
    assert set(listed) == names - {SUMS_NAME, SIGNATURE_NAME}
    loaded, files = read_release(out)
    assert loaded == manifest and set(files) == names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_assemble_failure_leaves_the_previous_release(tmp_path: Path, matrix: Matrix) -> None:
    out = tmp_path / "release"
    _assemble(tmp_path, matrix, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ReleaseError, match="signing failed"):
        _assemble(tmp_path, matrix, out, FakeSigner(fail=True))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_assemble_refuses_to_replace_an_unrelated_directory(tmp_path: Path,
                                                            matrix: Matrix) -> None:
    out = tmp_path / "home"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(ReleaseError, match="not a kiln release directory"):
        _assemble(tmp_path, matrix, out)
    assert (out / "precious.txt").read_text() == "keep me"


def test_read_release_refuses_changed_or_extra_files(tmp_path: Path, matrix: Matrix) -> None:
    out = tmp_path / "release"
    _assemble(tmp_path, matrix, out)
    (out / "stray.txt").write_text("x")
    with pytest.raises(ReleaseError, match=r"files not in SHA256SUMS: stray\.txt"):
        read_release(out)
    (out / "stray.txt").unlink()
    (out / MANIFEST_NAME).write_text("{}")
    with pytest.raises(IntegrityError, match=r"manifest\.json: sha256 differs"):
        read_release(out)
