"""`labkit exec NAME NODE -- CMD...`: run a command inside a node; its exit status is ours."""

from __future__ import annotations

import os

import typer

from labkit.cli.forward import local_lab
from labkit.cli.output import strip_dashes
from labkit.errors import UsageError, require_root


def exec_(
    name: str = typer.Argument(..., help="Lab name."),
    node: str = typer.Argument(..., help="Node name."),
    cmd: list[str] = typer.Argument(..., help="Command and arguments, after `--`."),
) -> None:
    """Run CMD in NODE's network namespace, e.g. `labkit exec pair a -- ip -br addr`.

    The command's exit status becomes labkit's, so it works in scripts and tests.
    """
    require_root()
    argv = local_lab(name).node(node).command(strip_dashes(cmd))
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        raise UsageError(f"cannot run {argv[0]}: {exc.strerror}.") from None


def register(app: typer.Typer) -> None:
    app.command(name="exec", context_settings={"allow_interspersed_args": False})(exec_)
