"""Shared fixtures. Unit tests (tests/unit) must not start programs or reach the network: the
autouse guard below makes any attempt fail loudly."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo_root() -> Path:
    return REPO


@pytest.fixture
def matrix_copy(tmp_path: Path) -> Path:
    """A writable copy of the real matrix directory, for tests that break it."""
    dst = tmp_path / "matrix"
    shutil.copytree(REPO / "matrix", dst)
    return dst


@pytest.fixture(autouse=True)
def _no_subprocess_in_unit_tests(request: pytest.FixtureRequest,
                                 monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    if "unit" in request.node.path.parts:
        def refuse(*args: object, **kwargs: object) -> None:
            raise AssertionError(f"unit tests must not start programs: {args[:1]}")

        monkeypatch.setattr(subprocess, "run", refuse)
        monkeypatch.setattr(subprocess, "Popen", refuse)
    yield
