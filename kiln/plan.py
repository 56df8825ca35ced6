"""Select matrix entries and turn each into a ``Job``: what to build, with what, how to check it.

Selectors (positional arguments of ``kiln plan`` / ``kiln build``), OR'ed together:

- an exact id: ``ubuntu-x64``
- a glob over ids: ``'ubuntu-*'``, ``'win-cuda-*'``
- attribute filters joined by commas, AND'ed: ``backend=cuda``, ``os=windows,arch=aarch64``

``--local`` / ``--ci-only`` then narrow the union. Disabled entries are left out unless
``include_disabled``; naming a disabled entry by its exact id without it is an error that says
why the entry is disabled and where that is tracked. A selector that matches nothing is an error
with a "did you mean" suggestion.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kiln.errors import SelectionError
from kiln.matrix import FIELD_BY_NAME, Entry, Matrix
from kiln.matrix.catalogue import backend as catalogue_backend
from kiln.project import Names

__all__ = ["Job", "artifact_name", "github_matrix", "make_job", "plan", "select"]

@dataclass(frozen=True, kw_only=True)
class Job:
    """One build: everything later stages need, derived from one entry."""

    entry: Entry
    build_number: int
    artifact: str
    target: str
    toolchain: str
    cmake_options: tuple[tuple[str, str], ...]
    verify: str
    # the project's names (archive, kiln's CMake options, device code); not part of to_json:
    # what they decide is already in artifact and cmake_options
    names: Names = field(compare=False)

    def to_json(self) -> dict[str, Any]:
        out = self.entry.to_json()
        out.update({
            "build_number": self.build_number,
            "artifact": self.artifact,
            "toolchain": self.toolchain,
            "cmake_options": dict(self.cmake_options),
        })
        return out


def artifact_name(entry: Entry, build_number: int, names: Names) -> str:
    """The project's archive pattern filled in, plus ``.tar.gz`` (``.zip`` for Windows):
    ``<name>-b<N>-bin-<id>.tar.gz`` by default, llama.cpp's naming."""
    stem = names.archive.format(name=names.name, build=build_number, id=entry.id)
    return f"{stem}.{entry.archive}"


def make_job(entry: Entry, build_number: int, names: Names) -> Job:
    options: dict[str, str] = {}
    # The backend's CMake option, compiler names: the catalogue's (kiln/matrix/catalogue.py). zig
    # builds every host side made here; ci-only entries name the vendor compiler their CI job
    # installs.
    b = catalogue_backend(entry.backend)
    if b.cmake_option is not None:
        options[names.option(b.cmake_option)] = "ON"
    if entry.gpu_targets:
        options[names.option("GPU_TARGETS")] = ";".join(entry.gpu_targets)
    options.update(dict(entry.cmake))
    if entry.local:
        device = b.toolchain_for_device(entry.backend_version)
        toolchain = f"zig cc ({entry.zig_target})" + (f" + {device}" if device else "")
    else:
        toolchain = (b.ci_toolchain or "zig cc").format(version=entry.backend_version)
    return Job(entry=entry, build_number=build_number,
               artifact=artifact_name(entry, build_number, names),
               target=entry.zig_target, toolchain=toolchain,
               cmake_options=tuple(sorted(options.items())), verify=entry.verify,
               names=names)


def _is_filter(selector: str) -> bool:
    return "=" in selector


def _match_filter(entry: Entry, selector: str) -> bool:
    for cond in selector.split(","):
        key, _, want = cond.partition("=")
        have = entry.attribute(key.strip())
        if have is None:
            return False
        wanted = want.strip()
        # List-valued fields (cpu_dispatch, gpu_targets) match when they contain the value.
        if FIELD_BY_NAME.get(key.strip()) is not None and FIELD_BY_NAME[key.strip()].kind == "list":
            if wanted not in have.split(","):
                return False
        elif not fnmatch.fnmatchcase(have, wanted):
            return False
    return True


def _check_filter(selector: str) -> None:
    valid = [*FIELD_BY_NAME, "enabled", "disabled"]
    for cond in selector.split(","):
        key, eq, want = cond.partition("=")
        key = key.strip()
        if not eq or not key or not want.strip():
            raise SelectionError(f"selector '{selector}': '{cond}' is not KEY=VALUE",
                                 hint="write e.g. backend=cuda or os=windows,arch=aarch64")
        if key not in valid or key == "cmake":
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "filter keys: " + ", ".join(
                sorted(k for k in valid if k != "cmake"))
            raise SelectionError(f"selector '{selector}': unknown attribute '{key}'", hint=hint)


def select(matrix: Matrix, selectors: Sequence[str] = (), *, include_disabled: bool = False,
           local: bool = False, ci_only: bool = False) -> tuple[Entry, ...]:
    """Entries matching any selector (all when none), in matrix order."""
    if local and ci_only:
        raise SelectionError("--local and --ci-only exclude each other",
                             hint="pass at most one of them")
    chosen: set[str] = set()
    for sel in selectors:
        sel = sel.strip()
        if not sel:
            raise SelectionError("empty selector", hint="pass an id, a glob or KEY=VALUE")
        if _is_filter(sel):
            _check_filter(sel)
            hits = [e for e in matrix if _match_filter(e, sel)]
        else:
            hits = [e for e in matrix if fnmatch.fnmatchcase(e.id, sel)]
        if not hits:
            close = difflib.get_close_matches(sel, matrix.ids, n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'?" if close else "see `kiln matrix list` for ids"
            raise SelectionError(f"selector '{sel}' matches no matrix entry", hint=hint)
        if not include_disabled:
            enabled_hits = [e for e in hits if e.enabled]
            if not enabled_hits:
                off = hits[0]
                assert off.disabled is not None
                raise SelectionError(
                    f"'{sel}' selects only disabled entries: {', '.join(e.id for e in hits)} "
                    f"({off.disabled.reason} Tracking: {off.disabled.tracking})",
                    hint="pass --all to include disabled entries")
            hits = enabled_hits
        chosen.update(e.id for e in hits)
    pool = [e for e in matrix if (e.id in chosen if selectors else True)]
    if not include_disabled:
        pool = [e for e in pool if e.enabled]
    if local:
        pool = [e for e in pool if e.local]
    if ci_only:
        pool = [e for e in pool if not e.local]
    if selectors and not pool:
        raise SelectionError("the selectors match entries, but none that pass --local/--ci-only",
                             hint="drop the flag or change the selectors")
    return tuple(pool)


def plan(matrix: Matrix, selectors: Sequence[str] = (), *, build_number: int,
         include_disabled: bool = False, local: bool = False,
         ci_only: bool = False, names: Names) -> tuple[Job, ...]:
    entries = select(matrix, selectors, include_disabled=include_disabled, local=local,
                     ci_only=ci_only)
    return tuple(make_job(e, build_number, names) for e in entries)


def github_matrix(entries: Sequence[Entry]) -> dict[str, list[dict[str, Any]]]:
    """``{"include": [...]}`` for ``strategy.matrix``: one object per enabled entry."""
    include = []
    for e in entries:
        if not e.enabled:
            continue
        item: dict[str, Any] = {"id": e.id, "runner": e.runner, "build": e.build,
                                "os": e.os, "arch": e.arch, "backend": e.backend}
        if e.container:
            item["container"] = e.container
        include.append(item)
    return {"include": include}
