"""`labkit shell NAME NODE`: an interactive shell inside a node (a real terminal in a VM)."""

from __future__ import annotations

import typer

from labkit.cli.lab_arg import attach
from labkit.errors import require_root


def shell(name: str = typer.Argument(..., help="Lab name."),
          node: str = typer.Argument(..., help="Node name.")) -> None:
    """Open $SHELL (or bash) in NODE; the prompt shows lab and node. Exit it to return.

    In a VM the shell runs on a pseudo-terminal there: job control, Ctrl-C and the
    terminal's size work as over ssh.
    """
    require_root()
    raise typer.Exit(attach(name).node(node).shell())


def register(app: typer.Typer) -> None:
    app.command()(shell)
