"""kiln/verify/base.py's unicode_check: a non-ASCII prompt on the command line and the model
under a non-ASCII folder must give the ids of the same prompt read from a UTF-8 file.

A stand-in for ember-cli (kiln.run.run replaced in-process) tokenizes the prompt's UTF-8
bytes; in the "ansi" modes it sees the prompt or the model path as a Windows program reading
main()'s ANSI argv does: every character outside the code page is '?'.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from ember_project import EMBER, EMBER_LAYOUT, NAMES

from kiln.build.toolchains.recipe import load_verify_spec
from kiln.matrix import load_matrix
from kiln.plan import make_job
from kiln.run import Completed
from kiln.verify import base
from kiln.verify.base import UNICODE_PROMPT, VerifyContext, unicode_check


def _ansi(s: str) -> str:
    """What a Windows-1252 argv makes of s: characters outside the code page become '?'."""
    return s.encode("cp1252", errors="replace").decode("cp1252")


def fake_cli(mode: str):  # type: ignore[no-untyped-def]
    """kiln.run.run standing in for ember-cli: prompt ids are the prompt's UTF-8 bytes."""

    def run(argv, *, env=None, cwd=None, check=True, timeout=None, what=None):  # type: ignore[no-untyped-def]
        args = [str(a) for a in argv][1:]
        opts = dict(zip(args[::2], args[1::2], strict=False))
        model = _ansi(opts["-m"]) if mode == "ansi-path" else opts["-m"]
        if not Path(model).is_file():
            return Completed(argv=tuple(argv), returncode=2, stdout="",
                             stderr=f"ember-cli: error: {model}: cannot open file")
        if "-p" in opts:
            data = (opts["-p"] if mode != "ansi" else _ansi(opts["-p"])).encode()
        else:
            data = Path(opts["-f"]).read_bytes()
        n = int(opts["-n"])
        out = {"prompt_ids": list(data), "generated_ids": [len(data) % 7] * n, "text": ""}
        return Completed(argv=tuple(argv), returncode=0, stdout=json.dumps(out), stderr="")

    return run


@pytest.fixture
def ctx(repo_root: Path, tmp_path: Path) -> VerifyContext:
    spec = load_verify_spec(repo_root / "recipes")
    job = make_job(load_matrix(repo_root / "matrix").get("ubuntu-x64"), 1, NAMES)
    return VerifyContext(job=job, stage=tmp_path, spec=spec, env={},
                         layout=EMBER_LAYOUT, smoke=EMBER.smoke,
                         log_file=tmp_path / "v.log",
                         model=None, reference_ids=None)


def _check(ctx: VerifyContext, tmp_path: Path, mode: str):  # type: ignore[no-untyped-def]
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(base, "run", fake_cli(mode))
        return unicode_check(ctx, how="ran natively", prefix=[], exe=tmp_path / "ember-cli",
                             model=model, env={})


def test_a_program_that_keeps_the_text_passes(ctx: VerifyContext, tmp_path: Path) -> None:
    check = _check(ctx, tmp_path, "utf8")
    assert check.ok, check.detail
    n = len(UNICODE_PROMPT.encode())
    assert f"{n} prompt ids and {ctx.spec.run.n_predict} generated ids identical" in check.detail
    # both runs are logged, the -p one with the prompt as given
    assert UNICODE_PROMPT in (tmp_path / "v.log").read_text(encoding="utf-8")


def test_an_ansi_command_line_fails(ctx: VerifyContext, tmp_path: Path) -> None:
    check = _check(ctx, tmp_path, "ansi")
    assert not check.ok
    assert "non-ASCII prompt and model path" in check.name
    assert check.detail.startswith(f"-p {UNICODE_PROMPT!r} tokenizes to [")
    assert "the command line lost characters" in check.detail


def test_embers_two_runs_are_its_kiln_toml_commands(ctx: VerifyContext, tmp_path: Path) -> None:
    """The command lines ember-cli got before kiln.toml said them: -p on the command line, -f
    for the UTF-8 file."""
    seen: list[list[str]] = []
    inner = fake_cli("utf8")

    def run(argv, **kw):  # type: ignore[no-untyped-def]
        seen.append([str(a) for a in argv])
        return inner(argv, **kw)

    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(base, "run", run)
        check = unicode_check(ctx, how="ran natively", prefix=[], exe=tmp_path / "cli",
                              model=model, env={})
    assert check.ok, check.detail
    r = ctx.spec.run
    common = ["-n", str(r.n_predict), "--temp", "0", "--ignore-eos", "-t", str(r.threads),
              "--json"]
    by_arg, by_file = seen
    assert by_arg[:2] == [str(tmp_path / "cli"), "-m"]
    assert by_arg[2].endswith(f"{base.UNICODE_DIR}/model.gguf")
    assert by_arg[3:] == ["-p", UNICODE_PROMPT, *common]
    assert by_file[:4] == [str(tmp_path / "cli"), "-m", str(model), "-f"]
    assert by_file[4].endswith(f"{base.UNICODE_DIR}/prompt.txt") and by_file[5:] == common


def test_another_projects_flags_come_from_kiln_toml(ctx: VerifyContext, tmp_path: Path) -> None:
    smoke = dataclasses.replace(
        ctx.smoke, program="demo-cli",
        args=("-m", "{model}", "-p", "{prompt}", "-n", "{n_predict}"),
        prompt_file_args=("-m", "{model}", "-f", "{prompt_file}", "-n", "{n_predict}"))
    other = VerifyContext(**{**ctx.__dict__, "smoke": smoke})
    assert _check(other, tmp_path, "utf8").ok
    # without prompt_file_args: skipped, and nothing is run
    skip = dataclasses.replace(smoke, prompt_file_args=())
    model = tmp_path / "model.gguf"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(base, "run", None)
        check = unicode_check(VerifyContext(**{**ctx.__dict__, "smoke": skip}),
                              how="ran natively", prefix=[], exe=tmp_path / "demo-cli",
                              model=model, env={})
    assert check.ok and check.detail.startswith("skipped: kiln.toml has no "
                                                "smoke.prompt_file_args")
    assert "demo-cli's non-ASCII command line is not compared" in check.detail


def test_an_ansi_model_path_fails(ctx: VerifyContext, tmp_path: Path) -> None:
    check = _check(ctx, tmp_path, "ansi-path")
    assert not check.ok
    assert "exited with 2" in check.detail and "cannot open file" in check.detail


def test_the_prompt_mixes_scripts() -> None:
    assert any(ord(c) > 0xFF for c in UNICODE_PROMPT)  # outside every Latin code page
    assert any(0x7F < ord(c) <= 0xFF for c in UNICODE_PROMPT)  # Latin accents
