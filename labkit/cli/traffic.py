"""`labkit traffic NAME --proto P --from A --to B`: measure throughput.

The protocols are tcp plus whatever the lab features offer (the registry's traffic
protocols), each with the socket kinds its endpoint module lists.
"""

from __future__ import annotations

import enum
import importlib

import typer

from labkit import features
from labkit.cli.lab_arg import attach
from labkit.cli.output import console, emit_json

_PROTOCOLS = {"tcp": "", **features.traffic_protocols()}
Proto = enum.StrEnum("Proto", {p: p for p in _PROTOCOLS})  # type: ignore[misc]


def _socket_kinds() -> str:
    kinds = {p: list(importlib.import_module(m).SOCKETS) if m else ["stream"]
             for p, m in _PROTOCOLS.items()}
    return "; ".join(f"{p}: {', '.join(k)}" for p, k in kinds.items())


def traffic(
    name: str = typer.Argument(..., help="Lab name."),
    proto: Proto = typer.Option("tcp", "--proto",
                                help="tcp, or a protocol a lab feature provides."),
    src: str = typer.Option(..., "--from", help="Sending node."),
    dst: str = typer.Option(..., "--to", help="Receiving node (the server runs there)."),
    size: int = typer.Option(65536, "--size", min=2, max=1 << 20,
                             help="Bytes per message (datagram sockets may carry less; "
                                  "labkit says how much)."),
    duration: float = typer.Option(5.0, "--duration", min=0.1, max=600,
                                   help="Seconds to send for (the run is bounded by it)."),
    sock: str = typer.Option("stream", "--socket", help=f"Socket kind ({_socket_kinds()})."),
    max_messages: int = typer.Option(10_000_000, "--max-messages", min=1,
                                     help="Stop after this many messages."),
    json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Send for --duration seconds from one node to a server in another; print bytes/s
    and messages/s as measured by the receiver."""
    from labkit.traffic.meter import measure

    lab = attach(name)
    proto_name = Proto(proto).value
    result = measure(lab, src, dst, proto=proto_name, socket=sock, size=size,
                     duration=duration, max_messages=max_messages)
    if json:
        emit_json(result.as_dict())
        return
    console.print(f"{proto_name}/{sock} {src} -> {dst}, {size}-byte messages: "
                  f"{result.bytes_per_s * 8 / 1e6:.1f} Mbit/s "
                  f"({result.bytes_per_s / 1e6:.1f} MB/s, {result.messages_per_s:.0f} msg/s) "
                  f"over {result.seconds:.2f} s")


def register(app: typer.Typer) -> None:
    app.command()(traffic)
