"""`labkit up FILE`: build a lab from a topology file."""

from __future__ import annotations

import typer

from labkit.cli.output import console, emit_json, progress
from labkit.errors import require_root
from labkit.topology.summary import summarize


def up(
    file: str = typer.Argument(..., help="Topology file, e.g. topologies/routed.yaml."),
    vm: str = typer.Option(
        None, "--vm", help="Run the lab inside a VM with this kernel (e.g. debian-6.12), "
        "for features the host kernel lacks. See `labkit doctor`.", metavar="KERNEL"),
    json: bool = typer.Option(False, "--json", help="Print the lab's status as JSON."),
) -> None:
    """Build the lab: namespaces, links, LAN bridges, addresses, routes, kernel features.

    Validation happens first; if any step fails or you press Ctrl-C, everything already
    made is removed. Remove the lab later with `labkit down NAME`.
    """
    from labkit.lab.lab import Lab
    from labkit.lab.placement import decide

    lab = Lab.load(file)
    require_root()
    placement = decide(lab.topo, vm)
    if not placement.local:
        from labkit.cli.vmlab import up_in_vm

        raise typer.Exit(up_in_vm(lab, file, placement.vms[0].kernel, json))
    with progress(f"up {lab.name}") as bar:
        lab.up(progress=bar)
    if json:
        emit_json(lab.status())
        return
    console.print(f"[green]lab '{lab.name}' is up[/] ({len(lab.nodes)} nodes).")
    if lab.topo.description:
        console.print(lab.topo.description.rstrip())
    for name, node in summarize(lab.topo)["nodes"].items():
        addrs = "  ".join(f"{i} {' '.join(a)}" for i, a in node["interfaces"].items())
        console.print(f"  {name:12} {addrs}")
    console.print(f"Next: `labkit exec {lab.name} NODE -- CMD`, `labkit check {lab.name}`, "
                  f"`labkit down {lab.name}`.")


def register(app: typer.Typer) -> None:
    app.command()(up)
