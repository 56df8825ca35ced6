"""kiln/run.py against real programs (so it lives outside tests/unit)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from kiln.errors import CommandFailed, ToolMissing
from kiln.run import require_tool, run


def test_captures_output_and_exit_code() -> None:
    done = run(["sh", "-c", "echo out; echo err >&2; exit 3"], env=dict(os.environ),
               check=False)
    assert done.returncode == 3 and done.stdout == "out\n" and done.stderr == "err\n"


def test_failure_carries_the_output_tail() -> None:
    with pytest.raises(CommandFailed) as info:
        run(["sh", "-c", "for i in $(seq 1 100); do echo line$i; done; exit 1"],
            env=dict(os.environ))
    assert "exit code 1" in info.value.message
    assert info.value.output.splitlines()[-1] == "line100"
    assert "line1\n" not in info.value.output  # only the tail


def test_missing_program_names_the_package() -> None:
    with pytest.raises(ToolMissing) as info:
        run(["qemu-s390x-not-here"], env={"PATH": "/nonexistent"})
    assert "not found" in info.value.message
    with pytest.raises(ToolMissing) as info:
        require_tool("qemu-s390x", path="/nonexistent")
    assert info.value.hint == "apt-get install -y qemu-user libc6-s390x-cross"


def test_explicit_environment_is_the_whole_environment() -> None:
    done = run(["/usr/bin/env"], env={"ONLY": "this"})
    assert done.stdout.strip() == "ONLY=this"


def test_log_file_gets_command_and_output(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "x.log"
    with pytest.raises(CommandFailed) as info:
        run(["sh", "-c", "echo building; exit 2"], env=dict(os.environ), log_file=log)
    text = log.read_text()
    assert text.startswith("+ sh -c ") and "building" in text
    assert str(log) in info.value.message and "building" in info.value.output


def test_a_program_stopped_by_ctrl_c_interrupts_kiln(tmp_path: Path) -> None:
    """Ctrl-C reaches the whole process group: a program that SIGINT ended is the user's
    interruption (exit 130), not a failed step, whichever thread ran it."""
    # A Python child that restores SIGINT's default first: the test runner's workers ignore
    # SIGINT, and a shell cannot undo a signal ignored when it started.
    die = [sys.executable, "-c", "import os, signal; signal.signal(signal.SIGINT, "
           "signal.SIG_DFL); os.kill(os.getpid(), signal.SIGINT)"]
    with pytest.raises(KeyboardInterrupt):
        run(die, check=False)
    with pytest.raises(KeyboardInterrupt):
        run(die, log_file=tmp_path / "log")
