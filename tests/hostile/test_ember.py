"""Every ember case against the Python binding and ember-cli, with one shared build of
runtime/ (the runtime tests' own cached build) and a micro GGUF model (no SmolLM2 needed).

A hostile model must be refused when it is loaded (ember-cli: exit 2, the binding:
``EmberError``), a hostile value refused with an error naming it (ember-cli: usage exit 1, or 2
for a file it cannot read; the binding: ``EmberError``, ``ValueError`` or ``OverflowError``),
never a crash, a hang, a silent wrap-around of an integer that C would truncate, nor an
acceptance. Each runs in its own process under a 2 GiB address-space limit, so an attempt to
allocate what a hostile count asks for ends in an error here rather than on the machine."""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

import pytest

from .checks import Run, outcome_problems, report, run
from .conftest import REPO, EmberBuild, Hostile
from .corpus import BINDING, CLI, all_cases

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("hostile-ember")]

PARAMS = [pytest.param(consumer, c.name, id=f"{consumer}:{c.name}")
          for c in all_cases() for consumer in (BINDING, CLI) if consumer in c.consumers]
LIMIT_AS = 2 << 30

# Exit 0: refused with an error of the binding's kinds (message on stderr); 1: accepted;
# 2: another exception (its traceback on stderr, which the check refuses too).
BINDING_SCRIPT = r"""
import math, sys, traceback
import ember
PATH, CODE = sys.argv[1], sys.argv[2]
try:
    if CODE == "load":
        m = ember.Model(PATH, n_ctx=64, n_threads=1)
        m.logits([1, 2])
    else:
        m = ember.Model(PATH, n_ctx=64, n_threads=1)
        exec(CODE)
except (ember.EmberError, ValueError, OverflowError) as exc:
    print(f"refused: {type(exc).__name__}: {exc}", file=sys.stderr)
    sys.exit(0)
except BaseException:
    traceback.print_exc()
    sys.exit(2)
print("accepted", file=sys.stderr)
sys.exit(1)
"""


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_AS, LIMIT_AS))


@pytest.fixture(scope="session")
def micro_model(hostile: Hostile) -> Path:
    from .corpus import Case, EmberSpec, expect

    honest = Case(name="control-micro-model", klass="control", consumers=(CLI,),
                  ember=EmberSpec(), expect=expect(0, ""))
    return hostile.builder.model(honest)


def run_binding(build: EmberBuild, model: Path, code: str, tmp: Path) -> Run:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp),
           "LANG": "C.UTF-8", "EMBER_LIBRARY": str(build.library),
           "PYTHONPATH": str(REPO / "runtime" / "python"), "EMBER_BACKEND": "cpu"}
    return run([sys.executable, "-c", BINDING_SCRIPT, str(model), code], env=env, cwd=tmp,
               timeout=120, preexec=_limit)


def run_cli(build: EmberBuild, args: list[str], tmp: Path) -> Run:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp),
           "LANG": "C.UTF-8", "EMBER_BACKEND": "cpu"}
    return run([str(build.cli), *args], env=env, cwd=tmp, timeout=120, preexec=_limit)


@pytest.mark.parametrize(("consumer", "name"), PARAMS)
def test_ember_refuses(consumer: str, name: str, hostile: Hostile, ember_build: EmberBuild,
                       micro_model: Path, tmp_path: Path,
                       record_property: pytest.RecordProperty) -> None:
    record_property("hostile", f"{consumer}:{name}")
    case = hostile.cases[name]
    assert case.ember is not None
    if case.ember.gguf is not None:
        model = hostile.builder.model(case)
        if consumer == BINDING:
            r = run_binding(ember_build, model, "load", tmp_path)
        else:
            r = run_cli(ember_build, ["-m", str(model), "-p", "ab", "-n", "2", "-t", "1"],
                        tmp_path)
    elif case.ember.binding is not None:
        r = run_binding(ember_build, micro_model, case.ember.binding, tmp_path)
    else:
        assert case.ember.cli is not None
        args = [a.replace("{model}", str(micro_model)) for a in case.ember.cli]
        r = run_cli(ember_build, args, tmp_path)
    problems = outcome_problems(r, case.expect_for(consumer))
    if r.code < 0:
        problems.append(f"killed by signal {-r.code}")
    if "Sanitizer" in r.err or "runtime error:" in r.err:
        problems.append("a sanitizer report")
    assert not problems, f"{consumer} {name}: " + report(problems, r)


def test_control_micro_model_runs(ember_build: EmberBuild, micro_model: Path,
                                  tmp_path: Path) -> None:
    """The harness itself: the honest micro model loads and runs through both consumers."""
    r = run_cli(ember_build, ["-m", str(micro_model), "-p", "ab", "-n", "2", "-t", "1"],
                tmp_path)
    assert r.code == 0, report(["ember-cli did not run the micro model"], r)
    r = run_binding(ember_build, micro_model, "m.generate([1], 2)", tmp_path)
    assert r.code == 1 and "accepted" in r.err, report(["the binding did not run it"], r)
