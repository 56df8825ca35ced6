"""``kiln reproduce`` without building: where a release is, capped downloads, the selection,
the toolchain check, the statement and the exit the outcome maps to (the rebuild itself is in
tests/integration/test_reproduce.py)."""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.cli import main
from kiln.errors import BuildError, ConfigError, IntegrityError, SelectionError
from kiln.matrix import load_matrix
from kiln.package.records import AssetRecord, Tool, Verification
from kiln.release.manifest import ReleaseAsset, ReleaseManifest, format_sums
from kiln.release.reproduce import (
    DIFFERENT,
    IDENTICAL,
    NOT_REBUILT,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    AssetCheck,
    ReproduceResult,
    check_toolchains,
    default_report_dir,
    download_release,
    fetch_capped,
    outcome_error,
    release_location,
    reproduced_statement,
    select_assets,
)

COMMIT = "a" * 40


MATRIX = load_matrix(Path(__file__).resolve().parents[2] / "matrix")


def record(entry_id: str, *, tools: tuple[Tool, ...] = (Tool(name="zig", version="0.17.1"),),
           size: int = 10, sha: str = "0" * 64, kind: str = "archive") -> AssetRecord:
    entry = MATRIX.get(entry_id)
    name = (f"ember-b7-bin-{entry_id}.{entry.archive}" if kind == "archive"
            else f"ember-0.0.7-py3-none-{entry_id.replace('-', '_')}.whl")
    return AssetRecord(**vars(entry.requirements()), name=name, kind=kind, entry_id=entry_id,
                       build_number=7, commit=COMMIT, toolchain=tools, size=size, sha256=sha,
                       unpacked_size=size,
                       verification=Verification(method=entry.verify, ok=True, detail="ok"))


def manifest(*records: AssetRecord) -> ReleaseManifest:
    return ReleaseManifest(project="ember", tag="b7", build_number=7, commit=COMMIT,
                           date="2026-01-01T00:00:00Z", base_url="https://example.invalid/b7",
                           assets=tuple(ReleaseAsset(record=r, url=f"u/{r.name}")
                                        for r in records), missing=(), disabled=())


# --------------------------------------------------------------------------------------------
# where the release is


def test_a_path_or_file_url_is_a_directory_and_http_is_downloaded(tmp_path: Path) -> None:
    assert release_location(str(tmp_path)) == ("dir", tmp_path)
    assert release_location("release") == ("dir", Path("release"))
    assert release_location(f"file://{tmp_path}") == ("dir", tmp_path)
    assert release_location("file://localhost/srv/b7") == ("dir", Path("/srv/b7"))
    assert release_location("file:///srv/a%20b") == ("dir", Path("/srv/a b"))
    assert release_location("https://example.invalid/b7") == ("url",
                                                              "https://example.invalid/b7/")
    assert release_location("http://example.invalid/x/b7/") == ("url",
                                                                "http://example.invalid/x/b7/")


@pytest.mark.parametrize("bad", ["ftp://example.invalid/b7", "file://host/srv/b7", "https://",
                                 "s3://bucket/b7"])
def test_other_urls_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="--release"):
        release_location(bad)


def test_the_report_goes_beside_a_directory_or_into_the_current_one(tmp_path: Path) -> None:
    m = manifest(record("ubuntu-x64"))
    assert default_report_dir(str(tmp_path / "rel"), m, cwd=Path("/x")) == (
        tmp_path / "rel-reproduce")
    assert default_report_dir(f"file://{tmp_path}/rel/", m, cwd=Path("/x")) == (
        tmp_path / "rel-reproduce")
    assert default_report_dir("https://example.invalid/b7", m, cwd=tmp_path) == (
        tmp_path / "ember-b7-reproduce")


def opener_for(files: dict[str, bytes], *, lie: bool = False):  # type: ignore[no-untyped-def]
    """A fake HTTP server: ``files`` by URL; ``lie`` announces no length."""
    seen: list[str] = []

    @contextlib.contextmanager
    def opener(url: str) -> Iterator[tuple[int | None, Iterator[bytes]]]:
        seen.append(url)
        if url not in files:
            raise ConfigError(f"cannot download {url}: HTTP 404")
        data = files[url]
        yield (None if lie else len(data)), iter([data[i:i + 4] for i in
                                                  range(0, len(data), 4)])

    opener.seen = seen  # type: ignore[attr-defined]
    return opener


@pytest.mark.parametrize("lie", [False, True])
def test_a_download_over_its_cap_is_refused_and_removed(tmp_path: Path, lie: bool) -> None:
    url = "https://example.invalid/b7/big"
    dest = tmp_path / "big"
    with pytest.raises(IntegrityError, match="larger than the 8 bytes"):
        fetch_capped(url, dest, 8, opener=opener_for({url: b"x" * 9}, lie=lie))
    assert not dest.exists()
    fetch_capped(url, dest, 9, opener=opener_for({url: b"x" * 9}, lie=lie))
    assert dest.read_bytes() == b"x" * 9


