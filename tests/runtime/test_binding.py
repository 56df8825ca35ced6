"""The ctypes binding (runtime/python/ember): loading, tokenizing, generating, errors, and two
models alive in one process giving the same results as each alone."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from conftest import ROOT, TINY, EmberBuild

GPT2 = TINY / "tiny-gpt2-f32.gguf"
SPM = TINY / "tiny-spm-q8_0.gguf"


@pytest.fixture(scope="module")
def ember(ember_build: EmberBuild) -> Iterator[ModuleType]:
    mp = pytest.MonkeyPatch()
    mp.setenv("EMBER_LIBRARY", str(ember_build.library))
    mp.syspath_prepend(str(ROOT / "runtime" / "python"))
    sys.modules.pop("ember", None)
    mod = importlib.import_module("ember")
    yield mod
    mp.undo()


def test_version_and_library(ember: ModuleType) -> None:
    assert ember.version().count(".") == 2
    assert ember.library_path().exists()


def test_two_models_in_one_process(ember: ModuleType) -> None:
    a_alone = ember.Model(GPT2).generate("Hello world", 12, ignore_eos=True)
    b_alone = ember.Model(SPM).generate("Hello world", 12, ignore_eos=True)
    a, b = ember.Model(GPT2), ember.Model(SPM)
    # interleave the two: no state may leak from one to the other
    a1 = a.generate("Hello world", 12, ignore_eos=True)
    b1 = b.generate("Hello world", 12, ignore_eos=True)
    a2 = a.generate("Hello world", 12, ignore_eos=True)
    assert a1 == a2 == a_alone
    assert b1 == b_alone
    assert a.tokenize("Hello world") != b.tokenize("Hello world")
    a.close()
    b.close()


def test_generate_returns_ids_and_text(ember: ModuleType) -> None:
    with ember.Model(GPT2) as m:
        g = m.generate("The quick brown fox", 8, temperature=0, ignore_eos=True)
        assert len(g.ids) == 8 and isinstance(g.text, str)
        assert g.prompt_ids == m.tokenize("The quick brown fox")
        assert m.generate(g.prompt_ids, 8, ignore_eos=True) == g
        s1 = m.generate("The quick", 8, temperature=1.0, seed=5, ignore_eos=True)
        s2 = m.generate("The quick", 8, temperature=1.0, seed=5, ignore_eos=True)
        assert s1 == s2
        assert len(m.logits(g.prompt_ids)) == m.n_vocab
        assert m.meta("general.architecture") == "llama"


def test_errors_raise(ember: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(ember.EmberError, match="cannot open"):
        ember.Model(tmp_path / "missing.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00")
    with pytest.raises(ember.EmberError, match="truncated"):
        ember.Model(bad)
    m = ember.Model(GPT2, n_ctx=16)
    with pytest.raises(ember.EmberError, match="context full"):
        m.generate(list(range(20)), 4)
    m.close()
    with pytest.raises(ember.EmberError):
        m.tokenize("x")
