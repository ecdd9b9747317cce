"""`labkit status [NAME]`: what labs are up, and what is in them."""

from __future__ import annotations

import typer

from labkit.cli.forward import local_lab
from labkit.cli.output import console, emit_json
from labkit.lab import state, teardown


def status(
    name: str = typer.Argument(None, help="A lab name; without it, list every lab."),
    json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show labs (without NAME) or one lab's nodes, interfaces, addresses and state."""
    if name is None:
        labs = []
        for lab in teardown.all_labs():
            st = state.load(lab)
            labs.append({"name": lab, "status": st.status if st else "leftover",
                         "host": st.host if st else {"kind": "local"},
                         "topology": st.topology if st else None,
                         "namespaces": len(teardown.lab_namespaces(lab))})
        if json:
            emit_json(labs)
            return
        if not labs:
            console.print("no labs are up.")
        for lab in labs:
            where = "" if lab["host"]["kind"] == "local" else f" in VM {lab['host'].get('vm')}"
            console.print(f"{lab['name']:20} {lab['status']:9} {lab['namespaces']:4} namespaces"
                          f"{where}  {lab['topology'] or ''}")
        return
    from rich.table import Table

    data = local_lab(name).status()
    if json:
        emit_json(data)
        return
    table = Table(title=f"lab {name} ({data['status']})", show_lines=False)
    for col in ("node", "interface", "state", "mtu", "addresses"):
        table.add_column(col)
    for node, info in data["nodes"].items():
        for i, link in enumerate(info["interfaces"]):
            table.add_row(node if i == 0 else "", link["ifname"], link["state"],
                          str(link["mtu"]), " ".join(link["addresses"]))
    console.print(table)
    for lan, info in data["lans"].items():
        console.print(f"LAN {lan}: {'up' if info['up'] else 'DOWN'}, members "
                      f"{', '.join(m or '?' for m in info['members'])}")
    for proc in data["processes"]:
        console.print(f"process {proc['pid']} on {proc['node']}: {' '.join(proc['cmd'])}")


def register(app: typer.Typer) -> None:
    app.command()(status)
