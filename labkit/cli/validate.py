"""`labkit validate FILE`: check a topology without touching the kernel."""

from __future__ import annotations

import typer

from labkit import features
from labkit.cli.output import console, emit_json, plural
from labkit.topology import loader
from labkit.topology.summary import summarize


def validate(
    file: str = typer.Argument(..., help="Topology file (YAML), e.g. topologies/pair.yaml."),
    json: bool = typer.Option(False, "--json", help="Print the resolved lab as JSON."),
) -> None:
    """Validate a topology file and show the lab it describes, with every address resolved.

    Every problem is reported with FILE:LINE:COLUMN and a fix; exit code 2 when invalid.
    """
    topo = loader.load(file)
    data = summarize(topo)
    if json:
        emit_json(data)
        return
    counts = ", ".join(plural(len(things), word) for things, word in (
        (topo.nodes, "node"), (topo.links, "link"), (topo.lans, "LAN"), (topo.checks, "check")))
    console.print(f"[green]ok[/]: {file} describes lab '{topo.name}' with {counts}.")
    for name, node in data["nodes"].items():
        addrs = "  ".join(f"{i}={' '.join(a)}" for i, a in node["interfaces"].items())
        console.print(f"  {name:12} {addrs}")
    for note in features.notes(topo.features):
        console.print(f"note: {note}", markup=False)


def register(app: typer.Typer) -> None:
    app.command()(validate)
