"""kiln/release/provenance.py and kiln/release/check.py (``kiln verify``) without programs: the
statement's fields, its bytes, its subjects against SHA256SUMS, and the checks failing with
the documented exit code on a tampered release. Signatures are made with py-minisign, so no
``minisign`` program is needed."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import minisign  # type: ignore[import-untyped]
import pytest

from kiln.cli import main
from kiln.errors import ConfigError, IntegrityError
from kiln.matrix import Matrix, load_matrix
from kiln.package.records import Tool, Verification, record_for
from kiln.release.assemble import LocalAsset, gate, release_manifest
from kiln.release.check import (
    CHECKS,
    Check,
    CheckOutcome,
    ReleaseUnderCheck,
    VerifyReport,
    public_key_from,
    verify_release,
)
from kiln.release.index import matrix_index
from kiln.release.manifest import (
    INDEX_NAME,
    INDEX_SIGNATURE_NAME,
    MANIFEST_NAME,
    NOTES_NAME,
    PROVENANCE_NAME,
    PROVENANCE_SIGNATURE_NAME,
    PUBLIC_KEY_NAME,
    RELEASE_FILES,
    SIGNATURE_NAME,
    SUMS_NAME,
    ReleaseManifest,
    format_sums,
    parse_sums,
    release_comment,
)
from kiln.release.provenance import (
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    matrix_digest,
    parse_provenance,
    provenance_comment,
    release_provenance,
)

REPO = Path(__file__).resolve().parents[2]
COMMIT = "c" * 40
REPO_URL = "https://github.com/ember-ml/ember"
ENTRIES = ("ubuntu-x64", "macos-arm64", "win-cpu-x64")


@pytest.fixture(scope="module")
def matrix() -> Matrix:
    return load_matrix(REPO / "matrix")


def _archive(path: Path, payload: bytes) -> None:
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(zipfile.ZipInfo("ember/README", date_time=(1980, 1, 1, 0, 0, 0)),
                        payload)
        return
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("ember/README")
        info.size, info.mtime = len(payload), 0
        tar.addfile(info, io.BytesIO(payload))
    path.write_bytes(gzip.compress(raw.getvalue(), mtime=0))


def _manifest(tmp: Path, matrix: Matrix) -> tuple[ReleaseManifest, list[LocalAsset]]:
    assets = []
    tmp.mkdir(parents=True, exist_ok=True)
    for entry_id in ENTRIES:
        entry = matrix.get(entry_id)
        path = tmp / f"ember-b42-bin-{entry_id}.{entry.archive}"
        _archive(path, f"ember {entry_id}\n".encode())
        record = record_for(entry, path, kind="archive", build_number=42, commit=COMMIT,
                            toolchain=(Tool(name="zig", version="0.17.1"),),
                            verification=Verification(method=entry.verify, ok=True,
                                                      detail="synthetic"))
        assets.append(LocalAsset(record=record, path=path))
    others = [e.id for e in matrix.enabled if e.id not in ENTRIES]
    result = gate(matrix, assets, build_number=42, commit=COMMIT, allow_missing=others)
    manifest = release_manifest(result, project="ember", tag="b42", build_number=42,
                                commit=COMMIT, commit_epoch=1_767_323_045,
                                base_url="https://x.invalid/b42")
    return manifest, list(result.assets)


def _provenance(manifest: ReleaseManifest) -> str:
    return release_provenance(manifest, repo_url=REPO_URL, matrix_dir=REPO / "matrix",
                              recipes=REPO / "recipes", epoch=1_767_323_045)


class Key:
    """A minisign key pair held in memory (py-minisign)."""

    def __init__(self) -> None:
        pair = minisign.KeyPair.generate()
        self.secret, self.public = pair.secret_key, pair.public_key
        self.line = self.public.to_base64().decode()

    def pub_file(self) -> str:
        return f"untrusted comment: minisign public key\n{self.line}\n"

    def sign(self, path: Path, signature: Path, comment: str) -> None:
        sig = self.secret.sign(path.read_bytes(), trusted_comment=comment)
        signature.write_bytes(bytes(sig))


def make_release(root: Path, matrix: Matrix, key: Key | None = None,
                 provenance_key: Key | None = None) -> tuple[Path, Key]:
    """A complete, signed release directory written file by file (as ``assemble`` does)."""
    key = key or Key()
    manifest, assets = _manifest(root / "art", matrix)
    out = root / "release"
    out.mkdir()
    for a in assets:
        (out / a.record.name).write_bytes(a.path.read_bytes())
    index = matrix_index(manifest, matrix, expiry_days=36500)
    texts = {MANIFEST_NAME: manifest.text(), PUBLIC_KEY_NAME: key.pub_file(),
             PROVENANCE_NAME: _provenance(manifest), INDEX_NAME: index.text()}
    for name in RELEASE_FILES:
        texts.setdefault(name, f"{name}\n")
    for name in (SUMS_NAME, SIGNATURE_NAME, INDEX_SIGNATURE_NAME):
        texts.pop(name)
    for name, text in texts.items():
        (out / name).write_text(text, encoding="utf-8")
    key.sign(out / INDEX_NAME, out / INDEX_SIGNATURE_NAME, index.comment())
    (provenance_key or key).sign(out / PROVENANCE_NAME, out / PROVENANCE_SIGNATURE_NAME,
                                 provenance_comment(manifest))
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()}
    (out / SUMS_NAME).write_text(format_sums(digests), encoding="utf-8")
    key.sign(out / SUMS_NAME, out / SIGNATURE_NAME, release_comment(manifest))
    return out, key


def resign_sums(out: Path, key: Key) -> None:
    """Recompute SHA256SUMS after a change and sign it again (an attacker who has the key, or
    a release made wrongly): the checks past the signature must still catch it."""
    comment = next(ln for ln in (out / SIGNATURE_NAME).read_text().splitlines()
                   if ln.startswith("trusted comment: "))[len("trusted comment: "):]
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()
               if p.name not in (SUMS_NAME, SIGNATURE_NAME)}
    (out / SUMS_NAME).write_text(format_sums(digests), encoding="utf-8")
    key.sign(out / SUMS_NAME, out / SIGNATURE_NAME, comment)


def outcome(report: VerifyReport, name: str) -> CheckOutcome:
    return next(o for o in report.outcomes if o.name == name)


def kiln_verify(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["verify", *args], env={"PATH": "/usr/bin:/bin"}, stdout=out, cwd=REPO)
    return code, out.getvalue()


# --------------------------------------------------------------------------------------------
# the statement


def test_statement_fields(tmp_path: Path, matrix: Matrix) -> None:
    manifest, assets = _manifest(tmp_path, matrix)
    doc: dict[str, Any] = json.loads(_provenance(manifest))
    assert doc["_type"] == STATEMENT_TYPE == "https://in-toto.io/Statement/v1"
    assert doc["predicateType"] == PREDICATE_TYPE == "https://slsa.dev/provenance/v1"
    assert doc["subject"] == [{"name": a.record.name, "digest": {"sha256": a.record.sha256}}
                              for a in sorted(assets, key=lambda a: a.record.name)]
    build = doc["predicate"]["buildDefinition"]
    assert build["buildType"].startswith(REPO_URL + "/") and build["buildType"].endswith("-v1")
    ext = build["externalParameters"]
    assert ext["tag"] == "b42" and ext["buildNumber"] == 42 and ext["project"] == "ember"
    assert ext["source"] == {"repository": REPO_URL, "commit": COMMIT}
    assert ext["matrix"]["digest"] == {"sha256": matrix_digest(REPO / "matrix")}
    internal = build["internalParameters"]
    assert internal["SOURCE_DATE_EPOCH"] == "1767323045"
    assert sorted(internal["recipes"]) == sorted(ENTRIES)
    assert all(len(v["sha256"]) == 64 for v in internal["recipes"].values())
    deps = build["resolvedDependencies"]
    assert deps[0] == {"uri": f"git+{REPO_URL}@refs/tags/b42", "digest": {"gitCommit": COMMIT}}
    assert deps[1]["name"] == "zig" and deps[1]["annotations"]["version"] == "0.17.1"
    assert deps[1]["annotations"]["usedBy"] == sorted(ENTRIES)
    run = doc["predicate"]["runDetails"]
    assert run["builder"]["id"].startswith(REPO_URL)
    assert run["metadata"] == {"startedOn": manifest.date, "finishedOn": manifest.date}
    assert str(tmp_path) not in json.dumps(doc)


def test_matrix_digest_covers_every_yaml_file_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("b: 1\n")
    (tmp_path / "a.yaml").write_text("a: 1\n")
    (tmp_path / "schema.json").write_text("{}")
    first = matrix_digest(tmp_path)
    (tmp_path / "schema.json").write_text("{ }")
    assert matrix_digest(tmp_path) == first  # only the YAML files
    (tmp_path / "a.yaml").write_text("a: 2\n")
    assert matrix_digest(tmp_path) != first


def test_the_statement_is_deterministic(tmp_path: Path, matrix: Matrix) -> None:
    one = _provenance(_manifest(tmp_path / "one", matrix)[0])
    two = _provenance(_manifest(tmp_path / "two", matrix)[0])
    assert one == two
    assert one.endswith("}\n") and json.dumps(json.loads(one), indent=2, sort_keys=True) + "\n" \
        == one


def test_subjects_equal_the_assets_in_sha256sums(tmp_path: Path, matrix: Matrix) -> None:
    out, _ = make_release(tmp_path, matrix)
    sums = parse_sums((out / SUMS_NAME).read_text(), source="SHA256SUMS")
    prov = parse_provenance((out / PROVENANCE_NAME).read_text(), source="p")
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert dict(prov.subjects) == {a["name"]: sums[a["name"]] for a in manifest["assets"]}
    assert PROVENANCE_NAME in sums and PROVENANCE_SIGNATURE_NAME in sums
    assert (prov.tag, prov.commit) == ("b42", COMMIT)


# --------------------------------------------------------------------------------------------
# kiln verify


def test_verify_passes_on_a_good_release_with_a_pinned_key(tmp_path: Path,
                                                           matrix: Matrix) -> None:
    out, key = make_release(tmp_path, matrix)
    report = verify_release(out, key=key.line)
    assert report.ok and report.error is None and report.pinned and not report.warnings
    assert [o.name for o in report.outcomes] == [c.name for c in CHECKS]
    assert report.tag == "b42" and report.commit == COMMIT
    code, text = kiln_verify(str(out), "--key", key.line)
    assert code == 0, text
    assert "6 of 6 checks passed" in text and "provenance" in text


def test_verify_warns_when_only_the_release_key_was_used(
        tmp_path: Path, matrix: Matrix, capsys: pytest.CaptureFixture[str]) -> None:
    out, key = make_release(tmp_path, matrix)
    report = verify_release(out)
    assert report.ok and not report.pinned
    assert any("proves" in w and "--key" in w for w in report.warnings)
    code, text = kiln_verify(str(out), "--json")
    assert code == 0
    data = json.loads(text)
    assert data["ok"] is True and data["key"] == "release" and data["warnings"]
    assert "warning:" in capsys.readouterr().err
    (tmp_path / "project.pub").write_text(key.pub_file())
    assert kiln_verify(str(out), "--key", str(tmp_path / "project.pub"))[0] == 0


def test_a_tampered_subject_fails_with_an_integrity_error(
        tmp_path: Path, matrix: Matrix, capsys: pytest.CaptureFixture[str]) -> None:
    out, key = make_release(tmp_path, matrix)
    doc = json.loads((out / PROVENANCE_NAME).read_text())
    doc["subject"][0]["digest"]["sha256"] = "0" * 64
    (out / PROVENANCE_NAME).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    # The provenance's signature no longer verifies, nor do the checksums.
    report = verify_release(out, key=key.line)
    failed = {o.name for o in report.outcomes if not o.ok}
    assert failed == {"checksums", "provenance"}
    assert isinstance(report.error, IntegrityError)
    code, _ = kiln_verify(str(out), "--key", key.line)
    err = capsys.readouterr().err
    assert code == 12 and "provenance.intoto.json" in err
    # Signed again with the key and listed again: the subjects still differ from the assets.
    key.sign(out / PROVENANCE_NAME, out / PROVENANCE_SIGNATURE_NAME,
             next(ln for ln in (out / PROVENANCE_SIGNATURE_NAME).read_text().splitlines()
                  if ln.startswith("trusted comment: "))[len("trusted comment: "):])
    resign_sums(out, key)
    report = verify_release(out, key=key.line)
    assert [o.name for o in report.outcomes if not o.ok] == ["provenance"]
    assert "subjects differ from the assets" in outcome(report, "provenance").detail
    error = outcome(report, "provenance").error
    assert error is not None and error.exit_code == 12


def test_a_missing_provenance_signature_fails(tmp_path: Path, matrix: Matrix,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out, key = make_release(tmp_path, matrix)
    (out / PROVENANCE_SIGNATURE_NAME).unlink()
    code, text = kiln_verify(str(out), "--key", key.line)
    err = capsys.readouterr().err
    assert code == 12
    assert "FAILED" in text and "provenance.intoto.json.minisig" in err
    resign_sums(out, key)  # not even listed any more
    report = verify_release(out, key=key.line)
    assert [o.name for o in report.outcomes if not o.ok] == ["provenance"]
    assert "is not listed in SHA256SUMS" in outcome(report, "provenance").detail


def test_a_provenance_signed_by_another_key_fails(tmp_path: Path, matrix: Matrix) -> None:
    out, key = make_release(tmp_path, matrix, provenance_key=Key())
    report = verify_release(out, key=key.line)
    assert [o.name for o in report.outcomes if not o.ok] == ["provenance"]
    assert "does not verify provenance.intoto.json" in outcome(report, "provenance").detail


def test_another_pinned_key_fails_the_signatures(tmp_path: Path, matrix: Matrix) -> None:
    out, _ = make_release(tmp_path, matrix)
    other = Key()
    report = verify_release(out, key=other.line)
    assert {o.name for o in report.outcomes if not o.ok} == {"signature", "provenance", "index"}
    assert report.error is not None and report.error.exit_code == 12


def test_a_changed_archive_fails_the_checksums(tmp_path: Path, matrix: Matrix) -> None:
    out, key = make_release(tmp_path, matrix)
    archive = next(out.glob("*.tar.gz"))
    data = bytearray(archive.read_bytes())
    data[-1] ^= 1
    archive.write_bytes(bytes(data))
    report = verify_release(out, key=key.line)
    assert [o.name for o in report.outcomes if not o.ok] == ["checksums"]
    assert f"{archive.name}: sha256 differs" in report.outcomes[1].detail
    # Listed again with its new digest: the manifest and the provenance disagree.
    resign_sums(out, key)
    report = verify_release(out, key=key.line)
    assert {o.name for o in report.outcomes if not o.ok} == {"manifest", "provenance"}


def test_the_checks_are_an_extensible_list(tmp_path: Path, matrix: Matrix) -> None:
    out, key = make_release(tmp_path, matrix)

    def check_notes(release: ReleaseUnderCheck) -> str:
        if NOTES_NAME not in release.sums():
            raise IntegrityError("no notes")
        return f"{release.manifest().tag} has notes"

    report = verify_release(out, key=key.line,
                            checks=(*CHECKS, Check(name="notes", run=check_notes, what="x")))
    assert report.ok and report.outcomes[-1].detail == "b42 has notes"


def test_a_bad_key_option_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        public_key_from(str(tmp_path / "nope.pub"))
    (tmp_path / "bad.pub").write_text("untrusted comment: x\nnot a key\n")
    with pytest.raises(ConfigError):
        public_key_from(str(tmp_path / "bad.pub"))
