"""Matrix values followed by a newline are refused.

``re.match`` with a pattern ending in ``$`` accepts a value followed by one newline (``$``
matches before a trailing newline), and ``kiln ci`` then wrote that newline into the workflow,
where it broke the YAML (or added keys to it). Every pattern-checked field is tried here with
the newline written as a YAML escape, so the file itself stays valid YAML."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from kiln.ci.workflow import load_config, render
from kiln.errors import MatrixError
from kiln.matrix import load_matrix


def edited_matrix(tmp_path: Path, repo_root: Path, file: str, old: str, new: str) -> Path:
    root = tmp_path / "matrix"
    shutil.copytree(repo_root / "matrix", root)
    text = (root / file).read_text(encoding="utf-8")
    assert old in text, old
    (root / file).write_text(text.replace(old, new, 1), encoding="utf-8")
    return root


CASES = [
    # (file, text, replacement, field named in the error)
    ("ubuntu.yaml", "  - id: ubuntu-x64\n", '  - id: "ubuntu-x64\\n"\n', "id"),
    ("ubuntu.yaml", "    runner: ubuntu-24.04-arm\n",
     '    runner: "ubuntu-24.04-arm\\n"\n', "runner"),
    ("ubuntu.yaml", "    runner: ubuntu-24.04-arm\n",
     '    runner: "ubuntu-24.04-arm\\npermissions: write-all"\n', "runner"),
    ("ubuntu.yaml", 'backend_version: "1.3"', 'backend_version: "1.3\\n"', "backend_version"),
    ("ubuntu.yaml", '  libc_floor: "2.17"', '  libc_floor: "2.17\\n"', "libc_floor"),
    ("ubuntu.yaml", "    container: rocm/dev-ubuntu-24.04:7.2-complete\n",
     '    container: "rocm/dev-ubuntu-24.04:7.2-complete\\n"\n', "container"),
    ("backends.yaml", "gpu_targets: [spirv-1.3]", 'gpu_targets: ["spirv-1.3\\n"]',
     "gpu_targets"),
    ("macos.yaml", "tracking: https://github.com/ggml-org/llama.cpp/pull/21259",
     'tracking: "https://github.com/ggml-org/llama.cpp/pull/21259\\n"', "disabled.tracking"),
]


@pytest.mark.parametrize(("file", "old", "new", "field"), CASES,
                         ids=[f"{c[3]}-{i}" for i, c in enumerate(CASES)])
def test_a_trailing_newline_is_refused(tmp_path: Path, repo_root: Path, file: str, old: str,
                                       new: str, field: str) -> None:
    root = edited_matrix(tmp_path, repo_root, file, old, new)
    with pytest.raises(MatrixError) as info:
        load_matrix(root)
    assert any(field in p for p in info.value.problems), info.value.problems
    assert info.value.exit_code == 3


def test_a_cmake_option_name_with_a_newline_is_refused(tmp_path: Path, repo_root: Path) -> None:
    root = edited_matrix(tmp_path, repo_root, "ubuntu.yaml", "  - id: ubuntu-x64\n",
                         '  - id: ubuntu-x64\n    cmake: {"EMBER_X\\n": "ON"}\n')
    with pytest.raises(MatrixError, match="EMBER_X"):
        load_matrix(root)


def test_the_real_matrix_still_loads_and_its_workflow_parses(repo_root: Path) -> None:
    matrix = load_matrix(repo_root / "matrix")
    config = load_config(repo_root / "ci" / "config.yaml", matrix)
    for text in render(matrix, config, repo_root / "ci").files.values():
        assert isinstance(yaml.safe_load(text), dict)
