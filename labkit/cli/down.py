"""`labkit down NAME|FILE`: remove every trace of a lab, wherever it ran."""

from __future__ import annotations

import os

import typer

from labkit.cli.output import console, emit_json, plural
from labkit.errors import UsageError, require_root
from labkit.lab.teardown import Removed


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


def describe(r: Removed) -> str:
    """One sentence that says what was true and what was done."""
    if not r.anything:
        return f"lab '{r.lab}' was not up; nothing to remove."
    parts = []
    if r.vms:
        parts.append(f"VM {', '.join(r.vms)} stopped")
    if r.namespaces:
        parts.append(f"{plural(len(r.namespaces), 'namespace')} removed")
    if r.processes:
        parts.append(f"{plural(len(r.processes), 'process')} stopped")
    text = f"lab '{r.lab}' removed" + (f": {', '.join(parts)}" if parts else "")
    if r.notes:
        text += f" ({'; '.join(r.notes)})"
    return text + "."


def down(
    names: list[str] = typer.Argument(None, help="Lab names or topology files."),
    all_: bool = typer.Option(False, "--all", help="Remove every lab labkit made here."),
    json: bool = typer.Option(False, "--json", help="Print what was removed as JSON."),
) -> None:
    """Remove labs: their processes, namespaces, links, bridges, VMs, keys and state.

    Works from the lab name alone, so a lab whose `up` was killed, or whose VM crashed,
    is still removed. Removing a lab that is not there is not an error.
    """
    from labkit.lab import teardown
    from labkit.lab.lab import down as remove

    require_root()
    if all_:
        names = teardown.all_labs()
    elif not names:
        raise UsageError("name a lab to remove, or pass --all.",
                         hint="`labkit status` lists the labs that are up.")
    report = []
    for name in [lab_name(n) for n in names]:
        removed = remove(name)
        report.append(removed.to_json())
        if not json:
            console.print(describe(removed), soft_wrap=True)
    if json:
        emit_json(report)


def register(app: typer.Typer) -> None:
    app.command()(down)
