"""ember's installers as its ``kiln.toml`` names them: ``render`` with ember's ``Installer``, for
the tests that render ``install.sh`` and ``install.ps1``."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from kiln.project import load_project
from kiln.release import install_scripts

REPO = Path(__file__).resolve().parent.parent
INSTALLER = install_scripts.Installer.of(load_project(REPO))
render = partial(install_scripts.render, installer=INSTALLER)
