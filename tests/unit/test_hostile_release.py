"""Hostile input to kiln's release reader: strict SHA256SUMS lines, tags, manifest fields that
become paths and URLs, the signed identity of a release, and a scan of kiln/ for validation
patterns anchored with ``$`` (which matches before a trailing newline)."""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from ember_project import INSTALLER
from test_release import CI_ONLY, COMMIT, FakeSigner, local_assets

from kiln.errors import ConfigError, IntegrityError, ReleaseError
from kiln.matrix import Matrix, load_matrix
from kiln.release.assemble import assemble, gate, release_manifest
from kiln.release.index import matrix_index
from kiln.release.manifest import (
    SIGNATURE_NAME,
    TAG_RE,
    ReleaseManifest,
    check_comment,
    embedded_tag,
    is_safe_name,
    parse_sums,
    parse_tag,
    read_release,
    signed_comment,
)

REPO = Path(__file__).resolve().parents[2]
H1, H2 = "ab" * 32, "cd" * 32


@pytest.fixture(scope="module")
def matrix() -> Matrix:
    return load_matrix(REPO / "matrix")


# --------------------------------------------------------------------------------------------
# SHA256SUMS (the contract's rules; the installers apply the same)


def test_both_sha256sum_modes_are_read() -> None:
    assert parse_sums(f"{H1}  a.tar.gz\n{H2} *b.zip\n", source="S") == {
        "a.tar.gz": H1, "b.zip": H2}
    assert parse_sums(f"{H1}  a.tar.gz", source="S") == {"a.tar.gz": H1}  # no final newline


@pytest.mark.parametrize(("text", "needle"), [
    ("", "empty"),
    (f"{H1}  a\n{H2}  a\n", "S:2: 'a' is listed twice"),
    (f"{H1}  a\n{H1}  a\n", "S:2: 'a' is listed twice"),  # the same digest too
    (f"{H1}  a\n{H1} *a\n", "S:2: 'a' is listed twice"),
    (f"{H1}  ../x\n", "starts with '.'"),
    (f"{H1}  lib/x\n", "contains '/'"),
    (f"{H1}  lib\\x\n", "contains '\\\\'"),
    (f"{H1}  a\x00b\n", "NUL"),
    (f"{H1}  a\x1bb\n", "control character"),
    (f"{H1}  a\x7f\n", "control character"),
    (f"{H1}  a\x85\n", "control character"),
    (f"{H1}  a\r\n", "control character"),  # a CRLF file
    (f"{H1}  .\n", "not a file name"),
    (f"{H1}  ..\n", "not a file name"),
    (f"{H1}  .hidden\n", "starts with '.'"),
    (f"{H1}  \n", "not a file name"),
    (f"{H1.upper()}  a\n", "S:1: not a sha256sum line"),
    (f"{H1[:63]}  a\n", "S:1: not a sha256sum line"),
    (f"{H1} a\n", "S:1: not a sha256sum line"),
    (f"{H1}\ta\n", "S:1: not a sha256sum line"),
    (f"{H1}  a\n\n", "S:2: not a sha256sum line"),
    (f" {H1}  a\n", "S:1: not a sha256sum line"),
])
def test_unsafe_sha256sums_are_refused_naming_the_line(text: str, needle: str) -> None:
    with pytest.raises(IntegrityError) as info:
        parse_sums(text, source="S")
    assert needle in info.value.message
    assert info.value.exit_code == 12


# --------------------------------------------------------------------------------------------
# tags and names


@pytest.mark.parametrize("tag", ["b12\n", "b12 ", " b12", "b", "B12", "b-1", "b1234567890",
                                 "b12/..", "./../escaped", "b١٢"])
def test_not_a_tag(tag: str) -> None:
    assert TAG_RE.fullmatch(tag) is None
    with pytest.raises(ConfigError, match="is not of the form b<N>"):
        parse_tag(tag)


def test_tags() -> None:
    assert parse_tag("b0") == 0 and parse_tag("b123456789") == 123456789


