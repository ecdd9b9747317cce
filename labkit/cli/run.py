"""`labkit run FILE`: the whole lab cycle — up, checks, down — with the checks' exit code."""

from __future__ import annotations

import os

import typer

from labkit.cli.check import report
from labkit.cli.output import console, progress
from labkit.errors import require_root


def run(
    file: str = typer.Argument(..., help="Topology file."),
    vm: str = typer.Option(None, "--vm", metavar="KERNEL",
                           help="Run the cycle inside a one-shot VM with this kernel."),
    json: bool = typer.Option(False, "--json", help="Verdicts as JSON."),
) -> None:
    """Bring the lab up, run its declared checks, and always bring it down again.

    Exit code 0 when every check passed, 1 when one failed, 2 when none could run.
    """
    from labkit.lab.lab import Lab
    from labkit.verify.checks import run_checks
    lab = Lab.load(file)
    if vm is not None:
        from labkit.cli.forward import guest_labkit_argv
        from labkit.hosts.vm import run as vm_run

        argv = ["run", os.path.abspath(file)] + (["--json"] if json else [])
        result = vm_run(guest_labkit_argv(argv), kernel=vm)
        raise typer.Exit(result if isinstance(result, int) else result.returncode)
    from labkit.lab.placement import decide

    require_root()
    decide(lab.topo, "host")  # refuses a lab this kernel cannot run
    with progress(f"up {lab.name}") as bar:
        lab.up(progress=bar)  # outside the try: never remove a lab this run did not build
    try:
        if not json:
            console.print(f"lab '{lab.name}' is up; running {len(lab.topo.checks)} checks")
        code = report(run_checks(lab), json)
    finally:
        lab.down()
        if not json:
            console.print(f"lab '{lab.name}' removed.")
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command()(run)
