"""Errors as values with a location, rendered once by the CLI.

Every failure a user can cause (bad topology, missing kernel feature, missing root, a
kernel refusing a step) becomes a LabkitError carrying where it came from and how to fix
it, so no traceback ever reaches the user.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Loc:
    """A position in a source file; line and column are 1-based as editors show them."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.col}"
        return self.file


class LabkitError(Exception):
    """A failure explained for a user: what went wrong, where, and how to fix it."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str = "", loc: Loc | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.loc = loc

    def render(self) -> str:
        text = f"{self.loc}: {self.message}" if self.loc else self.message
        if self.hint:
            text += f" {self.hint}"
        return text

    def __str__(self) -> str:
        return self.render()


class UsageError(LabkitError):
    """The user asked for something that cannot be done as asked (exit code 2)."""

    exit_code = 2


class TopologyError(UsageError):
    """One or more located problems in a topology file, all reported at once."""

    def __init__(self, problems: list[LabkitError]) -> None:
        self.problems = problems
        first = problems[0]
        super().__init__(first.message, hint=first.hint, loc=first.loc)

    def render(self) -> str:
        return "\n\n".join(p.render() for p in self.problems)


class NotRootError(UsageError):
    """labkit changes network namespaces, which needs CAP_SYS_ADMIN and CAP_NET_ADMIN."""


class Interrupted(LabkitError):
    """The user (Ctrl-C) or the system (SIGTERM) stopped an operation; what it had done
    was undone, and the hint says so. The exit code is the shell's: 130, or 128+signal."""

    def __init__(self, message: str, *, hint: str = "", code: int = 130) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = code


class MissingFeatureError(UsageError):
    """The running kernel lacks something a lab needs; the hint names the command to use."""


def require_root() -> None:
    """Namespaces need CAP_SYS_ADMIN; say so before anything is attempted."""
    import os

    if os.geteuid() != 0:
        raise NotRootError(
            "labkit needs root to create network namespaces (CAP_SYS_ADMIN, CAP_NET_ADMIN).",
            hint="Run it with sudo, e.g. `sudo .venv/bin/labkit up FILE`.")