def test_download_release_caps_an_asset_at_its_signed_size(tmp_path: Path) -> None:
    import json

    base = "https://example.invalid/b7/"
    asset = b"archive!"
    r = record("ubuntu-x64", size=len(asset), sha=hashlib.sha256(asset).hexdigest())
    m = manifest(r)
    files = {"manifest.json": m.text().encode(), r.name: asset, "minisign.pub": b"pub\n"}
    sums = format_sums({k: hashlib.sha256(v).hexdigest() for k, v in files.items()})
    served = {base + k: v for k, v in files.items()}
    served[base + "SHA256SUMS"] = sums.encode()
    served[base + "SHA256SUMS.minisig"] = b"sig\n"
    opener = opener_for(served)
    got = download_release(base, tmp_path / "dl", opener=opener)
    assert sorted(p.name for p in got.iterdir()) == sorted([*files, "SHA256SUMS",
                                                            "SHA256SUMS.minisig"])
    assert opener.seen[0] == base + "SHA256SUMS"  # type: ignore[attr-defined]
    # The server now holds a longer archive than the manifest signs: refused while reading.
    served[base + r.name] = asset + b"+more"
    with pytest.raises(IntegrityError, match=f"larger than the {len(asset)} bytes"):
        download_release(base, tmp_path / "dl2", opener=opener_for(served))
    served[base + r.name] = asset
    served[base + "SHA256SUMS"] = b"not a sums file\n"
    with pytest.raises(IntegrityError, match="not a sha256sum line"):
        download_release(base, tmp_path / "dl3", opener=opener_for(served))
    assert json.loads(files["manifest.json"])["tag"] == "b7"


# --------------------------------------------------------------------------------------------
# selection and toolchains


def test_only_picks_entries_by_id_or_glob() -> None:
    m = manifest(record("ubuntu-x64"), record("ubuntu-arm64"), record("macos-arm64"))
    assert select_assets(m, []) == m.assets
    assert [a.record.entry_id for a in select_assets(m, ["macos-arm64"])] == ["macos-arm64"]
    assert [a.record.entry_id for a in select_assets(m, ["ubuntu-*"])] == ["ubuntu-x64",
                                                                         "ubuntu-arm64"]
    with pytest.raises(SelectionError, match="--only win-cpu-x64") as exc:
        select_assets(m, ["ubuntu-x64", "win-cpu-x64"])
    assert "macos-arm64, ubuntu-arm64, ubuntu-x64" in (exc.value.hint or "")


def test_a_toolchain_mismatch_is_named() -> None:
    zig = (Tool(name="zig", version="0.17.1"),)
    records = [record("ubuntu-x64", tools=zig),
               record("macos-arm64", tools=(Tool(name="zig", version="0.16.0"),)),
               record("ubuntu-arm64", tools=zig)]
    expected = {"ubuntu-x64": zig, "macos-arm64": zig,
                "ubuntu-arm64": (*zig, Tool(name="glslc", version="2023.2"))}
    problems = check_toolchains(records, expected)
    assert problems == [
        "macos-arm64 (ember-b7-bin-macos-arm64.tar.gz): zig 0.16.0 in the release, 0.17.1 "
        "here",
        "ubuntu-arm64 (ember-b7-bin-ubuntu-arm64.tar.gz): glslc (not used) in the release, "
        "2023.2 here"]
    # entries this kiln does not rebuild (no expectation) are not compared
    assert check_toolchains(records, {"ubuntu-x64": zig}) == []


# --------------------------------------------------------------------------------------------
# the outcome


def checks() -> list[AssetCheck]:
    return [AssetCheck(entry_id="ubuntu-x64", name="b.tar.gz", status=IDENTICAL,
                       released_sha256="1" * 64, rebuilt_sha256="1" * 64),
            AssetCheck(entry_id="ubuntu-x64", name="a.whl", status=IDENTICAL,
                       released_sha256="2" * 64, rebuilt_sha256="2" * 64),
            AssetCheck(entry_id="win-cuda-12.4-x64", name="c.zip", status=NOT_REBUILT,
                       released_sha256="3" * 64, why="ci-only")]


