"""`labkit traffic NAME --proto tipc|tcp --from A --to B`: measure throughput."""

from __future__ import annotations

import enum

import typer

from labkit.cli.forward import local_lab
from labkit.cli.output import console, emit_json


class Proto(enum.StrEnum):
    tipc = "tipc"
    tcp = "tcp"


class SockType(enum.StrEnum):
    stream = "stream"
    rdm = "rdm"
    seqpacket = "seqpacket"


def traffic(
    name: str = typer.Argument(..., help="Lab name."),
    proto: Proto = typer.Option(Proto.tipc, "--proto", help="tipc (to a TIPC service) or tcp."),
    src: str = typer.Option(..., "--from", help="Sending node."),
    dst: str = typer.Option(..., "--to", help="Receiving node (the server runs there)."),
    size: int = typer.Option(65536, "--size", min=2, max=1 << 20,
                             help="Bytes per message (TIPC rdm/seqpacket: at most 66000)."),
    duration: float = typer.Option(5.0, "--duration", min=0.1, max=600,
                                   help="Seconds to send for (the run is bounded by it)."),
    sock: SockType = typer.Option(SockType.stream, "--socket", help="TIPC socket type."),
    max_messages: int = typer.Option(10_000_000, "--max-messages", min=1,
                                     help="Stop after this many messages."),
    json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Send for --duration seconds from one node to a server in another; print bytes/s
    and messages/s as measured by the receiver. TIPC servers are published as service
    {18888, 5201} in the receiver."""
    from labkit.traffic.meter import measure

    lab = local_lab(name)
    result = measure(lab, src, dst, proto=proto.value, socket=sock.value, size=size,
                     duration=duration, max_messages=max_messages)
    if json:
        emit_json(result.as_dict())
        return
    console.print(f"{proto.value}/{sock.value if proto == Proto.tipc else 'stream'} "
                  f"{src} -> {dst}, {size}-byte messages: "
                  f"{result.bytes_per_s * 8 / 1e6:.1f} Mbit/s "
                  f"({result.bytes_per_s / 1e6:.1f} MB/s, {result.messages_per_s:.0f} msg/s) "
                  f"over {result.seconds:.2f} s")


def register(app: typer.Typer) -> None:
    app.command()(traffic)
