"""`labkit exec NAME NODE -- CMD...`: run a command inside a node; its exit status is ours."""

from __future__ import annotations

import os
import sys

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
    if n.host.local:
        full = n.command(argv)
        try:
            os.execvp(full[0], full)
        except OSError as exc:
            raise UsageError(f"cannot run {full[0]}: {exc.strerror}.") from None
    from labkit.hosts.local import netns_exec
    from labkit.hosts.vm import persistent

    raise typer.Exit(persistent.exec_(n.host.name, netns_exec(n.ns, argv), cwd="/",
                                      forward_stdin=not sys.stdin.isatty()))


def register(app: typer.Typer) -> None:
    app.command(name="exec", context_settings={"allow_interspersed_args": False})(exec_)