@pytest.mark.parametrize(("name", "ok"), [
    ("ember-b42-bin-ubuntu-x64.tar.gz", True), ("ember-0.0.42+cu124-py3-none-any.whl", True),
    ("SHA256SUMS", True), (".hidden", False), ("a..b", False), ("..", False), ("a/b", False),
    ("a b", False), ("a\n", False), ("-a", False), ("", False), ("é", False)])
def test_safe_names(name: str, ok: bool) -> None:
    assert is_safe_name(name) is ok


def test_embedded_tags() -> None:
    assert embedded_tag("ember-b42-bin-ubuntu-x64.tar.gz", "archive") == "b42"
    assert embedded_tag("ember-0.0.42+cu124-py3-none-manylinux_2_17_x86_64.whl",
                        "wheel") == "b42"
    assert embedded_tag("ember-0.0.42-py3-none-any.whl", "wheel") == "b42"
    assert embedded_tag("ember-bin-ubuntu-x64.tar.gz", "archive") is None
    assert embedded_tag("ember-b42.tar.gz", "archive") is None


# --------------------------------------------------------------------------------------------
# the manifest


def manifest_json(tmp_path: Path, matrix: Matrix) -> dict[str, Any]:
    result = gate(matrix, local_assets(tmp_path, matrix), build_number=42, commit=COMMIT,
                  allow_missing=frozenset(CI_ONLY))
    m = release_manifest(result, project="ember", tag="b42", build_number=42, commit=COMMIT,
                         commit_epoch=0, base_url="https://x/b42")
    data = json.loads(m.text())
    assert isinstance(data, dict)
    return data


def _set(data: dict[str, Any], path: str, value: object) -> None:
    node: Any = data
    *parents, last = path.split(".")
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    node[int(last) if last.isdigit() else last] = value


@pytest.mark.parametrize(("field", "value", "named"), [
    ("tag", "./../escaped", "field 'tag' is './../escaped'"),
    ("tag", "../../x", "field 'tag' is '../../x'"),
    ("tag", "b42\n", "field 'tag' is 'b42\\n'"),
    ("tag", "b43", "field 'build_number' is 42"),
    ("project", "ember x", "field 'project'"),
    ("commit", "HEAD", "field 'commit' is 'HEAD'"),
    ("date", "2026-01-01T00:00:00Z date 2030", "field 'date'"),
    ("assets.0.name", "../ember-b42-bin-x.tar.gz", "field 'assets[0].name' is '../ember"),
    ("assets.0.name", "ember-b42-bin-x\n.tar.gz", "field 'assets[0].name'"),
    ("assets.0.name", "SHA256SUMS", "reserved"),
    ("assets.0.name", "ember-b41-bin-ubuntu-x64.tar.gz", "does not carry the release's tag b42"),
    ("assets.0.build_number", 41, "field 'assets[0].build_number' is 41"),
    ("assets.0.entry_id", "../x", "field 'assets[0].entry_id' is '../x'"),
])
def test_manifest_fields_are_checked_when_loaded(tmp_path: Path, matrix: Matrix, field: str,
                                                 value: object, named: str) -> None:
    data = manifest_json(tmp_path, matrix)
    ReleaseManifest.from_json(data, source="m")  # the unchanged manifest loads
    _set(data, field, value)
    with pytest.raises(ReleaseError) as info:
        ReleaseManifest.from_json(data, source="m")
    assert named in info.value.message, info.value.message
    assert info.value.exit_code == 9


def test_an_asset_listed_twice_is_refused(tmp_path: Path, matrix: Matrix) -> None:
    data = manifest_json(tmp_path, matrix)
    data["assets"].append(data["assets"][0])
    with pytest.raises(ReleaseError, match="listed twice"):
        ReleaseManifest.from_json(data, source="m")


# --------------------------------------------------------------------------------------------
# the signed identity


def assembled(tmp_path: Path, matrix: Matrix) -> tuple[Path, ReleaseManifest]:
    result = gate(matrix, local_assets(tmp_path / "art", matrix), build_number=42,
                  commit=COMMIT, allow_missing=frozenset(CI_ONLY))
    manifest = release_manifest(result, project="ember", tag="b42", build_number=42,
                                commit=COMMIT, commit_epoch=1_767_323_045,
                                base_url="https://x/b42")
    out = tmp_path / "release"
    assemble(out, assets=result.assets, manifest=manifest, notes="# notes\n", sbom="{}\n",
             signer=FakeSigner(), index=matrix_index(manifest, matrix), installer=INSTALLER)
    return out, manifest


