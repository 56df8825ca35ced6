"""ember as its ``kiln.toml`` describes it, for the tests: ``render`` with ember's
``Installer`` (the tests that render ``install.sh`` and ``install.ps1``), the layout every
ember tree must hold (``EMBER_LAYOUT``) and the names its jobs are planned with (``NAMES``:
``make_job(entry, n, NAMES)``)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from kiln.project import load_project
from kiln.release import install_scripts

REPO = Path(__file__).resolve().parent.parent
EMBER = load_project(REPO)
INSTALLER = install_scripts.Installer.of(EMBER)
EMBER_LAYOUT = EMBER.layout
NAMES = EMBER.names
render = partial(install_scripts.render, installer=INSTALLER)
