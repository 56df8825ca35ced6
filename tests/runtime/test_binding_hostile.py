"""The ctypes binding and the library against hostile arguments and hostile metadata.

- ``logits([])`` used to kill Python: a zero-length decode succeeded and the binding sliced the
  NULL logits pointer. It runs in a subprocess so that a crash fails the test instead of the
  session.
- ctypes keeps the low bits of an int too large for a C field (token id 2**32+1 became 1,
  n_ctx=2**32 became 0, i.e. the default 512), and a C string ends at its first NUL (a path
  with a NUL named another file). Every argument is now checked, with a message naming it and
  its range, before any C function is called: the tests swap the library for an object that
  fails on any use.
- A float64 GGUF hyperparameter beyond float32's range became inf and the model ran with
  garbage; loading now refuses it with EMBER_ERR_FORMAT, naming the key and the value.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import ROOT, TINY, EmberBuild
from micro_gguf import write_micro_model

GPT2 = TINY / "tiny-gpt2-f32.gguf"
EMBER_ERR_INVALID_ARGUMENT = 1
EMBER_ERR_FORMAT = 3


@pytest.fixture(scope="module")
def ember(ember_build: EmberBuild) -> Iterator[ModuleType]:
    mp = pytest.MonkeyPatch()
    mp.setenv("EMBER_LIBRARY", str(ember_build.library))
    mp.syspath_prepend(str(ROOT / "runtime" / "python"))
    sys.modules.pop("ember", None)
    mod = importlib.import_module("ember")
    yield mod
    mp.undo()


@pytest.fixture(scope="module")
def micro(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A micro model of 16 tokens (the ranges in the messages below)."""
    pytest.importorskip("gguf")
    return write_micro_model(tmp_path_factory.mktemp("micro") / "micro.gguf")


@pytest.fixture(scope="module")
def model(ember: ModuleType, micro: Path) -> Iterator[Any]:
    m = ember.Model(micro, n_ctx=64)
    yield m
    m.close()


