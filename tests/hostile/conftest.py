"""Session fixtures of the hostile corpus: throwaway minisign keys, the corpus built once per
session (per xdist worker), one misbehaving HTTP server serving every case's mirror, the
install.sh under test, ember's build (the runtime tests' own fixture, shared with them) and a
micro GGUF model. Outcomes per consumer are written to ``build/hostile/figures.json``."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from .corpus import (
    INSTALLED,
    Builder,
    Case,
    ReleaseSpec,
    all_cases,
    figures,
)
from .server import HostileServer, serve

REPO = Path(__file__).resolve().parents[2]
RUNTIME_TESTS = REPO / "tests" / "runtime"


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# ember's build: the runtime tests' session fixture (same cached build directory), imported
# under its own name since every test folder's conftest is called "conftest".
_runtime = _load("hostile_runtime_conftest", RUNTIME_TESTS / "conftest.py")
ember_build = _runtime.ember_build
EmberBuild = _runtime.EmberBuild


@dataclass
class Hostile:
    root: Path
    builder: Builder
    cases: dict[str, Case]
    sandbox: Path  # where absolute-path archive members aim; must stay empty
    key: Path
    pubkey: Path


def _keys(root: Path) -> tuple[Path, Path]:
    if shutil.which("minisign") is None:
        pytest.skip("minisign is not installed (scripts/apt-packages.txt)")
    out = []
    for name in ("release", "other"):
        key = root / "keys" / f"{name}.key"
        key.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["minisign", "-G", "-W", "-f", "-s", str(key), "-p",
                        str(key.with_name(key.name + ".pub"))],
                       check=True, capture_output=True, timeout=60)
        out.append(key)
    return out[0], out[1]


def _micro_model_factory(root: Path) -> object:
    cache: dict[str, bytes] = {}

    def make() -> bytes:
        if "m" not in cache:
            micro = _load("hostile_micro_gguf", RUNTIME_TESTS / "micro_gguf.py")
            path = root / "micro.gguf"
            micro.write_micro_model(path, vocab_from=RUNTIME_TESTS / "data" / "tiny" /
                                    "tiny-gpt2-f32.gguf", n_embd=16, n_ff=32, n_head=2,
                                    n_head_kv=1)
            cache["m"] = path.read_bytes()
        return cache["m"]

    return make


@pytest.fixture(scope="session")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Hostile:
    root = tmp_path_factory.mktemp("hostile")
    key, other = _keys(root)
    sandbox = root / "sandbox"
    sandbox.mkdir()
    builder = Builder(root / "corpus", key=key, other_key=other,
                      micro_model=_micro_model_factory(root))  # type: ignore[arg-type]
    cases = {c.name: c for c in all_cases(str(sandbox))}
    return Hostile(root=root, builder=builder, cases=cases, sandbox=sandbox, key=key,
                   pubkey=key.with_name(key.name + ".pub"))


@pytest.fixture(scope="session")
def server(hostile: Hostile) -> Iterator[HostileServer]:
    with serve(hostile.builder.mirrors) as srv:
        yield srv


@pytest.fixture(scope="session")
def install_sh(hostile: Hostile, server: HostileServer) -> Path:
    """install.sh as ``kiln release`` renders it for an honest b9 (the installed release),
    pinning the corpus's key; every case passes --from and --tag."""
    from ember_project import render

    from kiln.release.manifest import MANIFEST_NAME, ReleaseManifest

    base = hostile.root / "base-release"
    hostile.builder.write_release(base, ReleaseSpec(tag=INSTALLED), full=False)
    manifest = ReleaseManifest.from_json(
        json.loads((base / MANIFEST_NAME).read_text(encoding="utf-8")), source="base")
    scripts = render(manifest, hostile.pubkey.read_text(encoding="utf-8"), server.url)
    path = hostile.root / "install.sh"
    path.write_text(scripts["install.sh"], encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# figures: cases per consumer, and what this session saw


_SEEN: dict[str, dict[str, str]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for key, value in report.user_properties:
        if key != "hostile":
            continue
        consumer, case = str(value).split(":", 1)
        if report.when == "call" or report.outcome != "passed":
            _SEEN.setdefault(consumer, {})[case] = report.outcome


def pytest_sessionfinish(session: pytest.Session) -> None:
    if hasattr(session.config, "workerinput") or not _SEEN:
        return  # xdist workers: the controller has every report
    out = REPO / "build" / "hostile"
    out.mkdir(parents=True, exist_ok=True)
    table = {c: {"cases": n,
                 "run": len(_SEEN.get(c, {})),
                 "refused as the contract says": sum(v == "passed"
                                                     for v in _SEEN.get(c, {}).values()),
                 "failed": sorted(k for k, v in _SEEN.get(c, {}).items() if v == "failed")}
             for c, n in figures().items()}
    (out / "figures.json").write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
