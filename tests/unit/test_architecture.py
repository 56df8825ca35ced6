"""The house plan holds: kiln's modules import one another without cycles, no module takes
another's private name, and the command-line layer stays thin.

The graph is read with ``ast`` from every ``import`` in ``kiln/``, including the ones inside
functions (an import moved into a function to dodge a cycle is still a cycle of the design).
A submodule's implicit import of its own package is not an edge: a package's ``__init__`` is
its face, and faces here are small.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

KILN = Path(__file__).resolve().parents[2] / "kiln"


def _module_name(path: Path) -> str:
    rel = path.relative_to(KILN.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(KILN.rglob("*.py"))}


def _imports(path: Path, known: dict[str, Path]) -> Iterator[tuple[str, str, int]]:
    """(imported module, imported name or "", line) for every kiln import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                # ``import kiln`` (for ``kiln.__file__``) reads the root package's metadata.
                if alias.name.startswith("kiln") and alias.name != "kiln":
                    yield alias.name, "", node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("kiln"):
                continue
            for alias in node.names:
                if node.module == "kiln" and alias.name.startswith("__"):
                    # ``from kiln import __version__``: the root package's metadata, set
                    # before anything else there; the root's library API names are resolved
                    # on first use (PEP 562), so reading its metadata loads no stage.
                    continue
                sub = f"{node.module}.{alias.name}"
                if sub in known:  # `from kiln.verify import opencl_checks`: a module
                    yield sub, "", node.lineno
                else:
                    yield node.module, alias.name, node.lineno
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and node.value.startswith("kiln.") and node.value in known):
            # A string that is exactly a kiln module's name is an import by name:
            # ``import_module("kiln.x")``, or the entries of a tuple of module names that a
            # loop hands to ``import_module`` (``SUBCOMMAND_MODULES``). Plain "kiln" is the
            # program's name far more often (cache folders, SBOM tools) than its root package.
            yield node.value, "", node.lineno


def _graph() -> dict[str, set[str]]:
    known = _modules()
    graph: dict[str, set[str]] = {m: set() for m in known}
    for mod, path in known.items():
        for target, _name, _line in _imports(path, known):
            if target in known and target != mod:
                graph[mod].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "import cycles in kiln/: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_another_modules_private_name() -> None:
    known = _modules()
    bad = []
    for mod, path in known.items():
        for target, name, line in _imports(path, known):
            if name.startswith("_") and not name.startswith("__") and target != mod:
                bad.append(f"{path.relative_to(KILN.parent)}:{line}: {name} from {target}")
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


def test_the_stages_have_their_folders() -> None:
    """The layout docs/architecture.md draws: one folder per stage of the pipeline."""
    for stage in ("matrix", "build", "verify", "package", "release", "publish", "install", "ci",
                  "cli"):
        assert (KILN / stage / "__init__.py").is_file(), stage
    flat = sorted(p.name for p in KILN.glob("*.py"))
    assert flat == ["__init__.py", "__main__.py", "console.py", "errors.py", "files.py",
                    "plan.py", "project.py", "run.py", "vcs.py"], flat


def test_every_module_lists_its_public_names_in_all() -> None:
    """``__all__`` is each module's public face: every public function and class is in it."""
    missing = []
    for mod, path in _modules().items():
        if path.name == "__main__.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        public = [n.name for n in tree.body
                  if isinstance(n, ast.FunctionDef | ast.ClassDef) and not n.name.startswith("_")]
        listed: set[str] = set()
        for n in tree.body:
            if (isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__"
                                                  for t in n.targets)
                    and isinstance(n.value, ast.List | ast.Tuple)):
                listed |= {e.value for e in n.value.elts if isinstance(e, ast.Constant)}
        missing += [f"{mod}.{name}" for name in public if name not in listed]
    assert not missing, "public names missing from __all__: " + ", ".join(missing)