class _NoLibrary:
    """Stands in for the ctypes library: any C function looked up is a test failure."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"{name} was called although the arguments are invalid")


def _without_c(m: Any, call: Callable[[], object]) -> None:
    real = m._lib
    m._lib = _NoLibrary()
    try:
        call()
    finally:
        m._lib = real


# ---- 1. zero tokens ---------------------------------------------------------------------


def test_logits_of_no_tokens_raises_instead_of_crashing(ember_build: EmberBuild) -> None:
    script = textwrap.dedent(
        f"""
        import ctypes, ember
        m = ember.Model({str(GPT2)!r})
        try:
            m.logits([])
        except ValueError as e:
            print("ValueError:", e)
        # the C API itself: a decode of zero tokens is an error, and no logits come back
        lib = m._lib
        st = lib.ember_decode(m._ctx, None, 0)
        print("status", st, lib.ember_context_last_error(m._ctx).decode())
        print("logits", bool(lib.ember_get_logits(m._ctx)))
        print("after", len(m.logits([1, 2])) == m.n_vocab)
        """
    )
    env = dict(os.environ, EMBER_LIBRARY=str(ember_build.library))
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "runtime" / "python"), env.get("PYTHONPATH", "")]
    )
    r = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert r.returncode == 0, f"the interpreter died ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    assert "ValueError: ids is empty" in r.stdout, r.stdout
    assert f"status {EMBER_ERR_INVALID_ARGUMENT} ember_decode: no tokens" in r.stdout, r.stdout
    assert "logits False" in r.stdout, r.stdout
    assert "after True" in r.stdout, r.stdout


def test_generate_from_an_empty_prompt_raises(model: Any) -> None:
    with pytest.raises(ValueError, match="prompt is empty"):
        _without_c(model, lambda: model.generate([], 4))


# ---- 2. arguments that C would truncate ---------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        (
            {"n_ctx": 2**32},
            ValueError,
            r"n_ctx must be an integer in \[1, 16777216\], got 4294967296",
        ),
        ({"n_ctx": 0}, ValueError, r"n_ctx .*\[1, 16777216\], got 0"),
        ({"n_ctx": -1}, ValueError, r"n_ctx .*got -1"),
        ({"n_ctx": 512.0}, TypeError, r"n_ctx must be an integer .* got float"),
        (
            {"n_threads": 2**32 + 1},
            ValueError,
            r"n_threads must be an integer in \[0, 1024\], got 4294967297",
        ),
        ({"n_threads": -1}, ValueError, r"n_threads .*got -1"),
        ({"n_threads": True}, TypeError, r"n_threads .* bool"),
        ({"kernel": "scalar\0avx2"}, ValueError, r"kernel must not contain a NUL byte"),
        ({"backend": "cpu\0"}, ValueError, r"backend must not contain a NUL byte"),
        ({"backend": 1}, TypeError, r"backend must be a str or None"),
    ],
    ids=lambda v: repr(v)[:40],
)
def test_model_arguments_are_checked_before_loading(
    ember: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    kwargs: dict[str, Any],
    error: type,
    pattern: str,
) -> None:
    def no_load() -> None:
        raise AssertionError("the library was used although the arguments are invalid")

    monkeypatch.setattr(ember, "_load", no_load)
    with pytest.raises(error, match=pattern):
        ember.Model(GPT2, **kwargs)


def test_path_with_a_nul_byte(
    ember: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # the part before the NUL exists: the old binding loaded it instead
    target = tmp_path / "m.gguf"
    target.write_bytes(GPT2.read_bytes())
    monkeypatch.setattr(ember, "_load", _NoLibrary().__getattr__)
    with pytest.raises(ValueError, match="path must not contain a NUL byte"):
        ember.Model(str(target) + "\0.other")


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        (
            {"temperature": float("nan")},
            ValueError,
            r"temperature must be a finite number in \[0, 100\], got nan",
        ),
        ({"temperature": float("inf")}, ValueError, r"temperature .*got inf"),
        ({"temperature": 1e300}, ValueError, r"temperature .*got 1e\+300"),
        ({"temperature": -0.5}, ValueError, r"temperature .*\[0, 100\]"),
        ({"temperature": "0.7"}, TypeError, r"temperature must be a number .* got str"),
        ({"temperature": 10**400}, ValueError, r"temperature must be a number in \[0, 100\]"),
        ({"top_p": 1.5}, ValueError, r"top_p must be a finite number in \[0, 1\], got 1.5"),
        ({"top_p": float("nan")}, ValueError, r"top_p .*got nan"),
        ({"min_p": -0.1}, ValueError, r"min_p .*\[0, 1\]"),
        ({"repeat_penalty": float("inf")}, ValueError, r"repeat_penalty .*\[0, 100\], got inf"),
        (
            {"seed": -1},
            ValueError,
            r"seed must be an integer in \[0, 18446744073709551615\], got -1",
        ),
        ({"seed": 2**64}, ValueError, r"seed .*got 18446744073709551616"),
        ({"seed": 1.5}, TypeError, r"seed must be an integer"),
        (
            {"top_k": 2**31},
            ValueError,
            r"top_k must be an integer in \[0, 2147483647\], got 2147483648",
        ),
        ({"top_k": -1}, ValueError, r"top_k .*got -1"),
        (
            {"repeat_last_n": 2**32 + 64},
            ValueError,
            r"repeat_last_n must be an integer in \[0, 1048576\]",
        ),
        ({"repeat_last_n": -1}, ValueError, r"repeat_last_n .*got -1"),
        ({"n_tokens": -1}, ValueError, r"n_tokens must be an integer in \[0, 16777216\], got -1"),
        ({"n_tokens": 2**64 + 4}, ValueError, r"n_tokens .*got 18446744073709551620"),
        (
            {"prompt": [1, 2**32 + 1]},
            ValueError,
            r"prompt\[1\] must be an integer in \[0, 15\], got 4294967297",
        ),
        ({"prompt": [-1]}, ValueError, r"prompt\[0\] .*got -1"),
        ({"prompt": [16]}, ValueError, r"prompt\[0\] .*\[0, 15\], got 16"),
        ({"prompt": [1.0]}, TypeError, r"prompt\[0\] must be an integer"),
    ],
    ids=lambda v: repr(v)[:40],
)
def test_generate_arguments_are_checked_before_c(
    model: Any, kwargs: dict[str, Any], error: type, pattern: str
) -> None:
    assert model.n_vocab == 16  # the ranges in the patterns
    args: dict[str, Any] = {"prompt": [1, 2], "n_tokens": 4, **kwargs}
    with pytest.raises(error, match=pattern):
        _without_c(model, lambda: model.generate(args.pop("prompt"), args.pop("n_tokens"), **args))


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (
            lambda m: m.logits([2**32 + 1]),
            ValueError,
            r"ids\[0\] must be an integer in \[0, 15\], got 4294967297",
        ),
        (lambda m: m.logits([1, -(2**32) + 1]), ValueError, r"ids\[1\] .*got -4294967295"),
        (lambda m: m.logits("ab"), TypeError, r"ids must be a sequence of token ids"),
        (lambda m: m.token_bytes(2**32 + 1), ValueError, r"token must be an integer in \[0, 15\]"),
        (lambda m: m.detokenize([1, 2**32 + 2]), ValueError, r"ids\[1\] .*got 4294967298"),
        (lambda m: m.meta("general.name\0x"), ValueError, r"key must not contain a NUL byte"),
        (lambda m: m.tokenize(5), TypeError, r"text must be str or bytes, got int"),
        (lambda m: m.generate(b"ab", 2), TypeError, r"prompt must be a sequence of token ids"),
    ],
    ids=[
        "logits-big",
        "logits-negative",
        "logits-str",
        "token_bytes",
        "detokenize",
        "meta-nul",
        "tokenize-int",
        "generate-bytes",
    ],
)
def test_token_and_key_arguments_are_checked_before_c(
    model: Any, call: Callable[[Any], object], error: type, pattern: str
) -> None:
    with pytest.raises(error, match=pattern):
        _without_c(model, lambda: call(model))


def test_valid_arguments_still_work(ember: ModuleType, model: Any) -> None:
    ids = model.tokenize("abc de")
    assert len(model.logits(ids)) == model.n_vocab
    g = model.generate(
        ids,
        4,
        temperature=0.7,
        seed=2**64 - 1,
        top_k=0,
        top_p=1.0,
        min_p=0.0,
        repeat_penalty=1.1,
        repeat_last_n=0,
        ignore_eos=True,
    )
    assert len(g.ids) == 4
    assert model.detokenize(ids) == "abc de"
    assert model.meta("general.name") == "micro"
    assert model.meta("llama.context_length") is None  # not a string
    with ember.Model(GPT2, n_ctx=128, n_threads=1, kernel="scalar", backend="cpu") as m:
        assert m.generate(ids, 2, ignore_eos=True).ids


# ---- 2b. float metadata beyond float32 ---------------------------------------------------


def _micro_with(
    path: Path, monkeypatch: pytest.MonkeyPatch, key: str, value: float, as_f64: bool
) -> Path:
    """A micro model whose float key ``key`` holds ``value`` (float64 or float32), written
    in place of the writer's own value for that key, or added when the writer has none."""
    gguf = pytest.importorskip("gguf")
    real_f32 = gguf.GGUFWriter.add_float32
    real_vocab = gguf.GGUFWriter.add_vocab_size
    written: list[str] = []

    def put(w: Any) -> None:
        written.append(key)
        if as_f64:
            w.add_float64(key, value)
        else:
            real_f32(w, key, value)

    def add_float32(w: Any, k: str, v: float) -> None:
        if k == key:
            put(w)
        else:
            real_f32(w, k, v)

    def add_vocab_size(w: Any, n: int) -> None:
        real_vocab(w, n)
        if key not in written:
            put(w)

    with monkeypatch.context() as mp:
        mp.setattr(gguf.GGUFWriter, "add_float32", add_float32)
        mp.setattr(gguf.GGUFWriter, "add_vocab_size", add_vocab_size)
        write_micro_model(path)
    assert written == [key]
    return path


