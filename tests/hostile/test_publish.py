"""Every publish case against ``kiln publish DIR --to file://MIRROR`` (a mirror already holding
an honest b9) and ``--to github://OWNER/REPO`` (the GitHub stand-in on 127.0.0.1): the
publisher must refuse with the documented exit code and a message naming what is wrong, leave
the mirror byte for byte as it was (on GitHub: make no request that changes anything), leave
the release directory as it was, and write nothing anywhere else."""

from __future__ import annotations

import functools
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .checks import Run, diff, outcome_problems, pwned, report, run, tree
from .conftest import REPO, Hostile
from .corpus import COMMIT, INSTALLED, NEW, PUB_FILE, PUBLISHERS, Case, ReleaseSpec, all_cases

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("hostile-publish")]

PARAMS = [pytest.param(consumer, c.name, id=f"{consumer}:{c.name}")
          for c in all_cases() for consumer in PUBLISHERS if consumer in c.consumers]
OWNER, NAME = "ember-ml", "ember"
TOKEN = "ghp_hostileCORPUS0123456789abcdefTOKEN"


@functools.cache
def _standin_module() -> object:
    from .conftest import _load

    return _load("hostile_github_standin", REPO / "tests" / "integration" / "github_standin.py")


def env_for(tmp: Path) -> dict[str, str]:
    for d in ("home", "tmpdir", "cwd"):
        (tmp / d).mkdir(parents=True, exist_ok=True)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp / "home"),
            "LANG": "C.UTF-8", "TMPDIR": str(tmp / "tmpdir"),
            "KILN_CACHE_DIR": str(tmp / "kiln-cache"), "XDG_CACHE_HOME": str(tmp / "xdg")}


def publish(directory: Path, to: str, tmp: Path, extra_env: dict[str, str] | None = None
            ) -> Run:
    env = {**env_for(tmp), **(extra_env or {})}
    return run([sys.executable, "-m", "kiln", "publish", str(directory), "--to", to],
               env=env, cwd=tmp / "cwd", timeout=120)


