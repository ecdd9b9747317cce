"""`labkit capture NAME NODE IFACE -w FILE.pcap`: record packets inside a node."""

from __future__ import annotations

import typer

from labkit.cli.forward import local_lab
from labkit.cli.output import emit_json, info
from labkit.errors import UsageError, require_root


def capture(
    name: str = typer.Argument(..., help="Lab name."),
    node: str = typer.Argument(..., help="Node name."),
    iface: str = typer.Argument(..., help="Interface in the node, e.g. eth1 or lo."),
    write: str = typer.Option(..., "-w", "--write", help="pcap file to write."),
    count: int = typer.Option(100, "--count", "-c", min=1, max=1_000_000,
                              help="Stop after this many frames."),
    duration: float = typer.Option(10.0, "--duration", "-d", min=0.1, max=3600,
                                   help="Stop after this many seconds."),
    json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Capture frames on IFACE of NODE into a pcap file (open it in Wireshark).

    Stops at --count frames or --duration seconds, whichever comes first.
    """
    from labkit.packets.capture import PcapStream, open_socket
    from labkit.packets.capture import capture as run_capture
    require_root()
    n = local_lab(name).node(node)
    try:
        sock = open_socket(n.ns, iface)
    except OSError as exc:
        raise UsageError(f"cannot capture on {node}:{iface}: {exc.strerror}.",
                         hint=f"List the node's interfaces with `labkit status {name}`."
                         ) from None
    try:
        out = PcapStream(write)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot write {write}: {exc.strerror}.",
                         hint="Give a path in a directory that exists and is writable.") from None
    try:
        run_capture(n.ns, iface, count=count, duration=duration, sock=sock, on_frame=out)
    except KeyboardInterrupt:
        pass  # Ctrl-C ends a capture early; what was seen is already in the file
    finally:
        sock.close()
        out.close()
    summary = {"file": write, "frames": out.frames, "node": node, "iface": iface}
    if json:
        emit_json(summary)
    else:
        info(f"{out.frames} frames from {node}:{iface} written to {write}")


def register(app: typer.Typer) -> None:
    app.command()(capture)
