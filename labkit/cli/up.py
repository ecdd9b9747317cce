"""`labkit up FILE`: build a lab from a topology file, here or in a VM."""

from __future__ import annotations

import time

import typer

from labkit import features
from labkit.cli.output import console, emit_json, info, plural, progress
from labkit.errors import UsageError, require_root
from labkit.topology.summary import summarize


def up(
    file: str = typer.Argument(..., help="Topology file, e.g. topologies/routed.yaml."),
    vm: str = typer.Option(
        None, "--vm", metavar="KERNEL",
        help="Run the lab in a VM with this kernel (debian-6.12, debian-6.1, debian-7.2, a point "
        "release such as 6.12.69, built:NAME from `labkit kernel build`, a bzImage or a build "
        "tree), even if this machine's kernel could run it. `labkit vm kernels list "
        "--available` lists them."),
    host: bool = typer.Option(
        False, "--host", help="Run the lab on this machine's kernel, or fail saying what it "
        "lacks."),
    json: bool = typer.Option(False, "--json", help="Print the lab's status as JSON."),
) -> None:
    """Build the lab: namespaces, links, LAN bridges, addresses, routes, kernel features.

    Where: on this machine's kernel if it has every feature the lab uses, otherwise in a
    VM with the first kernel that has them (the topology's `kernel:` may name it; the
    kernel is fetched if it is not cached). One line says where the lab went. Validation
    happens first; if any step fails or you press Ctrl-C, everything already made (VMs
    included) is removed. Remove the lab later with `labkit down NAME`.
    """
    from labkit.lab.lab import Lab

    if host and vm:
        raise UsageError("--host and --vm exclude each other.",
                         hint="--host: this machine's kernel; --vm KERNEL: a VM.")
    lab = Lab.load(file)
    require_root()
    started = time.monotonic()
    with progress(f"up {lab.name}") as bar:
        lab.up(on="host" if host else vm, progress=bar, say=info)
    if json:
        emit_json(lab.status())
        return
    took = time.monotonic() - started
    console.print(f"[green]lab '{lab.name}' is up[/] ({plural(len(lab.nodes), 'node')}, "
                  f"{lab.placement.describe()}, {took:.1f} s).", soft_wrap=True)
    if lab.topo.description:
        console.print(lab.topo.description.rstrip(), soft_wrap=True)
    for name, node in summarize(lab.topo)["nodes"].items():
        addrs = "  ".join(f"{i} {' '.join(a)}" for i, a in node["interfaces"].items())
        console.print(f"  {name:12} {addrs}", soft_wrap=True)
    for note in features.notes(lab.topo.features):
        console.print(f"note: {note}", markup=False, soft_wrap=True)
    console.print(f"Next: `labkit exec {lab.name} NODE -- CMD`, `labkit check {lab.name}`, "
                  f"`labkit down {lab.name}`.", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(up)
