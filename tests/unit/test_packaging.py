"""kiln's own packaging: setuptools must find the kiln packages without walking the checkout.

The tests leave wine prefixes under build/ whose ``dosdevices/z:`` links to ``/``. With
namespace-package discovery setuptools walks every directory, following links, so the next
``pip install -e .`` (the second run of the test command) never finished."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from setuptools.discovery import PackageFinder, PEP420PackageFinder


def test_discovery_does_not_follow_links_out_of_the_checkout(
    repo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tomllib.loads((repo_root / "pyproject.toml").read_text())
    find = cfg["tool"]["setuptools"]["packages"]["find"]
    finder = PEP420PackageFinder if find.get("namespaces", True) else PackageFinder
    (tmp_path / "kiln" / "sub").mkdir(parents=True)
    (tmp_path / "kiln" / "__init__.py").write_text("")
    (tmp_path / "kiln" / "sub" / "__init__.py").write_text("")
    prefix = tmp_path / "build" / "kiln-test" / "wine" / "dosdevices"
    prefix.mkdir(parents=True)
    os.symlink(tmp_path, prefix / "z:")          # a loop back into the checkout, like wine's
    visited: list[str] = []
    real_walk = os.walk

    def counting_walk(top: str, topdown: bool = True, onerror: object = None,
                      followlinks: bool = False) -> Iterator[tuple[str, list[str], list[str]]]:
        for entry in real_walk(top, topdown=topdown, followlinks=followlinks):
            visited.append(entry[0])
            assert len(visited) < 1000, "package discovery is walking without end"
            yield entry

    monkeypatch.setattr(os, "walk", counting_walk)
    found = sorted(finder.find(str(tmp_path), include=tuple(find["include"])))
    monkeypatch.undo()
    assert found == ["kiln", "kiln.sub"]
    assert not any("build" in Path(v).relative_to(tmp_path).parts for v in visited)
