"""ember-cli's inputs are bounded: a prompt file is read up to 64 MiB and no further.

``ember-cli -f /dev/zero`` used to grow its buffer until memory ran out (11.7 GB after 20 s).
The runs here have an address-space limit and a timeout, so the old behaviour fails the test
(and cannot take the machine down with it).
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY, EmberBuild

CAP = 64 << 20  # MAX_PROMPT_BYTES in runtime/tools/ember-cli.c
MODEL = TINY / "tiny-gpt2-f32.gguf"
AS_LIMIT = 1 << 30  # far above what a capped read needs, far below an unbounded one

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX rlimits and devices")


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))


def _run(build: EmberBuild, args: list[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(build.cli), *args],
        capture_output=True,
        timeout=60,
        preexec_fn=_limited,
        env=build.env(),
    )


def test_prompt_from_dev_zero_stops_at_the_cap(ember_build: EmberBuild) -> None:
    r = _run(ember_build, ["-m", str(MODEL), "-f", "/dev/zero", "-n", "1"])
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 2, err
    assert f"prompt file '/dev/zero' is larger than {CAP} bytes" in err, err


def test_prompt_file_over_the_cap_is_refused(ember_build: EmberBuild, tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    with big.open("wb") as f:
        f.truncate(CAP + 1)  # sparse: costs no disk
    r = _run(ember_build, ["-m", str(MODEL), "-f", str(big), "-n", "1"])
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 2, err
    assert f"prompt file '{big}' is larger than {CAP} bytes" in err, err


def test_prompt_file_read_error_is_reported(ember_build: EmberBuild, tmp_path: Path) -> None:
    # a directory opens on Linux but every read fails (EISDIR)
    r = _run(ember_build, ["-m", str(MODEL), "-f", str(tmp_path), "-n", "1"])
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 2, err
    assert f"prompt file '{tmp_path}'" in err, err
    assert "Traceback" not in err


def test_help_documents_the_cap(ember_build: EmberBuild) -> None:
    r = _run(ember_build, ["--help"])
    assert r.returncode == 0
    assert "at most 64 MiB" in r.stdout.decode()


def test_small_prompt_file_still_works(ember_build: EmberBuild, tmp_path: Path) -> None:
    p = tmp_path / "prompt.txt"
    p.write_text("Café naïve — 東京の天気は？", encoding="utf-8")
    by_file = _run(ember_build, ["-m", str(MODEL), "-f", str(p), "-n", "2", "--json"])
    assert by_file.returncode == 0, by_file.stderr.decode()
    by_arg = _run(
        ember_build, ["-m", str(MODEL), "-p", "Café naïve — 東京の天気は？", "-n", "2", "--json"]
    )
    assert by_arg.returncode == 0, by_arg.stderr.decode()
    assert by_file.stdout.split(b', "load_ms"')[0] == by_arg.stdout.split(b', "load_ms"')[0]
