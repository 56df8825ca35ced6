"""kiln: the release-engineering system that builds, verifies, packages and ships a C/C++ CMake
project for every platform of its matrix (the project: ``kiln.toml``, docs/projects.md).

The library API, one call per step of a pipeline (docs/api.md)::

    import kiln

    jobs = kiln.plan_builds(repo=repo, local=True)
    summary = kiln.build_entries(jobs, repo=repo, out=repo / "dist")
    release = kiln.make_release(repo / "release", repo=repo, artifacts=repo / "dist")
    kiln.publish_release(release.out, "file:///srv/mirror")

The names are resolved on first use (PEP 562 ``__getattr__``): ``import kiln`` loads no stage,
so the command line, which imports ``kiln.cli``, starts fast. They are not called ``plan``,
``build``, ``publish`` and ``install`` because those are kiln's stage packages, which
``import kiln.build`` binds as attributes of ``kiln``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "build_entries", "install_release", "make_release", "plan_builds",
           "publish_release"]

if TYPE_CHECKING:
    from kiln.build.api import build_entries, plan_builds
    from kiln.install.installer import install_release
    from kiln.publish import publish as publish_release
    from kiln.release.make import make_release

# Public name -> (module, name there).
_API: dict[str, tuple[str, str]] = {
    "plan_builds": ("kiln.build.api", "plan_builds"),
    "build_entries": ("kiln.build.api", "build_entries"),
    "make_release": ("kiln.release.make", "make_release"),
    "publish_release": ("kiln.publish", "publish"),
    "install_release": ("kiln.install.installer", "install_release"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attr = _API[name]
    except KeyError:
        raise AttributeError(f"module 'kiln' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