def test_the_statement_is_in_toto_v1_with_the_identical_assets() -> None:
    m = manifest(record("ubuntu-x64"))
    body = reproduced_statement(m, checks(), epoch=1767225600,
                                toolchains={"ubuntu-x64": (Tool(name="zig",
                                                                version="0.17.1"),)},
                                date="2026-02-03T04:05:06Z")
    assert body["_type"] == STATEMENT_TYPE == "https://in-toto.io/Statement/v1"
    assert body["predicateType"] == PREDICATE_TYPE
    assert body["subject"] == [{"name": "a.whl", "digest": {"sha256": "2" * 64}},
                               {"name": "b.tar.gz", "digest": {"sha256": "1" * 64}}]
    pred = body["predicate"]
    assert (pred["tag"], pred["commit"], pred["source_date_epoch"]) == ("b7", COMMIT,
                                                                       1767225600)
    assert pred["reproduced_at"] == "2026-02-03T04:05:06Z"
    assert pred["rebuilder"]["toolchains"] == {"ubuntu-x64": [{"name": "zig",
                                                               "version": "0.17.1"}]}
    assert pred["not_rebuilt"] == [{"name": "c.zip", "entry_id": "win-cuda-12.4-x64",
                                    "why": "ci-only"}]


def test_a_difference_exits_12_and_a_failed_build_7(tmp_path: Path) -> None:
    m = manifest(record("ubuntu-x64"))
    ok = ReproduceResult(manifest=m, checks=tuple(checks()), report_dir=tmp_path)
    assert outcome_error(ok) is None
    nothing = ReproduceResult(manifest=m, checks=tuple(checks())[2:], report_dir=tmp_path)
    error = outcome_error(nothing)
    assert isinstance(error, BuildError) and "nothing was reproduced" in error.message
    diff = AssetCheck(entry_id="ubuntu-x64", name="d.tar.gz", status=DIFFERENT,
                      released_sha256="4" * 64, rebuilt_sha256="5" * 64,
                      report=tmp_path / "diffoscope" / "d.tar.gz.txt")
    bad = ReproduceResult(manifest=m, checks=(*checks(), diff), report_dir=tmp_path,
                          build_failed=("macos-arm64",))
    error = outcome_error(bad)
    assert isinstance(error, IntegrityError) and error.exit_code == 12
    assert "d.tar.gz" in error.message and str(tmp_path / "diffoscope") in (error.hint or "")
    failed = ReproduceResult(manifest=m, checks=tuple(checks()), report_dir=tmp_path,
                             build_failed=("macos-arm64",))
    error = outcome_error(failed)
    assert isinstance(error, BuildError) and error.exit_code == 7


# --------------------------------------------------------------------------------------------
# the command line


def test_release_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["reproduce"], env={}, stdout=io.StringIO())
    assert exc.value.code == 2
    assert "--release" in capsys.readouterr().err


def test_help_names_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["reproduce", "--help"], env={}, stdout=io.StringIO())
    out = capsys.readouterr().out
    for option in ("--release", "--only", "--report-dir", "--signing-key", "--public-key"):
        assert option in out


def test_the_command_passes_its_arguments_on(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    import kiln.release.reproduce as stage

    seen: dict[str, object] = {}
    m = manifest(record("ubuntu-x64"))

    def fake(release: str, **kwargs: object) -> ReproduceResult:
        seen["release"] = release
        seen.update(kwargs)
        return ReproduceResult(manifest=m, checks=tuple(checks()), report_dir=tmp_path,
                               statement=tmp_path / "reproduced.intoto.json", signed=False)

    monkeypatch.setattr(stage, "reproduce", fake)
    out = io.StringIO()
    code = main(["reproduce", "--release", "https://example.invalid/b7", "--only",
                 "ubuntu-*", "macos-arm64", "--report-dir", str(tmp_path), "--signing-key",
                 "k.key", "--parallel", "2"], env={}, stdout=out, cwd=tmp_path)
    assert code == 0
    assert seen["release"] == "https://example.invalid/b7"
    assert seen["only"] == ["ubuntu-*", "macos-arm64"]
    assert seen["report_dir"] == tmp_path and seen["signing_key"] == "k.key"
    assert seen["parallel"] == 2 and seen["public_key"] is None
    text = out.getvalue()
    assert "UNSIGNED" in text and "2 of 3 identical" in text
    assert "not rebuilt (ci-only)" in text

    diff = AssetCheck(entry_id="ubuntu-x64", name="d.tar.gz", status=DIFFERENT,
                      released_sha256="4" * 64, rebuilt_sha256="5" * 64,
                      report=tmp_path / "d.tar.gz.txt")
    monkeypatch.setattr(stage, "reproduce", lambda release, **kw: ReproduceResult(
        manifest=m, checks=(diff,), report_dir=tmp_path))
    out = io.StringIO()
    code = main(["reproduce", "--release", "rel"], env={}, stdout=out, cwd=tmp_path)
    assert code == 12
    assert f"diffoscope report {tmp_path / 'd.tar.gz.txt'}" in out.getvalue()
