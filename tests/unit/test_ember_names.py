"""Which of kiln's modules still name ember (#19: kiln for any CMake project).

The project kiln builds is described by kiln.toml (kiln/project.py, docs/projects.md); a stage
that names ember (its programs, library, paths, installer names) is a stage another project
cannot use. This test is a ratchet: a module not listed below must not name ember at all,
and a listed one may name it on at most as many lines as it does now. When a module stops
naming ember, lower its number or remove it; the list only ever shrinks.
"""

from __future__ import annotations

import re
from pathlib import Path

KILN = Path(__file__).resolve().parents[2] / "kiln"

# module (relative to kiln/) -> lines that name ember today
NAMES_EMBER = {
}


def _lines_naming_ember(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines()
               if re.search(r"\bember", line, re.IGNORECASE))


def test_no_module_names_ember_more_than_it_did() -> None:
    grown = []
    for path in sorted(KILN.rglob("*.py")):
        rel = path.relative_to(KILN).as_posix()
        n = _lines_naming_ember(path)
        if n > NAMES_EMBER.get(rel, 0):
            grown.append(f"kiln/{rel}: {n} lines name ember (allowed: "
                         f"{NAMES_EMBER.get(rel, 0)})")
    assert not grown, ("ember's names belong in kiln.toml, not in the stages:\n"
                       + "\n".join(grown))


def test_the_list_only_shrinks() -> None:
    """A module that names ember less than listed must have its number lowered, so that the
    list says where the work is."""
    stale = []
    for rel, allowed in NAMES_EMBER.items():
        path = KILN / rel
        n = _lines_naming_ember(path) if path.is_file() else 0
        if n < allowed:
            stale.append(f"kiln/{rel}: {n} (listed: {allowed})")
    assert not stale, "lower these in NAMES_EMBER:\n" + "\n".join(stale)


def test_the_new_modules_of_the_project_description_are_general() -> None:
    for rel in ("build/source.py", "release/assemble.py", "release/make.py",
                "release/notes.py", "release/install_scripts.py", "package/authenticode.py",
                "package/archive.py"):
        assert _lines_naming_ember(KILN / rel) == 0, rel


def test_the_installers_templates_name_no_project() -> None:
    """install.sh and install.ps1 take the project's name, program and source from kiln.toml
    (kiln.release.install_scripts.Installer)."""
    for path in sorted((KILN / "release" / "templates").glob("install.*.j2")):
        assert _lines_naming_ember(path) == 0, path.name
