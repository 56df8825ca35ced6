"""Where host probes read from: the one place that touches this machine.

Every probe in ``kiln.install.host`` asks a ``Source`` for a file, a directory listing, an
environment variable or a tool's output; nothing else reads the machine. ``LiveSource`` reads
the real one (programs through ``kiln.run``, with a short timeout, a missing program being an
answer rather than an error); ``FixtureSource`` serves a whole machine profile from one YAML
file, so tests (and bug reports: ``kiln host --profile``) can replay any machine.

A profile file::

    description: Ubuntu 24.04 with an RTX 4090 and driver 580
    system: Linux            # what platform.system() says
    machine: x86_64          # what platform.machine() says (the process's architecture)
    env: {HOME: /home/u}
    files:
      /etc/os-release: |
        ID=ubuntu
      /usr/lib/x86_64-linux-gnu/libvulkan.so.1: ""
    commands:
      getconf GNU_LIBC_VERSION: glibc 2.39
      ldd --version: {stdout: "", stderr: "musl libc (x86_64)\\nVersion 1.2.4\\n", rc: 1}

Directories exist when a file below them is listed. Commands are keyed by their arguments
joined with single spaces; a command that is not listed is a program that is not
installed.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol

import yaml

from kiln.errors import CommandFailed, ConfigError, ToolMissing
from kiln.run import run

__all__ = ["FixtureSource", "LiveSource", "Output", "Source", "load_profile"]


@dataclass(frozen=True, kw_only=True)
class Output:
    """What a tool printed, whatever its exit status (``ldd --version`` on musl exits 1)."""

    rc: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout + self.stderr


class Source(Protocol):
    def system(self) -> str:
        """``platform.system()``: Linux, Darwin, Windows, Android."""
        ...

    def machine(self) -> str:
        """``platform.machine()`` of the probing process (x86_64 under Rosetta)."""
        ...

    def env(self, name: str) -> str | None: ...

    def read(self, path: str) -> str | None:
        """A text file's content, or ``None`` when it does not exist or cannot be read."""
        ...

    def exists(self, path: str) -> bool: ...

    def listdir(self, path: str) -> tuple[str, ...]:
        """Names in a directory, sorted; empty when it does not exist."""
        ...

    def tool(self, argv: Sequence[str]) -> Output | None:
        """Run a program; ``None`` when it is not installed or does not answer in time."""
        ...


class LiveSource:
    """This machine."""

    def __init__(self, env: Mapping[str, str], *, timeout: float = 10.0) -> None:
        self._env = dict(env)
        self.timeout = timeout

    def system(self) -> str:
        return platform.system()

    def machine(self) -> str:
        return platform.machine()

    def env(self, name: str) -> str | None:
        return self._env.get(name)

    def read(self, path: str) -> str | None:
        try:
            return Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def listdir(self, path: str) -> tuple[str, ...]:
        try:
            return tuple(sorted(os.listdir(path)))
        except OSError:
            return ()

    def tool(self, argv: Sequence[str]) -> Output | None:
        try:
            done = run(list(argv), env=self._env, check=False, timeout=self.timeout)
        except (ToolMissing, CommandFailed, PermissionError, OSError):
            return None
        return Output(rc=done.returncode, stdout=done.stdout, stderr=done.stderr)


@dataclass(frozen=True)
class FixtureSource:
    """A recorded machine: see the module docstring for the file format."""

    name: str
    description: str
    system_name: str
    machine_name: str
    environ: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, str] = field(default_factory=dict)
    commands: Mapping[str, Output] = field(default_factory=dict)

    def system(self) -> str:
        return self.system_name

    def machine(self) -> str:
        return self.machine_name

    def env(self, name: str) -> str | None:
        return self.environ.get(name)

    def read(self, path: str) -> str | None:
        return self.files.get(_norm(path))

    def exists(self, path: str) -> bool:
        p = _norm(path)
        return p in self.files or any(f.startswith(p.rstrip("/") + "/") for f in self.files)

    def listdir(self, path: str) -> tuple[str, ...]:
        prefix = _norm(path).rstrip("/") + "/"
        names = {f[len(prefix):].split("/", 1)[0] for f in self.files if f.startswith(prefix)}
        return tuple(sorted(names))

    def tool(self, argv: Sequence[str]) -> Output | None:
        return self.commands.get(" ".join(argv))


def _norm(path: str) -> str:
    # Windows paths are recorded with forward slashes; case is kept as written.
    text = path.replace("\\", "/")
    if len(text) > 1 and text[1] == ":":
        return text
    return str(PurePosixPath(text))


def load_profile(path: Path) -> FixtureSource:
    """Read a machine profile (YAML); errors name the file and the key."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the machine profile: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a machine profile is a mapping")
    known = {"description", "system", "machine", "env", "files", "commands"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown keys {unknown}",
                          hint="valid keys: " + ", ".join(sorted(known)))
    for key in ("system", "machine"):
        if not isinstance(data.get(key), str):
            raise ConfigError(f"{path}: '{key}' must be a string (e.g. Linux / x86_64)")
    commands: dict[str, Output] = {}
    for cmd, out in (data.get("commands") or {}).items():
        if isinstance(out, str):
            commands[str(cmd)] = Output(rc=0, stdout=out, stderr="")
        elif isinstance(out, dict):
            commands[str(cmd)] = Output(rc=int(out.get("rc", 0)),
                                        stdout=str(out.get("stdout", "")),
                                        stderr=str(out.get("stderr", "")))
        else:
            raise ConfigError(f"{path}: commands.{cmd}: expected text or "
                              "{stdout, stderr, rc}")
    files = {_norm(str(k)): "" if v is None else str(v)
             for k, v in (data.get("files") or {}).items()}
    env = {str(k): str(v) for k, v in (data.get("env") or {}).items()}
    return FixtureSource(name=path.stem, description=str(data.get("description", "")),
                         system_name=data["system"], machine_name=data["machine"],
                         environ=env, files=files, commands=commands)
