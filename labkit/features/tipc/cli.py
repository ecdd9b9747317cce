"""`labkit tipc ...`: the TIPC view of a lab."""

from __future__ import annotations

import typer

from labkit.cli.lab_arg import attach
from labkit.cli.output import console, emit_json

app = typer.Typer(help="TIPC clusters: identities, bearers, links, name tables, keys.",
                  no_args_is_help=True)


@app.command("status")
def status_cmd(
    name: str = typer.Argument(..., help="Lab name."),
    json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Nodes, links (up/active, MTU, tx/rx, retransmissions), name-table bindings and
    whether keys are set (never their bytes), read from the kernel over TIPCv2 netlink."""
    data = attach(name).feature_status("tipc")
    if json:
        emit_json(data)
        return
    keys = data["keys"]
    console.print(f"TIPC net {data['net_id']}, keys: "
                  + (f"{keys['mode']} key set (AES-{keys['key_bits']})" if keys["present"]
                     else "none (plaintext)"))
    for node, info in data["nodes"].items():
        console.print(f"[bold]{node}[/] identity {info['identity']} address "
                      f"{info['address']:#010x}, bearers "
                      f"{', '.join(b['name'] for b in info['bearers'])}")
        for link in info["links"]:
            state = "[green]up[/]" if link["up"] else "[red]down[/]"
            console.print(f"  link {link['name']:32} {state} mtu {link['mtu']} tx "
                          f"{link['tx_packets']} rx {link['rx_packets']} retrans "
                          f"{link['retransmissions']}")
        user = [b for b in info["name_table"] if b["type"] >= 64]
        for b in user:
            console.print(f"  binding {{{b['type']}, {b['lower']}, {b['upper']}}} "
                          f"on node {b['node']:#x} port {b['port']}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="tipc")
