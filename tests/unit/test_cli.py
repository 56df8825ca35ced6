from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from kiln.cli import main


def run_cli(args: list[str], cwd: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str,
                                                                                     str]:
    out = io.StringIO()
    code = main(args, env={}, stdout=out, cwd=cwd)
    return code, out.getvalue(), capsys.readouterr().err


def test_validate_ok(repo_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["matrix", "validate"], repo_root, capsys)
    assert code == 0
    assert "27 entries valid (25 enabled: 20 local, 5 ci-only; 2 disabled)" in out


def test_validate_broken_copy_exits_3_with_every_error(tmp_path: Path, repo_root: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    m = tmp_path / "m"
    shutil.copytree(repo_root / "matrix", m)
    text = (m / "ubuntu.yaml").read_text().replace("arch: s390x", "arch: sparc64")
    (m / "ubuntu.yaml").write_text(text.replace("verify: lavapipe", "verify: lavapip"))
    code, out, err = run_cli(["matrix", "validate", str(m)], repo_root, capsys)
    assert code == 3 and out == ""
    assert "sparc64" in err and "'lavapip'" in err and "did you mean 'lavapipe'?" in err
    assert "Traceback" not in err


def test_debug_shows_traceback(tmp_path: Path, repo_root: Path) -> None:
    from kiln.errors import MatrixError

    with pytest.raises(MatrixError):
        main(["--debug", "matrix", "validate", str(tmp_path / "none")], env={},
             stdout=io.StringIO(), cwd=repo_root)


def test_plan_all_json_lists_the_27(repo_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["plan", "--all", "--json", "--build-number", "7"], repo_root, capsys)
    assert code == 0
    data = json.loads(out)
    assert len(data) == 27
    assert sorted(d["id"] for d in data if not d["enabled"]) == [
        "macos-arm64-kleidiai", "openeuler-ascend-910b-arm64"]
    assert all(d["disabled"]["tracking"].startswith("https://github.com/")
               for d in data if not d["enabled"])
    assert data[0]["artifact"] == "ember-b7-bin-macos-arm64.tar.gz"


def test_plan_github_matrix(repo_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["plan", "--github-matrix"], repo_root, capsys)
    assert code == 0
    assert len(json.loads(out)["include"]) == 25


def test_plan_bad_selector_exit_4(repo_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["plan", "--build-number", "1", "ubuntu-x46"], repo_root, capsys)
    assert code == 4
    assert "kiln: error: selector 'ubuntu-x46' matches no matrix entry" in err
    assert "did you mean 'ubuntu-x64'?" in err


def test_list_plain(repo_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["matrix", "list"], repo_root, capsys)
    assert code == 0
    lines = out.splitlines()
    assert sum(1 for ln in lines if ln.startswith(("macos-", "ubuntu-", "win-", "android-",
                                                     "openeuler-"))) == 27
    assert "disabled macos-arm64-kleidiai: https://github.com/" in out


def test_step_summary_on_github_actions(tmp_path: Path, repo_root: Path) -> None:
    summary = tmp_path / "summary.md"
    out = io.StringIO()
    code = main(["matrix", "list"], env={"GITHUB_ACTIONS": "true",
                                         "GITHUB_STEP_SUMMARY": str(summary)},
                stdout=out, cwd=repo_root)
    assert code == 0
    assert "| ubuntu-x64 |" in summary.read_text()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("kiln ")


def test_readme_matrix_table_is_in_step(repo_root: Path) -> None:
    from kiln.ci.docs import README_BEGIN, README_END, matrix_table
    from kiln.matrix import load_matrix

    text = (repo_root / "README.md").read_text()
    start = text.index(README_BEGIN) + len(README_BEGIN)
    end = text.index(README_END)
    assert text[start:end].strip() == matrix_table(load_matrix(repo_root / "matrix")).strip(), (
        "run: kiln docs --write")


def test_publish_help_and_hints_name_every_registered_destination(
        repo_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The destinations come from ``kiln.publish.PUBLISHERS``: none is left out of ``kiln
    publish --help`` or of the hint for a --to that is not a URL."""
    from kiln.errors import ConfigError
    from kiln.publish import PUBLISHERS, PublishOptions, publisher_for

    with pytest.raises(SystemExit) as exit_info:
        run_cli(["publish", "--help"], repo_root, capsys)
    assert exit_info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")
    assert {"file", "github", "pypi-index+https", "conan"} <= set(PUBLISHERS)
    for scheme in PUBLISHERS:
        assert f"{scheme}://" in help_text, scheme
    for url in ("somewhere", "ftp://host/dir"):
        with pytest.raises(ConfigError) as raised:
            publisher_for(url, PublishOptions(env={}))
        assert raised.value.exit_code == 2 and repr(url) in str(raised.value)
        for scheme in PUBLISHERS:
            assert f"{scheme}://" in (raised.value.hint or ""), (url, scheme)
