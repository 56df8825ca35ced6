"""The error hierarchy. Every class has its own exit code, documented in the README.

Only ``kiln.cli.main`` turns these into an exit status; everything below it raises. Messages
are written for a person: what failed, why, and what to do about it.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "BuildError",
    "CommandFailed",
    "ConfigError",
    "DriftError",
    "InstallError",
    "IntegrityError",
    "KilnError",
    "MatrixError",
    "PublishError",
    "ReleaseError",
    "SelectionError",
    "ToolMissing",
    "VerifyError",
]


class KilnError(Exception):
    """Root of kiln's errors. ``exit_code`` is what the process exits with."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        return self.message if self.hint is None else f"{self.message}\n  hint: {self.hint}"


class ConfigError(KilnError):
    """A configuration file or command-line value is invalid."""

    exit_code = 2


class MatrixError(KilnError):
    """The matrix is invalid. Carries every problem found, not only the first."""

    exit_code = 3

    def __init__(self, problems: Sequence[str], *, root: str) -> None:
        self.problems = tuple(problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        body = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"matrix {root}: {len(self.problems)} {noun}\n{body}")


class SelectionError(KilnError):
    """A selector matched nothing, or selected something that cannot be selected."""

    exit_code = 4


class ToolMissing(KilnError):
    """An external program kiln needs is not installed."""

    exit_code = 5


class CommandFailed(KilnError):
    """An external program ran and failed."""

    exit_code = 6

    def __init__(self, message: str, *, output: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.output = output


class BuildError(KilnError):
    """One or more builds failed."""

    exit_code = 7


class VerifyError(KilnError):
    """A built artifact failed verification."""

    exit_code = 8


class ReleaseError(KilnError):
    """A release could not be assembled (missing entries, dirty tree, bad tag...)."""

    exit_code = 9


class PublishError(KilnError):
    """Publishing a release to a destination failed."""

    exit_code = 10


class InstallError(KilnError):
    """Installing a release on this machine failed."""

    exit_code = 11


class IntegrityError(KilnError):
    """A checksum or signature did not match."""

    exit_code = 12


class DriftError(KilnError):
    """Generated files differ from what their sources produce."""

    exit_code = 13


# Exit code of a run stopped by Ctrl-C / SIGINT, as shells report it.
INTERRUPTED_EXIT_CODE = 130
