"""`labkit inject NAME NODE IFACE --frame KIND`: send crafted TIPC frames, show the effect."""

from __future__ import annotations

import typer

from labkit.cli.lab_arg import attach
from labkit.cli.output import console, emit_json


def inject(
    name: str = typer.Argument(..., help="Lab name."),
    node: str = typer.Argument(..., help="Node to send from."),
    iface: str = typer.Argument(..., help="Its interface, e.g. eth1."),
    frame: str = typer.Option(..., "--frame", help="ghost_discovery (a node that does not "
                              "exist), wrong_netid, short_hsize, size_mismatch, bad_version."),
    count: int = typer.Option(3, "--count", min=1, max=100, help="Frames to send."),
    window: float = typer.Option(2.0, "--window", min=0.1, max=60,
                                 help="Seconds to watch for an effect (less once every "
                                      "node on the segment shows one)."),
    json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Inject crafted TIPC frames (scapy) under a fresh node identity and report how the
    TIPC view of the nodes on the same segment changed: new peers, new links. A wrong net
    id or a malformed header must change nothing."""
    from labkit.features.tipc.inject import craft

    lab = attach(name)
    made = craft(frame, lab.feature_config("tipc").net_id)  # scapy here, not in a VM
    # next to the kernel that holds the node (the watchers share its segment, so its kernel)
    result = lab.host_of(lab.node(node).name).call(
        lab, "labkit.features.tipc.inject:inject_json", node, iface, frame, count, window,
        made)
    if json:
        emit_json(result)
        return
    console.print(f"sent {count} {frame} frames from {node}:{iface} as node "
                  f"{result['identity']} (src {result['src_mac']}), watched up to "
                  f"{result['window_s']:g} s")
    for n, change in result["changes"].items():
        what = ", ".join([*(f"new peer {p}" for p in change["new_peers"]),
                          *(f"new link {k}" for k in change["new_links_up"])])
        console.print(f"  {n}: {what or 'no change'}")


def register(app: typer.Typer) -> None:
    app.command()(inject)
