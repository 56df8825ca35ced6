"""The command line starts without loading the pipeline's stages: building the parser, and
``kiln plan --all --json``, import only the CLI modules and light ones. Checked through
``sys.modules`` in a fresh interpreter (not timed; bench/bench_cli.py measures), so that a
module-level import of a heavy stage in a command module cannot creep back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

# Loaded only by the commands that build, package, release, publish or install.
HEAVY = ("kiln.build.jobs", "kiln.build.toolchains", "kiln.package.wheel",
         "kiln.release.assemble", "kiln.release.make", "kiln.install.installer",
         "kiln.publish", "kiln.verify", "lief", "jinja2", "requests", "minisign")


def loaded_after(code: str) -> set[str]:
    """The modules of ``HEAVY`` (and ``rich``) that ``code`` leaves in ``sys.modules``."""
    probe = (f"import io, json, sys\n{code}\n"
             f"print(json.dumps(sorted(m for m in {(*HEAVY, 'rich')!r} if m in sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                          text=True, check=True)
    return set(json.loads(proc.stdout.splitlines()[-1]))


def test_building_the_parser_loads_no_stage() -> None:
    assert loaded_after("import kiln.cli\nkiln.cli._parser()") == set()


def test_import_kiln_loads_no_stage() -> None:
    assert loaded_after("import kiln") == set()


def test_plan_json_loads_no_stage_and_no_console() -> None:
    code = ("import kiln.cli\nout = io.StringIO()\n"
            "assert kiln.cli.main(['plan', '--all', '--json', '--build-number', '7'], "
            "stdout=out) == 0\nassert json.loads(out.getvalue())")
    assert loaded_after(code) == set()


def test_matrix_validate_loads_no_stage_and_no_console() -> None:
    code = ("import kiln.cli\nout = io.StringIO()\n"
            "assert kiln.cli.main(['matrix', 'validate'], stdout=out) == 0")
    assert loaded_after(code) == set()


def test_the_check_sees_a_heavy_import() -> None:
    """The probe itself works: a module the commands must not load is reported when loaded."""
    assert loaded_after("import kiln.package.wheel") >= {"kiln.package.wheel"}
