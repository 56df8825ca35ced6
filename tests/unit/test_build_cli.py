"""``kiln build`` on the command line: what it refuses before starting anything, and how it
reports results (with build_jobs replaced by a fake)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

import kiln.cli.build
from kiln.build.jobs import BuildResult, BuildSummary
from kiln.cli import main
from kiln.package.records import Verification


def run_cli(args: list[str], cwd: Path, capsys: pytest.CaptureFixture[str],
            env: dict[str, str] | None = None) -> tuple[int, str, str]:
    out = io.StringIO()
    code = main(args, env=env if env is not None else {"HOME": "/nonexistent"}, stdout=out,
                cwd=cwd)
    return code, out.getvalue(), capsys.readouterr().err


def test_bad_selector_exits_4_with_a_suggestion(repo_root: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["build", "ubuntu-x46", "--build-number", "1", "--out",
                            str(tmp_path / "out")], repo_root, capsys)
    assert code == 4
    assert "selector 'ubuntu-x46' matches no matrix entry" in err
    assert "did you mean 'ubuntu-x64'?" in err
    assert not (tmp_path / "out").exists()


def test_entry_without_a_recipe_is_refused_not_faked(repo_root: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A backend kiln has no recipe for is refused up front, before anything is built."""
    import shutil

    project = tmp_path / "project"
    shutil.copytree(repo_root / "matrix", project / "matrix")
    shutil.copytree(repo_root / "recipes", project / "recipes")
    shutil.copy(repo_root / "kiln.toml", project / "kiln.toml")
    (project / "pyproject.toml").write_text((repo_root / "pyproject.toml").read_text())
    (project / "recipes" / "vulkan.yaml").unlink()
    code, _, err = run_cli(["build", "ubuntu-x64", "ubuntu-vulkan-x64", "--build-number", "1",
                            "--out", str(tmp_path / "out")], project, capsys)
    assert code == 4, err
    assert "'ubuntu-vulkan-x64': backend vulkan 1.3 is not buildable by this kiln yet" in err
    assert "backend=cpu" in err  # the hint
    assert not (tmp_path / "out").exists()


def test_ci_only_entry_names_its_runner(repo_root: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["build", "ubuntu-sycl-fp16-x64", "--build-number", "1"],
                           repo_root, capsys)
    assert code == 4
    assert ("'ubuntu-sycl-fp16-x64' is ci-only: builds on runner ubuntu-24.04 in container "
            "intel/oneapi-basekit:2025.3.0-0-devel-ubuntu24.04") in err


def test_disabled_entry_says_why(repo_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["build", "macos-arm64-kleidiai", "--build-number", "1"], repo_root,
                           capsys)
    assert code == 4 and "disabled" in err and "github.com" in err


def fake_summary(ok: bool, tmp_path: Path) -> BuildSummary:
    v = Verification(method="qemu", ok=ok, detail="16 ids identical" if ok else "ids differ")
    return BuildSummary(results=(
        BuildResult(entry_id="ubuntu-arm64", ok=ok, asset=None, record=None,
                    log=tmp_path / "ubuntu-arm64.log", seconds=12.5, cached=False,
                    error=None if ok else "verification (qemu) failed: ids differ",
                    verification=v),
        BuildResult(entry_id="ubuntu-x64", ok=True, asset=None, record=None,
                    log=tmp_path / "ubuntu-x64.log", seconds=0.2, cached=True, error=None,
                    verification=Verification(method="native", ok=True, detail="ok")),
    ), seconds=13.0)


@pytest.mark.parametrize("ok", [True, False])
def test_summary_table_and_exit_code(repo_root: Path, tmp_path: Path, ok: bool,
                                     capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_build_jobs(jobs: Any, **kw: Any) -> BuildSummary:
        seen["ids"] = [j.entry.id for j in jobs]
        seen.update(kw)
        return fake_summary(ok, tmp_path)

    monkeypatch.setattr(kiln.cli.build, "build_jobs", fake_build_jobs)
    code, out, err = run_cli(["build", "ubuntu-x64", "ubuntu-arm64", "--build-number", "9",
                              "--jobs", "3", "--cache-dir", str(tmp_path / "c"), "--out",
                              str(tmp_path / "o")], repo_root, capsys)
    assert seen["ids"] == ["ubuntu-x64", "ubuntu-arm64"] and seen["parallel"] == 3
    assert seen["layout"].root == (tmp_path / "c").absolute()
    assert "ubuntu-arm64" in out and "ok (cached)" in out
    assert str(tmp_path / "ubuntu-x64.log") in out
    if ok:
        assert code == 0
    else:
        assert code == 7
        assert "1 of 2 builds failed: ubuntu-arm64" in err
        assert "ubuntu-arm64: verification (qemu) failed: ids differ" in out


def test_json_output(repo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kiln.cli.build, "build_jobs",
                        lambda jobs, **kw: fake_summary(True, tmp_path))
    code, out, _ = run_cli(["build", "ubuntu-arm64", "--build-number", "9", "--json",
                            "--cache-dir", str(tmp_path / "c")], repo_root, capsys)
    assert code == 0
    data = json.loads(out)
    assert data["ok"] is True
    assert [r["entry_id"] for r in data["results"]] == ["ubuntu-arm64", "ubuntu-x64"]
    assert data["results"][0]["verification"]["method"] == "qemu"


def test_github_actions_step_summary(repo_root: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kiln.cli.build, "build_jobs",
                        lambda jobs, **kw: fake_summary(True, tmp_path))
    summary = tmp_path / "summary.md"
    env = {"HOME": "/nonexistent", "GITHUB_ACTIONS": "true",
           "GITHUB_STEP_SUMMARY": str(summary)}
    code, _, _ = run_cli(["build", "ubuntu-arm64", "--build-number", "9", "--cache-dir",
                          str(tmp_path / "c")], repo_root, capsys, env=env)
    assert code == 0
    text = summary.read_text()
    assert "### kiln build" in text and "| ubuntu-arm64 | ok | qemu |" in text


def test_ci_only_entry_on_its_runner_is_refused_only_for_its_missing_recipe(
        repo_root: Path, tmp_path: Path) -> None:
    import shutil

    from kiln.build.toolchains import check_buildable
    from kiln.errors import SelectionError
    from kiln.matrix import load_matrix

    rocm = load_matrix(repo_root / "matrix").get("ubuntu-rocm-7.2-x64")
    with pytest.raises(SelectionError) as here:
        check_buildable([rocm], repo_root / "recipes")
    assert "ci-only" in here.value.message
    check_buildable([rocm], repo_root / "recipes", on_ci_runner=True)  # recipes/hip.yaml
    recipes = tmp_path / "recipes"
    shutil.copytree(repo_root / "recipes", recipes)
    (recipes / "hip.yaml").unlink()
    with pytest.raises(SelectionError) as runner:
        check_buildable([rocm], recipes, on_ci_runner=True)
    assert "ci-only" not in runner.value.message
    assert "not buildable by this kiln yet (no recipes/hip.yaml)" in runner.value.message


def test_refusal_says_why_an_entry_cannot_be_built_here(repo_root: Path) -> None:
    from kiln.build.toolchains import refusal
    from kiln.matrix import load_matrix

    m = load_matrix(repo_root / "matrix")
    assert refusal(m.get("ubuntu-x64"), repo_root / "recipes") is None
    why = refusal(m.get("ubuntu-rocm-7.2-x64"), repo_root / "recipes")
    assert why is not None and "ci-only" in why
    why = refusal(m.get("macos-arm64-kleidiai"), repo_root / "recipes")
    assert why is not None and "disabled" in why