def test_the_signature_names_project_tag_commit_and_date(tmp_path: Path,
                                                         matrix: Matrix) -> None:
    out, manifest = assembled(tmp_path, matrix)
    assert manifest.date == "2026-01-02T03:04:05Z"
    assert signed_comment(out / SIGNATURE_NAME) == (
        f"ember b42 commit {COMMIT} date 2026-01-02T03:04:05Z")
    assert read_release(out)[0] == manifest


def test_assemble_refuses_a_manifest_that_would_not_load(tmp_path: Path,
                                                         matrix: Matrix) -> None:
    result = gate(matrix, local_assets(tmp_path / "art", matrix), build_number=42,
                  commit=COMMIT, allow_missing=frozenset(CI_ONLY))
    manifest = release_manifest(result, project="ember", tag="b42\n", build_number=42,
                                commit=COMMIT, commit_epoch=0, base_url="https://x/b42")
    with pytest.raises(ReleaseError, match="field 'tag'"):
        assemble(tmp_path / "release", assets=result.assets, manifest=manifest, notes="",
                 sbom="{}\n", signer=FakeSigner(), index=matrix_index(manifest, matrix),
                 installer=INSTALLER)
    assert not (tmp_path / "release").exists()


@pytest.mark.parametrize("comment", [
    f"ember b43 commit {COMMIT} date 2026-01-02T03:04:05Z",
    f"ember b42 commit {'b' * 40} date 2026-01-02T03:04:05Z",
    f"other b42 commit {COMMIT} date 2026-01-02T03:04:05Z",
    f"ember b42 commit {COMMIT} date 2030-01-01T00:00:00Z",
    f"ember b42 commit {COMMIT} date",
    f"ember b42x commit {COMMIT}",
    f"ember  b42 commit {COMMIT}",
    "ember b42",
    "",
])
def test_a_signature_of_another_release_is_refused(tmp_path: Path, matrix: Matrix,
                                                   comment: str) -> None:
    out, manifest = assembled(tmp_path, matrix)
    with pytest.raises(ReleaseError, match="does not name this release"):
        check_comment(comment, manifest, source="sig")
    # The comment as a release directory carries it (kiln publish reads it from there).
    sig = out / SIGNATURE_NAME
    lines = sig.read_text().splitlines()
    sig.write_text("\n".join([f"trusted comment: {comment}", *lines[1:]]) + "\n")
    with pytest.raises(ReleaseError, match="does not name this release"):
        read_release(out)


def test_releases_signed_before_the_date_was_added_still_load(tmp_path: Path,
                                                             matrix: Matrix) -> None:
    _, manifest = assembled(tmp_path, matrix)
    check_comment(f"ember b42 commit {COMMIT}", manifest, source="sig")


def test_a_signature_file_without_one_trusted_comment_is_refused(tmp_path: Path) -> None:
    sig = tmp_path / "s.minisig"
    sig.write_text("untrusted comment: x\nAAAA\n")
    with pytest.raises(IntegrityError, match="found 0"):
        signed_comment(sig)
    sig.write_text("trusted comment: a\ntrusted comment: b\n")
    with pytest.raises(IntegrityError, match="found 2"):
        signed_comment(sig)
    sig.write_bytes(b"trusted comment: " + b"x" * 5000)
    with pytest.raises(IntegrityError, match="larger than"):
        signed_comment(sig)


# --------------------------------------------------------------------------------------------
# no validation pattern anchored with $ (it matches before a trailing newline)


