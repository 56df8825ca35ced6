"""The Windows ember-cli takes non-ASCII text and file names from its command line.

main()'s argv on Windows is in the ANSI code page, so a prompt mixing Latin accents and CJK
reached the tokenizer as '?' and a model path with such characters could not be opened.
ember-cli now reads the UTF-16 command line and opens files with wide-character calls. The
win-x64 build runs under wine here and must give the native build's token ids.

Needs ``python -m ziglang`` (the build of test_cross.py) and wine; missing tools skip.
``EMBER_WIN_BUILD_DIR`` points the tests at an existing Windows build instead.
Integration: the first Windows build fills zig's cache (minutes).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import TINY, EmberBuild, build_cache_dir, run_cli
from test_cross import _cross_build, _zig_available

pytestmark = pytest.mark.integration

PROMPT = "Café naïve — 東京の天気は？"
MODEL = TINY / "tiny-gpt2-f32.gguf"
ARGS = ["-n", "4", "--ignore-eos", "--json", "-t", "1"]


def _windows_path(path: Path) -> str:
    return "Z:" + str(path).replace("/", "\\")


@pytest.fixture(scope="module")
def wine_run(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """A function running the win-x64 ember-cli.exe under wine with the given arguments."""
    wine = shutil.which("wine64") or shutil.which("wine")
    if wine is None:
        pytest.skip("wine is not installed (apt-get install wine64)")
    if not _zig_available():
        pytest.skip("zig is not installed (pip install ziglang==0.17.1)")
    if shutil.which("cmake") is None or shutil.which("ninja") is None:
        pytest.skip("cmake and ninja are needed")
    cache = build_cache_dir(request)
    exe = Path(os.environ.get("EMBER_WIN_BUILD_DIR") or _cross_build(cache, "x86_64-windows-gnu"))
    env = dict(os.environ)
    # wine decodes the Unix command line with the locale's charset: make it UTF-8
    env.update(
        {
            "WINEPREFIX": str(cache / "wine-prefix"),
            "WINEDEBUG": "-all",
            "WINEARCH": "win64",
            "WINEDLLOVERRIDES": "mscoree,mshtml=",
            "LC_ALL": "C.UTF-8",
        }
    )
    env.pop("DISPLAY", None)

    def run(args: list[str], tool: str = "ember-cli.exe") -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [wine, str(exe / tool), *args], capture_output=True, timeout=600, env=env, cwd=exe
        )

    return run


def _ids(stdout: bytes) -> tuple[list[int], list[int], str]:
    for line in reversed(stdout.decode("utf-8").splitlines()):
        if line.strip().startswith("{"):
            d = json.loads(line)
            return d["prompt_ids"], d["generated_ids"], d["text"]
    raise AssertionError(f"no JSON object in {stdout!r}")


def test_non_ascii_prompt_and_model_path_match_native(
    wine_run, ember_build: EmberBuild, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    native = run_cli(ember_build, ["-m", str(MODEL), "-p", PROMPT, *ARGS])
    assert native.returncode == 0, native.stderr.decode()
    want = _ids(native.stdout)

    # the prompt alone (ASCII model path)
    win = wine_run(["-m", _windows_path(MODEL), "-p", PROMPT, *ARGS])
    assert win.returncode == 0, win.stderr.decode(errors="replace")
    assert _ids(win.stdout) == want, "the prompt lost characters on the command line"

    # and the model under a non-ASCII folder
    folder = tmp_path / "modèles 東京"
    folder.mkdir()
    model = folder / "tiny-gpt2-f32.gguf"
    shutil.copyfile(MODEL, model)

    win = wine_run(["-m", _windows_path(model), "-p", PROMPT, *ARGS])
    assert win.returncode == 0, win.stderr.decode(errors="replace")
    assert _ids(win.stdout) == want

    # the same prompt from a file with a non-ASCII name (the bytes of the file are UTF-8)
    prompt_file = folder / "invite-プロンプト.txt"
    prompt_file.write_bytes(PROMPT.encode())
    win_f = wine_run(["-m", _windows_path(model), "-f", _windows_path(prompt_file), *ARGS])
    assert win_f.returncode == 0, win_f.stderr.decode(errors="replace")
    assert _ids(win_f.stdout) == want


def test_ember_bench_opens_a_model_under_a_non_ascii_path(
    wine_run, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "modèles 東京"
    folder.mkdir()
    model = folder / "tiny-gpt2-f32.gguf"
    shutil.copyfile(MODEL, model)
    r = wine_run(["-m", _windows_path(model), "-p", "4", "-n", "2", "--json"],
                 tool="ember-bench.exe")
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert b'"pp"' in r.stdout or b"pp" in r.stdout


def test_non_ascii_path_in_an_error_message(wine_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "nëxistë-東京.gguf"
    r = wine_run(["-m", _windows_path(missing), "-p", "x"])
    assert r.returncode == 2
    # stderr is a pipe: the UTF-8 bytes as they are, the name intact
    assert "nëxistë-東京.gguf" in r.stderr.decode("utf-8", errors="replace")


@pytest.mark.parametrize(
    "prompt",
    [
        'say "hi" — «ok»',
        'C:\\dir\\ and \\"x\\" end\\',
        "tab\there  two  spaces",
        "",
    ],
)
def test_command_line_splitting_matches_native(
    wine_run, ember_build: EmberBuild, prompt: str
) -> None:  # type: ignore[no-untyped-def]
    """ember-cli splits the UTF-16 command line itself: quotes, backslashes, tabs and empty
    arguments must come out as the C runtime's argv would have them."""
    args = ["-m", str(MODEL), "-p", prompt, *ARGS]
    native = run_cli(ember_build, args)
    win = wine_run(["-m", _windows_path(MODEL), "-p", prompt, *ARGS])
    assert win.returncode == native.returncode, win.stderr.decode(errors="replace")
    if native.returncode == 0:
        assert _ids(win.stdout) == _ids(native.stdout)
    else:  # the empty prompt: no tokens
        assert b"the prompt has no tokens" in win.stderr
