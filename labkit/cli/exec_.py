"""`labkit exec NAME NODE -- CMD...`: run a command inside a node; its exit status is ours."""

from __future__ import annotations

import typer

from labkit.cli.lab_arg import attach
from labkit.cli.output import strip_dashes
from labkit.errors import UsageError, require_root


def exec_(
    name: str = typer.Argument(..., help="Lab name."),
    node: str = typer.Argument(..., help="Node name."),
    cmd: list[str] = typer.Argument(..., help="Command and arguments, after `--`."),
) -> None:
    """Run CMD in NODE's network namespace, e.g. `labkit exec pair a -- ip -br addr`.

    The command's exit status becomes labkit's, so it works in scripts and tests. Piped
    stdin reaches the command (`echo hi | labkit exec LAB NODE -- cat`), also in a VM.
    """
    require_root()
    n = attach(name).node(node)
    argv = strip_dashes(cmd)
    if not argv:
        raise UsageError("no command given.", hint="Put it after `--`, e.g. `-- ip addr`.")
    raise typer.Exit(n.host.exec(n.ns, argv))


def register(app: typer.Typer) -> None:
    app.command(name="exec", context_settings={"allow_interspersed_args": False})(exec_)
