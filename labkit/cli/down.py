"""`labkit down NAME|FILE`: remove every trace of a lab."""

from __future__ import annotations

import os

import typer

from labkit.cli.output import console, emit_json
from labkit.errors import UsageError, require_root
from labkit.lab import teardown


def lab_name(name_or_file: str) -> str:
    """A lab name, or the name inside a topology file (even a file that no longer parses)."""
    if os.path.isfile(name_or_file) or name_or_file.endswith((".yaml", ".yml")):
        from labkit.topology.located import load_file

        try:
            doc = load_file(name_or_file)
            return str(doc["name"])
        except Exception:
            raise UsageError(f"cannot read the lab name from {name_or_file}.",
                             hint="Give the lab's name instead: `labkit status` lists them."
                             ) from None
    return name_or_file


def down(
    names: list[str] = typer.Argument(None, help="Lab names or topology files."),
    all_: bool = typer.Option(False, "--all", help="Remove every lab labkit made here."),
    json: bool = typer.Option(False, "--json", help="Print what was removed as JSON."),
) -> None:
    """Remove labs: their processes, namespaces, links, bridges and state.

    Works from the lab name alone, so a lab whose `up` was killed is still removed.
    Removing a lab that is not there is not an error.
    """
    require_root()
    if all_:
        names = teardown.all_labs()
    elif not names:
        raise UsageError("name a lab to remove, or pass --all.",
                         hint="`labkit status` lists the labs that are up.")
    from labkit.cli.forward import vm_of
    from labkit.cli.vmlab import down_in_vm

    report = []
    for name in [lab_name(n) for n in names]:
        vm = vm_of(name)
        if vm:
            down_in_vm(name, vm)
            report.append({"lab": name, "vm": vm})
            if not json:
                console.print(f"lab '{name}' removed, and VM '{vm}' that held it stopped.")
            continue
        removed = teardown.down(name)
        report.append({"lab": name, "namespaces": removed.namespaces,
                       "processes": removed.processes})
        if not json:
            if removed.anything:
                console.print(f"lab '{name}' removed: {len(removed.namespaces)} namespaces, "
                              f"{len(removed.processes)} processes stopped.")
            else:
                console.print(f"lab '{name}' was not up; nothing to remove.")
    if json:
        emit_json(report)


def register(app: typer.Typer) -> None:
    app.command()(down)
