"""What every subcommand gets: the parsed arguments, the environment, the console, the
project root. A module of its own so that the command modules and ``kiln.cli`` (which imports
them to assemble the parser) do not import one another."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from kiln.console import Console
    from kiln.matrix import Matrix
    from kiln.project import Project

__all__ = ["Context", "find_repo"]


@dataclass(frozen=True)
class Context:
    """What every subcommand gets: parsed args, the environment, where to write (``stream``,
    default standard output)."""

    args: argparse.Namespace
    env: Mapping[str, str]
    repo: Path
    stream: TextIO | None = None

    @property
    def out(self) -> TextIO:
        """Where machine-readable output goes: the stream, without the console."""
        return self.stream if self.stream is not None else sys.stdout

    @cached_property
    def console(self) -> Console:
        """The console for tables and messages, made on first use: the rendering library it
        loads is most of the start-up of a command that prints JSON, which never needs it."""
        from kiln.console import Console

        return Console.from_env(self.env, stream=self.out)

    def matrix(self) -> Matrix:
        # Imported here: reading YAML is work only the commands that read the matrix pay for.
        from kiln.matrix import load_matrix

        root = getattr(self.args, "matrix_dir", None) or self.repo / "matrix"
        return load_matrix(Path(root))

    def project(self) -> Project:
        """The project ``kiln.toml`` at the root describes (kiln/project.py)."""
        from kiln.project import load_project

        return load_project(self.repo)

    def project_or_none(self) -> Project | None:
        """The project, or None where the root has no ``kiln.toml`` (a bare matrix)."""
        from kiln.project import FILE

        return self.project() if (self.repo / FILE).is_file() else None


def find_repo(start: Path) -> Path:
    """The project root: the nearest directory upwards with ``kiln.toml`` or
    ``matrix/defaults.yaml``."""
    from kiln.project import find_root

    return find_root(start)