@pytest.mark.parametrize(
    ("key", "value", "as_f64", "pattern"),
    [
        (
            "llama.attention.layer_norm_rms_epsilon",
            1e300,
            True,
            r"value 1e\+300 is out of range \[0, 1\]",
        ),
        ("llama.attention.layer_norm_rms_epsilon", -1e300, True, r"value -1e\+300 is out of range"),
        ("llama.attention.layer_norm_rms_epsilon", float("inf"), False, r"value inf is not finite"),
        ("llama.attention.layer_norm_rms_epsilon", float("nan"), False, r"value nan is not finite"),
        ("llama.attention.layer_norm_rms_epsilon", 2.0, False, r"value 2 is out of range \[0, 1\]"),
        ("llama.rope.freq_base", 1e300, True, r"value 1e\+300 is out of range \[0, 1e\+12\]"),
        ("llama.rope.freq_base", -10000.0, False, r"value -10000 is out of range"),
        ("llama.rope.freq_base", 0.0, False, r"value 0 must be positive"),
        ("llama.rope.scaling.factor", 1e300, True, r"value 1e\+300 is out of range \[0, 1e\+06\]"),
        ("llama.rope.scaling.factor", 1e-45, False, r"value 1\.4013e-45 has no finite inverse"),
        ("llama.rope.scale_linear", 1e39, True, r"value 1e\+39 is out of range"),
        (
            "llama.rope.scaling.attn_factor",
            1e300,
            True,
            r"value 1e\+300 is out of range \[0, 100\]",
        ),
        (
            "llama.rope.scaling.yarn_log_multiplier",
            -1.0,
            False,
            r"value -1 is out of range \[0, 100\]",
        ),
    ],
    ids=lambda v: repr(v)[:40],
)
def test_float_metadata_out_of_range_is_a_format_error(
    ember: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    key: str,
    value: float,
    as_f64: bool,
    pattern: str,
) -> None:
    path = _micro_with(tmp_path / "hostile.gguf", monkeypatch, key, value, as_f64)
    with pytest.raises(ember.EmberError, match=f"metadata key '{key}': {pattern}") as e:
        ember.Model(path)
    assert e.value.status == EMBER_ERR_FORMAT


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("llama.attention.layer_norm_rms_epsilon", 1e-6),
        ("llama.rope.freq_base", 5e8),
        ("llama.rope.scaling.factor", 8.0),
        ("llama.rope.scaling.attn_factor", 0.5),
    ],
)
def test_plausible_float_metadata_loads(
    ember: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, key: str, value: float
) -> None:
    path = _micro_with(tmp_path / "ok.gguf", monkeypatch, key, value, as_f64=True)
    with ember.Model(path) as m:
        assert len(m.logits([1, 2, 3])) == m.n_vocab