@pytest.fixture(scope="session")
def b9_mirror(hostile: Hostile, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mirror holding an honest b9, published by kiln itself."""
    tmp = tmp_path_factory.mktemp("b9-mirror")
    release = hostile.root / "b9-release"
    hostile.builder.write_release(release, ReleaseSpec(tag=INSTALLED), full=True)
    mirror = tmp / "mirror"
    r = publish(release, f"file://{mirror}", tmp)
    assert r.code == 0, report(["publishing an honest b9 failed"], r)
    return mirror


@pytest.fixture
def standin() -> Iterator[object]:
    mod = _standin_module()
    s = mod.StandIn(OWNER, NAME, TOKEN)  # type: ignore[attr-defined]
    s.commits.add(COMMIT)
    with s.running():
        yield s


def _check_common(problems: list[str], r: Run, hostile: Hostile, release: Path,
                  release_before: dict[str, tuple[str, ...]], tmp: Path,
                  tmp_before: dict[str, tuple[str, ...]]) -> None:
    if tree(release) != release_before:
        problems.append("the release directory changed: "
                        + ", ".join(diff(release_before, tree(release))[:8]))
    outside = [d for d in diff(tmp_before, tree(tmp, skip=(tmp / "kiln-cache",)))
               if not d.startswith(("added kiln-cache", "added xdg"))]
    if outside:
        problems.append("written outside the mirror: " + ", ".join(outside[:8]))
    marks = pwned((tmp, hostile.root), shallow=(REPO, Path.cwd()))
    if marks:
        problems.append("an injected command ran: " + ", ".join(marks))


@pytest.mark.parametrize(("consumer", "name"), PARAMS)
def test_publisher_refuses(consumer: str, name: str, hostile: Hostile, b9_mirror: Path,
                           tmp_path: Path, request: pytest.FixtureRequest,
                           record_property: pytest.RecordProperty) -> None:
    record_property("hostile", f"{consumer}:{name}")
    case = hostile.cases[name]
    release = hostile.builder.release_dir(case)
    release_before = tree(release)
    env_for(tmp_path)
    if consumer == PUB_FILE:
        mirror = tmp_path / "site" / "mirror"
        shutil.copytree(b9_mirror, mirror, symlinks=True)
        for planted in case.planted:
            elsewhere = tmp_path / "elsewhere" / planted
            elsewhere.mkdir(parents=True)
            (mirror / planted).symlink_to(elsewhere, target_is_directory=True)
        tmp_before = tree(tmp_path, skip=(tmp_path / "kiln-cache",))
        r = publish(release, f"file://{mirror}", tmp_path)
        problems = outcome_problems(r, case.expect_for(consumer))
        # The mirror is inside tmp_path: the tree comparison covers it byte for byte.
        _check_common(problems, r, hostile, release, release_before, tmp_path, tmp_before)
    else:
        s = request.getfixturevalue("standin")
        tmp_before = tree(tmp_path, skip=(tmp_path / "kiln-cache",))
        r = publish(release, f"github://{OWNER}/{NAME}", tmp_path,
                    {"GITHUB_TOKEN": TOKEN, "GITHUB_API_URL": s.api_url})
        problems = outcome_problems(r, case.expect_for(consumer))
        writes = [f"{m} {p} -> {st}" for m, p, st in s.requests if m != "GET"]
        if writes:
            problems.append("the publisher changed the GitHub side: " + ", ".join(writes[:6]))
        if s.releases or s.refs:
            problems.append(f"releases or tags were made: {sorted(s.refs)}")
        _check_common(problems, r, hostile, release, release_before, tmp_path, tmp_before)
        if TOKEN in r.out + r.err:
            problems.append("the token was printed")
    assert not problems, f"{consumer} {name}: " + report(problems, r)


@pytest.mark.parametrize("consumer", PUBLISHERS)
def test_control_publishes_an_honest_release(consumer: str, hostile: Hostile,
                                            b9_mirror: Path, tmp_path: Path,
                                            request: pytest.FixtureRequest) -> None:
    """The harness itself: an honest b10 publishes to both destinations."""
    control = Case(name="control-honest-b10", klass="control", consumers=PUBLISHERS,
                   release=ReleaseSpec(), expect=all_cases()[0].expect)
    release = hostile.builder.release_dir(control)
    env_for(tmp_path)
    if consumer == PUB_FILE:
        mirror = tmp_path / "mirror"
        shutil.copytree(b9_mirror, mirror, symlinks=True)
        r = publish(release, f"file://{mirror}", tmp_path)
        assert r.code == 0, report(["the honest release was not published"], r)
        assert (mirror / "latest").read_text(encoding="utf-8").strip() == NEW
        assert (mirror / NEW / "SHA256SUMS").read_bytes() == (release / "SHA256SUMS").read_bytes()
    else:
        s = request.getfixturevalue("standin")
        r = publish(release, f"github://{OWNER}/{NAME}", tmp_path,
                    {"GITHUB_TOKEN": TOKEN, "GITHUB_API_URL": s.api_url})
        assert r.code == 0, report(["the honest release was not published"], r)
        rels = s.releases_of(NEW)
        assert len(rels) == 1 and not rels[0].draft


def test_publishing_an_older_release_keeps_latest(hostile: Hostile, b9_mirror: Path,
                                                  tmp_path: Path) -> None:
    """A late publish of an older release must not turn the mirror's latest back in time."""
    older = Case(name="control-older-b3", klass="control", consumers=(PUB_FILE,),
                 release=ReleaseSpec(tag="b3"), expect=all_cases()[0].expect)
    release = hostile.builder.release_dir(older)
    env_for(tmp_path)
    mirror = tmp_path / "mirror"
    shutil.copytree(b9_mirror, mirror, symlinks=True)
    r = publish(release, f"file://{mirror}", tmp_path)
    assert r.code == 0, report(["the older release was not published"], r)
    assert (mirror / "b3" / "SHA256SUMS").is_file()
    assert (mirror / "latest").read_text(encoding="utf-8").strip() == INSTALLED
