"""`labkit shell NAME NODE`: an interactive shell inside a node."""

from __future__ import annotations

import os

import typer

from labkit.cli.forward import forward
from labkit.errors import require_root


def shell(name: str = typer.Argument(..., help="Lab name."),
          node: str = typer.Argument(..., help="Node name.")) -> None:
    """Open $SHELL (or bash) in NODE; the prompt shows lab and node. Exit it to return."""
    from labkit.lab.lab import Lab
    rc = forward(name)
    if rc is not None:
        raise typer.Exit(rc)
    require_root()
    n = Lab.attach(name).node(node)
    sh = os.environ.get("SHELL", "/bin/bash")
    os.environ["PS1"] = f"[{name}:{node}] \\w# "
    argv = n.command([sh, "--norc", "-i"] if sh.endswith("bash") else [sh, "-i"])
    os.execvp(argv[0], argv)


def register(app: typer.Typer) -> None:
    app.command()(shell)
