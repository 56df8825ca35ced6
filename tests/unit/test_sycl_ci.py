"""The generated release workflow builds the three SYCL entries where oneAPI DPC++ exists: the
Linux ones in the pinned intel/oneapi-basekit container (prepared before the checkout), the
Windows one on its runner after Intel's installer and setvars.bat; all with --on-ci-runner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kiln.build.toolchains.oneapi import CONTAINER, ONEAPI_VERSION
from kiln.ci.workflow import job_id, load_config, render
from kiln.matrix import load_matrix


@pytest.fixture(scope="module")
def jobs() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[2]
    m = load_matrix(root / "matrix")
    cfg = load_config(root / "ci" / "config.yaml", m)
    wf = yaml.safe_load(render(m, cfg, root / "ci").files["release.yml"])
    out: dict[str, Any] = wf["jobs"]
    return out


def _runs(job: dict[str, Any]) -> list[str]:
    return [str(s.get("run", "")) for s in job["steps"]]


@pytest.mark.parametrize("entry_id", ["ubuntu-sycl-fp32-x64", "ubuntu-sycl-fp16-x64"])
def test_linux_sycl_jobs_build_in_the_pinned_oneapi_container(jobs: dict[str, Any],
                                                              entry_id: str) -> None:
    job = jobs[job_id(entry_id)]
    assert job["container"] == CONTAINER
    assert CONTAINER.split(":", 1)[1].startswith(f"{ONEAPI_VERSION}.")  # a tag, not latest
    steps = job["steps"]
    uses = [s.get("uses", "") for s in steps]
    checkout = next(i for i, u in enumerate(uses) if u.startswith("actions/checkout@"))
    prepare = next(i for i, r in enumerate(_runs(job)) if "apt-get install" in r)
    assert prepare < checkout, "git must be in the container before the checkout"
    for tool in ("git", "cmake", "ninja-build", "ccache", "python3-venv"):
        assert tool in _runs(job)[prepare]
    assert f"kiln build {entry_id} --on-ci-runner --out dist" in _runs(job)
    assert not any(u.startswith("actions/setup-python@") for u in uses)


def test_windows_sycl_job_installs_oneapi_and_loads_setvars_before_building(
        jobs: dict[str, Any]) -> None:
    job = jobs[job_id("win-sycl-x64")]
    assert "container" not in job and job["runs-on"].startswith("windows-")
    runs = _runs(job)
    install = next(i for i, r in enumerate(runs) if "bootstrapper.exe" in r)
    assert "intel.oneapi.win.cpp-dpcpp-common" in runs[install]
    assert "vars.ONEAPI_WINDOWS_INSTALLER_URL" in str(job["steps"][install]["env"])
    setvars = next(i for i, r in enumerate(runs) if "setvars.bat" in r)
    assert "GITHUB_ENV" in runs[setvars] and job["steps"][setvars]["shell"] == "cmd"
    build = runs.index("kiln build win-sycl-x64 --on-ci-runner --out dist")
    assert install < setvars < build
