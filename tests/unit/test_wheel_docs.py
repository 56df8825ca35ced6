"""docs/packages.md and kiln/package/wheel.py agree: every enabled entry's wheel tag and index
path is
in the table, and every entry without a wheel is named with its reason."""

from __future__ import annotations

import re
from pathlib import Path

from ember_project import EMBER

from kiln.matrix import load_matrix
from kiln.package.wheel import wheel_target

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "packages.md").read_text(encoding="utf-8")
ROW = re.compile(r"^\| `([a-z0-9.-]+)` \| `([a-z0-9_.]+)` \| `(/[a-z0-9./]*simple/)` \|$",
                 re.MULTILINE)


def test_the_wheel_table_matches_the_matrix() -> None:
    rows = {m.group(1): (m.group(2), m.group(3)) for m in ROW.finditer(DOC)}
    want = {}
    for e in load_matrix(REPO / "matrix").enabled:
        t = wheel_target(e, EMBER)
        if t is not None:
            want[e.id] = (".".join(t.platform_tags), f"/{t.index}/simple/".replace("//", "/"))
    assert rows == want


def test_entries_without_a_wheel_are_explained() -> None:
    for e in load_matrix(REPO / "matrix").enabled:
        if wheel_target(e, EMBER) is None:
            assert f"`{e.id}`" in DOC.split("No wheel:", 1)[1].split("###", 1)[0], e.id
