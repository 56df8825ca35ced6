"""Toolchains: one module per family behind the small ``Toolchain`` protocol, in one dict.

A toolchain installs itself into kiln's cache (pinned, from a package registry, never into the
user's environment), and for one job writes what CMake needs into the job's work directory: a
toolchain file rendered from ``recipes/cmake/`` and the compiler wrappers it names. Adding a
family (cuda, vulkan, hip...) is adding a module and a line in ``TOOLCHAINS``, plus the
backend's ``recipes/<backend>.yaml``.

Which entries can be built is data too: an entry builds here when it is ``local`` and its
backend has a recipe whose toolchain is registered; anything else is refused up front with a
``SelectionError`` that says why, never built halfway or faked.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kiln.errors import SelectionError
from kiln.matrix import Entry
from kiln.build.toolchains.base import Configured, Identity, Installed, Toolchain, ToolchainPaths
from kiln.build.toolchains.cuda import CudaToolchain
from kiln.build.toolchains.hip import HipToolchain
from kiln.build.toolchains.oneapi import OneApiToolchain
from kiln.build.toolchains.openvino import OpenvinoToolchain
from kiln.build.toolchains.recipe import Recipe, load_recipe, recipe_path
from kiln.build.toolchains.vulkan import VulkanToolchain
from kiln.build.toolchains.zig import ZigToolchain

__all__ = [
    "TOOLCHAINS",
    "Configured",
    "Identity",
    "Installed",
    "Toolchain",
    "ToolchainPaths",
    "check_buildable",
    "recipe_for",
    "refusal",
]


TOOLCHAINS: dict[str, Toolchain] = {
    "zig": ZigToolchain(),
    "cuda": CudaToolchain(),
    "hip": HipToolchain(),
    "oneapi": OneApiToolchain(),
    "openvino": OpenvinoToolchain(),
    "vulkan": VulkanToolchain(),
}


def recipe_for(entry: Entry, recipes: Path) -> Recipe:
    return load_recipe(recipes, entry.backend)


def _refusal(entry: Entry, recipes: Path, on_ci_runner: bool = False) -> str | None:
    if not entry.enabled:
        assert entry.disabled is not None
        return f"'{entry.id}' is disabled: {entry.disabled.reason}"
    if not entry.local and not on_ci_runner:
        where = entry.runner + (f" in container {entry.container}" if entry.container else "")
        return f"'{entry.id}' is ci-only: builds on runner {where}, not on this host"
    if not recipe_path(recipes, entry.backend).is_file():
        return (f"'{entry.id}': backend {entry.backend_label} is not buildable by this kiln "
                f"yet (no recipes/{entry.backend}.yaml)")
    return None


def refusal(entry: Entry, recipes: Path) -> str | None:
    """Why this kiln cannot build ``entry`` on this host, or ``None`` when it can."""
    why = _refusal(entry, recipes)
    if why is None and recipe_path(recipes, entry.backend).is_file():
        name = recipe_for(entry, recipes).toolchain
        if name not in TOOLCHAINS:
            why = (f"'{entry.id}': recipes/{entry.backend}.yaml names toolchain '{name}', "
                   "which this kiln does not have")
    return why


def check_buildable(entries: Sequence[Entry], recipes: Path, *,
                    on_ci_runner: bool = False) -> None:
    """Raise ``SelectionError`` naming every entry that this kiln cannot build here.

    ``on_ci_runner``: the caller runs on the entry's own CI runner / container (the generated
    release workflow passes ``--on-ci-runner``), so ci-only entries are not refused for where
    they are; they still need a recipe for their backend."""
    refused = [r for r in (_refusal(e, recipes, on_ci_runner) for e in entries)
               if r is not None]
    for e in entries:
        if e.enabled and (e.local or on_ci_runner) and recipe_path(recipes,
                                                                     e.backend).is_file():
            name = recipe_for(e, recipes).toolchain
            if name not in TOOLCHAINS:
                refused.append(f"'{e.id}': recipes/{e.backend}.yaml names toolchain '{name}', "
                               f"which this kiln does not have (known: "
                               f"{', '.join(sorted(TOOLCHAINS))})")
    if refused:
        noun = "entry" if len(refused) == 1 else "entries"
        raise SelectionError(
            f"cannot build {len(refused)} selected {noun}:\n" + "\n".join(
                f"  - {r}" for r in refused),
            hint="narrow the selectors, e.g. add backend=cpu or name the ids to build")