def _literal(node: ast.expr) -> str | None:
    """The text of a string literal (implicitly concatenated parts joined), else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _multiline(call: ast.Call, flags_at: int) -> bool:
    """Whether the call passes re.M / re.MULTILINE (then $ is meant as a line end)."""
    args = [*call.args[flags_at:], *(k.value for k in call.keywords if k.arg == "flags")]
    return any(isinstance(n, ast.Attribute) and n.attr in ("M", "MULTILINE")
               for a in args for n in ast.walk(a))


def _ends_in_dollar(pattern: str) -> bool:
    # "$" at the end, not escaped ("\$" is a literal dollar sign).
    return pattern.endswith("$") and not pattern.endswith("\\$")


def compiled_names(source: str) -> set[str]:
    """Module-level names bound to ``re.compile`` of a literal ending in ``$`` (no re.M)."""
    return set(_compiled(ast.parse(source)))


def _compiled(tree: ast.Module) -> dict[str, int]:
    out: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            call = node.value
            if (isinstance(call.func, ast.Attribute) and call.func.attr == "compile"
                    and isinstance(call.func.value, ast.Name) and call.func.value.id == "re"
                    and call.args):
                pattern = _literal(call.args[0])
                if pattern is not None and _ends_in_dollar(pattern) and not _multiline(call, 1):
                    for target in node.targets:
                        if isinstance(target, ast.Name):
                            out[target.id] = node.lineno
    return out


def dollar_anchored(source: str, elsewhere: frozenset[str] = frozenset()
                    ) -> list[tuple[int, str]]:
    """(line, description) of each ``re.match``/``re.search`` call whose literal pattern ends
    in ``$``, and of each ``.match``/``.search`` call on a name bound to such a compiled
    pattern (``X = re.compile("...$")``) in the module, or imported from a kiln module where
    it is one (``elsewhere``)."""
    tree = ast.parse(source)
    compiled = _compiled(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kiln"):
            for alias in node.names:
                if alias.name in elsewhere:
                    compiled[alias.asname or alias.name] = node.lineno
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(
                node.func.value, ast.Name) and node.func.value.id == "re" and node.args:
            pattern = _literal(node.args[0])
            if pattern is None or not _ends_in_dollar(pattern):
                continue
            if node.func.attr in ("match", "search") and not _multiline(node, 2):
                found.append((node.lineno, f"re.{node.func.attr}({pattern!r})"))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("match", "search")):
            # X.match(...), and (X if c else Y).match(...)
            names = sorted({n.id for n in ast.walk(node.func.value)
                            if isinstance(n, ast.Name) and n.id in compiled})
            for name in names:
                found.append((node.lineno, f"{name}.{node.func.attr}() with {name} compiled "
                                           f"at line {compiled[name]} ending in $"))
    return sorted(found)


def test_the_scanner_finds_what_it_looks_for() -> None:
    source = '''
import re
A = re.compile(r"^x$")
B = re.compile(r"^x$", re.M)
C = re.compile(r"x\\$")
re.match(r"^(a|b)$", v)
re.search("y$", v)
re.search(r"^y$", v, re.MULTILINE)
re.fullmatch(r"^x$", v)
A.match(v)
A.fullmatch(v)
B.search(v)
C.match(v)
(C if v else A).search(v)
D = re.compile(r"(?:a|$)")
D.search(v)
'''
    assert [line for line, _ in dollar_anchored(source)] == [6, 7, 10, 14]
    imported = "from kiln.matrix import ID_RE as I\nI.match(v)\nI.fullmatch(v)\n"
    assert [line for line, _ in dollar_anchored(imported, frozenset({"ID_RE"}))] == [2]


def test_no_validation_pattern_in_kiln_is_anchored_with_dollar() -> None:
    """``re.match(r"^...$", value)`` accepts ``value + "\\n"``; validation uses fullmatch (or
    ``\\A...\\Z``). Every hit below is a value check that lets a trailing newline through."""
    sources = {path: path.read_text(encoding="utf-8")
               for path in sorted((REPO / "kiln").rglob("*.py"))}
    everywhere = frozenset(n for text in sources.values() for n in compiled_names(text))
    hits = [f"{path.relative_to(REPO)}:{line}: {what}"
            for path, text in sources.items()
            for line, what in dollar_anchored(text, everywhere)]
    assert hits == [], "\n".join(hits)


def test_the_patterns_really_accept_a_trailing_newline() -> None:
    """Why the scan exists."""
    assert re.match(r"^b\d+$", "b1\n") is not None
    assert re.fullmatch(r"^b\d+$", "b1\n") is None
    assert sys.version_info >= (3, 4)  # fullmatch exists
