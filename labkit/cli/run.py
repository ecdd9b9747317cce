"""`labkit run FILE`: the whole lab cycle — up, checks, down — with the checks' exit code."""

from __future__ import annotations

import typer

from labkit.cli.check import report
from labkit.cli.output import console, info, plural, progress
from labkit.errors import UsageError, require_root


def run(
    file: str = typer.Argument(..., help="Topology file."),
    vm: str = typer.Option(None, "--vm", metavar="KERNEL",
                           help="Run the lab in a VM with this kernel."),
    host: bool = typer.Option(False, "--host", help="Run it on this machine's kernel."),
    json: bool = typer.Option(False, "--json", help="Verdicts as JSON."),
) -> None:
    """Bring the lab up (here or in a VM, as `labkit up` decides), run its declared checks,
    and always bring it down again.

    Exit code 0 when every check passed, 1 when one failed, 2 when none could run.
    """
    from labkit.lab.lab import Lab

    if host and vm:
        raise UsageError("--host and --vm exclude each other.")
    lab = Lab.load(file)
    require_root()
    with progress(f"up {lab.name}") as bar:
        # outside the try: never remove a lab this run did not build
        lab.up(on="host" if host else vm, progress=bar, say=info)
    try:
        if not json:
            console.print(f"lab '{lab.name}' is up on {lab.placement.describe()}; running "
                          f"{plural(len(lab.topo.checks), 'check')}", soft_wrap=True)
        code = report(lab.checks(), json)
    finally:
        lab.down()
        if not json:
            console.print(f"lab '{lab.name}' removed.")
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command()(run)
