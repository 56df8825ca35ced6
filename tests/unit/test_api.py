"""The library API of docs/api.md: the names exist where documented, with the documented
signatures, results are frozen, and the pipeline example compiles."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
from pathlib import Path

import pytest

import kiln

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
API = ("plan_builds", "build_entries", "make_release", "publish_release", "install_release")


def rendered(func: object) -> str:
    """A signature as docs/api.md writes it: names and defaults, no annotations."""
    parts: list[str] = []
    star = False
    for p in inspect.signature(func).parameters.values():  # type: ignore[arg-type]
        if p.kind is inspect.Parameter.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        default = "" if p.default is inspect.Parameter.empty else f"={p.default!r}"
        parts.append(p.name + default)
    return ", ".join(parts)


def documented() -> dict[str, str]:
    """``kiln.NAME(params)`` of the table in docs/api.md."""
    return {m.group(1): m.group(2).replace('"', "'")
            for m in re.finditer(r"^\| `kiln\.(\w+)\((.*?)\)` \|", DOC, re.M)}


def test_every_api_name_is_exported_and_documented() -> None:
    assert set(API) <= set(kiln.__all__)
    assert set(documented()) == set(API)
    for name in API:
        assert callable(getattr(kiln, name)), name
        assert name in dir(kiln)


@pytest.mark.parametrize("name", API)
def test_the_documented_signature_is_the_real_one(name: str) -> None:
    assert rendered(getattr(kiln, name)) == documented()[name]


def test_the_api_lives_in_the_stage_packages() -> None:
    homes = {"plan_builds": "kiln.build.api", "build_entries": "kiln.build.api",
             "make_release": "kiln.release.make", "publish_release": "kiln.publish",
             "install_release": "kiln.install.installer"}
    for name, module in homes.items():
        assert getattr(kiln, name).__module__ == module, name
        assert f"`{module}`" in DOC


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'plan_bilds'"):
        kiln.plan_bilds  # type: ignore[attr-defined]  # noqa: B018


@pytest.mark.parametrize("path", ["kiln.release.make:ReleaseResult",
                                  "kiln.publish:Published",
                                  "kiln.install.installer:Installation",
                                  "kiln.build.jobs:BuildSummary"])
def test_results_are_frozen_dataclasses(path: str) -> None:
    module, name = path.split(":")
    cls = getattr(importlib.import_module(module), name)
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen


def test_the_pipeline_example_compiles_and_uses_the_api() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC, re.S)
    example = max(blocks, key=len)
    tree = ast.parse(example)
    compile(tree, "docs/api.md", "exec")
    called = {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call)
              and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name)
              and n.func.value.id == "kiln"}
    assert called == {"plan_builds", "build_entries", "make_release", "publish_release"}
    for name in called:
        # the keywords the example passes exist in the signature
        params = inspect.signature(getattr(kiln, name)).parameters
        for call in ast.walk(tree):
            if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                    and call.func.attr == name):
                assert {k.arg for k in call.keywords} <= set(params), name


@pytest.mark.parametrize("module", ["kiln", "kiln.cli", "kiln.cli.context", "kiln.cli.matrix",
                                    "kiln.cli.build", "kiln.cli.ci", "kiln.cli.release",
                                    "kiln.cli.install", "kiln.release.make", "kiln.build.api",
                                    "kiln.publish"])
def test_all_lists_every_public_name(module: str) -> None:
    """Every public top-level name a module defines (functions, classes, constants) is in its
    ``__all__``; imported names are not its own."""
    mod = importlib.import_module(module)
    path = Path(mod.__file__ or "")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    defined: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.Assign):
            defined |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            defined.add(node.target.id)
    public = {n for n in defined if not n.startswith("_")}
    assert public <= set(mod.__all__), sorted(public - set(mod.__all__))
