"""`labkit status [NAME]`: which labs exist and what is true about them; one lab's nodes."""

from __future__ import annotations

import typer

from labkit.cli.lab_arg import attach
from labkit.cli.output import columns, console, emit_json


def status(
    name: str = typer.Argument(None, help="A lab name; without it, list every lab."),
    json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show labs (without NAME) or one lab's nodes, interfaces, addresses and state.

    A lab is up, building, interrupted (its `up` was killed: `labkit down` it), broken
    (its VM is gone) or leftover (namespaces without a record).
    """
    from labkit.lab import state, teardown

    if name is None:
        labs = []
        for lab in teardown.all_labs():
            spaces = teardown.lab_namespaces(lab)
            cond = state.condition(lab, spaces)
            st = cond.state
            labs.append({"name": lab, "status": cond.word, "condition": cond.sentence,
                         "where": st.placement.describe() if st else "this machine's kernel",
                         "placement": st.placement.to_json() if st else None,
                         "topology": st.topology if st else None,
                         "namespaces_here": len(spaces)})
        if json:
            emit_json(labs)
            return
        if not labs:
            console.print("no labs are up.")
        for lab in labs:
            console.print(f"{lab['name']}  {lab['status']}  {lab['where']}  "
                          f"{lab['topology'] or ''}".rstrip(), soft_wrap=True)
            if lab["status"] != "up":
                console.print(f"  {lab['condition']}", soft_wrap=True)
        return
    data = attach(name).status()
    if json:
        emit_json(data)
        return
    console.print(f"lab {name}: {data['status']} on {data['where']}", soft_wrap=True)
    rows = []
    for node, info in data["nodes"].items():
        for i, link in enumerate(info["interfaces"]):
            rows.append((node if i == 0 else "", link["ifname"], str(link["state"]),
                         str(link["mtu"]), " ".join(link["addresses"])))
    columns(("NODE", "INTERFACE", "STATE", "MTU", "ADDRESSES"), rows)
    for lan, info in data["lans"].items():
        console.print(f"LAN {lan}: {'up' if info['up'] else 'DOWN'}, members "
                      f"{', '.join(m or '?' for m in info['members'])}", soft_wrap=True)
    for proc in data["processes"]:
        console.print(f"process {proc['pid']} on {proc['node']}: {' '.join(proc['cmd'])}",
                      soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(status)
