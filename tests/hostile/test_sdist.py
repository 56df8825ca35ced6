"""Every hostile-member case against ``kiln build``'s sdist source (kiln/build/source.py).

A project whose kiln.toml pins an sdist (examples/llamacpp: llama-cpp-python 0.3.36) gets it
from the package index and unpacks it into kiln's cache. The pin stops other bytes, not a
hostile upload that was pinned: so each case's archive (the honest tree plus the hostile
members, as the installers get it) is served as the pinned sdist by a stand-in for
``pip download``, and must be refused with exit 12 and a message naming the member, with
nothing written outside the cache and nothing left in it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import kiln.build.source
from kiln.build.source import resolve_source
from kiln.errors import KilnError
from kiln.files import sha256_file
from kiln.project import load_project

from .corpus import DEEP, NEW, SDIST, all_cases, cases_for, honest_members, write_tar

PARAMS = [pytest.param(SDIST, c.name, id=f"{SDIST}:{c.name}")
          for c in all_cases() if SDIST in c.consumers]

KILN_TOML = """
[project]
name = "hostile"
license = "LICENSE"

[project.sdist]
requirement = "hostile==1.0"
sha256 = "{sha}"
subdir = "src"

[smoke]
program = "run"
args = ["{{model}}"]
output = "stdout"
"""


class StandInPip:
    """``pip download`` handing out one file as the sdist."""

    def __init__(self, sdist: Path) -> None:
        self.sdist = sdist

    def __call__(self, argv: Sequence[str], **kwargs: Any) -> None:
        dest = Path(argv[argv.index("--dest") + 1])
        (dest / self.sdist.name).write_bytes(self.sdist.read_bytes())


@pytest.mark.parametrize(("consumer", "name"), PARAMS)
def test_a_hostile_sdist_is_refused(consumer: str, name: str, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    case = next(c for c in cases_for(SDIST, str(sandbox)) if c.name == name)
    assert case.mirror is not None
    spec = case.mirror.releases[0]
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    sdist = work / "hostile-1.0.tar.gz"
    sdist.write_bytes(write_tar([*spec.before, *honest_members(NEW), *spec.members]))
    root = work / "project"
    root.mkdir()
    (root / "kiln.toml").write_text(KILN_TOML.format(sha=sha256_file(sdist)), encoding="utf-8")
    monkeypatch.setattr(kiln.build.source, "run", StandInPip(sdist))
    cache = work / "cache"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))

    with pytest.raises(KilnError) as err:
        resolve_source(load_project(root), cache_root=cache, python="python3", env={},
                       run_env={})

    want = case.expect_for(consumer)
    assert err.value.exit_code in want.codes, err.value.render()
    assert re.search(want.message, err.value.render()), err.value.render()
    # nothing outside the cache, nothing half-unpacked inside it
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")
                   if not p.is_relative_to(cache))
    assert after == before
    assert not any(sandbox.iterdir())
    assert not list((cache / "sources").iterdir())
    escaped = (work / DEEP / "tmp" / "hostile-dotdot-deep").resolve()
    assert not escaped.exists()
