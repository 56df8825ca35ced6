"""``kiln verify DIR --key KEY`` against the release directory of every case the publishers get
(``Case.release``): a release that a publisher must refuse (a bad signature, a checksum or
name that does not hold, a tag or record field out of the contract, a hostile asset name) must
fail verification too, with exit 9 (release) or 12 (integrity) and a message, must leave the
release directory as it was and must write nothing anywhere else. ``kiln verify`` reads the
archives to re-measure their floors, so the hostile archives meet it too.

Cases that are only about the destination (a link planted in the mirror) do not apply: the
release itself is honest there, and ``kiln verify`` must pass it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from .checks import report, run, tree
from .conftest import REPO, Hostile
from .corpus import PUB_FILE, all_cases
from .test_publish import _check_common, env_for

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("hostile-verify")]

# Classes about the publish destination, not the release directory.
DESTINATION_ONLY = {"publish-planted-link"}
CASES = [c.name for c in all_cases() if c.release is not None and PUB_FILE in c.consumers]


def _env(tmp: Path) -> dict[str, str]:
    return env_for(tmp)


@pytest.mark.parametrize("name", CASES)
def test_kiln_verify_refuses_what_a_publisher_refuses(name: str, hostile: Hostile,
                                                      tmp_path: Path) -> None:
    case = hostile.cases[name]
    release = hostile.builder.release_dir(case)
    release_before = tree(release)
    env = _env(tmp_path)
    tmp_before = tree(tmp_path, skip=(tmp_path / "kiln-cache",))
    r = run([sys.executable, "-m", "kiln", "verify", str(release), "--key", str(hostile.pubkey)],
            env=env, cwd=tmp_path / "cwd", timeout=120)
    problems = []
    if case.klass in DESTINATION_ONLY:
        if r.code != 0:
            problems.append(f"an honest release failed verification (exit {r.code})")
    else:
        if r.code not in (9, 12):
            problems.append(f"exit {r.code}, want 9 or 12 (the release must not verify)")
        if not (r.err.strip() or r.out.strip()):
            problems.append("no message")
    _check_common(problems, r, hostile, release, release_before, tmp_path, tmp_before)
    assert not problems, f"kiln verify {name}: " + report(problems, r)


@pytest.mark.parametrize("name", CASES)
def test_kiln_reproduce_refuses_before_it_rebuilds(name: str, hostile: Hostile,
                                                    tmp_path: Path) -> None:
    """``kiln reproduce --release DIR`` checks the release as a publisher does before it looks
    for the commit: a hostile release is refused (9 or 12), an honest one gets as far as the
    commit, which is not in the repository it runs in (2)."""
    case = hostile.cases[name]
    release = hostile.builder.release_dir(case)
    release_before = tree(release)
    env = _env(tmp_path)
    tmp_before = tree(tmp_path, skip=(tmp_path / "kiln-cache",))
    r = run([sys.executable, "-m", "kiln", "reproduce", "--release", str(release),
             "--public-key", str(hostile.pubkey), "--report-dir", str(tmp_path / "report")],
            env=env, cwd=REPO, timeout=120)
    want = (2,) if case.klass in DESTINATION_ONLY else (9, 12)
    problems = [] if r.code in want else [f"exit {r.code}, want {want}"]
    _check_common(problems, r, hostile, release, release_before, tmp_path, tmp_before)
    assert not problems, f"kiln reproduce {name}: " + report(problems, r)
