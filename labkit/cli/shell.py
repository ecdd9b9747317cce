"""`labkit shell NAME NODE`: an interactive shell inside a node."""

from __future__ import annotations

import os

import typer

from labkit.cli.forward import local_lab
from labkit.errors import require_root


def shell(name: str = typer.Argument(..., help="Lab name."),
          node: str = typer.Argument(..., help="Node name.")) -> None:
    """Open $SHELL (or bash) in NODE; the prompt shows lab and node. Exit it to return."""
    require_root()
    n = local_lab(name).node(node)
    sh = os.environ.get("SHELL", "/bin/bash")
    os.environ["PS1"] = f"[{name}:{node}] \\w# "
    argv = n.command([sh, "--norc", "-i"] if sh.endswith("bash") else [sh, "-i"])
    os.execvp(argv[0], argv)


def register(app: typer.Typer) -> None:
    app.command()(shell)
