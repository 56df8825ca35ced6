"""No file of kiln names ember (#19: kiln for any CMake project).

The project kiln builds is described by kiln.toml (kiln/project.py, docs/projects.md): its
programs, library, CMake options, device code, server, wheel and installer names. A stage
that names ember is a stage another project cannot use, so every file under kiln/ (modules
and templates alike) must name no project; ember's names live in the root kiln.toml and in
what it points at (recipes/, runtime/).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KILN = ROOT / "kiln"
EMBER = re.compile(r"\bember", re.IGNORECASE)


def _kiln_files() -> list[Path]:
    return sorted(p for p in KILN.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


def test_no_file_of_kiln_names_ember() -> None:
    found = []
    for path in _kiln_files():
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if EMBER.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert not found, ("ember's names belong in kiln.toml, not in kiln:\n" + "\n".join(found))


def test_the_check_reads_modules_and_templates() -> None:
    """The rule covers what the stages render too (install scripts, release page, notes)."""
    files = _kiln_files()
    assert any(p.suffix == ".py" for p in files)
    assert any(p.name == "install.sh.j2" for p in files)
    assert any(p.name == "release.html.j2" for p in files)


def test_ember_is_described_where_the_project_is() -> None:
    text = (ROOT / "kiln.toml").read_text(encoding="utf-8")
    assert 'name = "ember"' in text and EMBER.search(text)
