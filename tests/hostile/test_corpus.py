"""The corpus itself: every class of the hardening contract has a case for each consumer it
applies to, every (case, consumer) pair has a runner, and the hostile archives hold what their
cases say they hold (a tar writer that quietly drops the hostile part would make a case
pass for the wrong reason)."""

from __future__ import annotations

import io
import tarfile

import pytest

from . import test_ember, test_installers, test_publish, test_sdist
from .conftest import Hostile
from .corpus import (
    CONSUMERS,
    CONTRACT_CLASSES,
    DEEP,
    INSTALLERS,
    all_cases,
    asset_name,
    figures,
    top_dir,
)


@pytest.mark.parametrize("klass", sorted(CONTRACT_CLASSES))
def test_every_contract_class_has_cases_for_its_consumers(klass: str) -> None:
    cases = [c for c in all_cases() if c.klass == klass]
    lacking = [consumer for consumer in CONTRACT_CLASSES[klass]
               if not any(consumer in c.consumers for c in cases)]
    assert not lacking, f"class {klass} has no case for {lacking}"


def test_every_case_belongs_to_a_contract_class() -> None:
    for c in all_cases():
        assert c.klass in CONTRACT_CLASSES, c.name
        assert set(c.consumers) <= set(CONTRACT_CLASSES[c.klass]) <= set(CONSUMERS), c.name
        for consumer in c.consumers:
            assert c.expect_for(consumer).codes, (c.name, consumer)


def test_every_case_and_consumer_has_a_runner() -> None:
    want = {(consumer, c.name) for c in all_cases() for consumer in c.consumers}
    have = {tuple(p.values) for p in (*test_installers.PARAMS, *test_publish.PARAMS,
                                      *test_ember.PARAMS, *test_sdist.PARAMS)}
    assert have == want, (sorted(want - have)[:5], sorted(have - want)[:5])
    assert sum(figures().values()) == len(want)


@pytest.mark.integration
def test_hostile_archives_hold_their_hostile_members(hostile: Hostile) -> None:
    for c in all_cases():
        if not set(INSTALLERS) <= set(c.consumers) or c.mirror is None \
                or not c.name.startswith("member-"):
            continue
        case = hostile.cases[c.name]
        assert case.mirror is not None
        spec = case.mirror.releases[0]
        mirror = hostile.builder.mirror(case)
        data = (mirror / spec.tag / asset_name(spec.tag)).read_bytes()
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            members = tar.getmembers()
        got = [(m.name, m.type, m.mode, m.linkname) for m in members]
        for want in spec.members:
            name = want.name.rstrip("/") if want.kind == tarfile.DIRTYPE else want.name
            assert (name, want.kind, want.mode, want.linkname) in got, (c.name, want, got)
        # what the case leaves out of the honest tree is not there (unless put back changed)
        top = top_dir(spec.tag)
        kept = {m.name.rstrip("/") for m in spec.members}
        for dropped in spec.drop:
            name = f"{top}/{dropped}"
            assert name in kept or not any(m.name == name for m in members), (c.name, name)
    # the climbing members really climb out of any test directory
    assert DEEP.count("..") >= 10
