"""`labkit capture NAME NODE IFACE -w FILE.pcap`: record packets inside a node."""

from __future__ import annotations

import subprocess
import sys

import typer

from labkit.cli.lab_arg import attach
from labkit.cli.output import emit_json, info
from labkit.errors import LabkitError, UsageError, require_root


def capture(
    name: str = typer.Argument(..., help="Lab name."),
    node: str = typer.Argument(..., help="Node name."),
    iface: str = typer.Argument(..., help="Interface in the node, e.g. eth1 or lo."),
    write: str = typer.Option(..., "-w", "--write", help="pcap file to write, on this "
                              "machine (also for a lab in a VM)."),
    count: int = typer.Option(100, "--count", "-c", min=1, max=1_000_000,
                              help="Stop after this many frames."),
    duration: float = typer.Option(10.0, "--duration", "-d", min=0.1, max=3600,
                                   help="Stop after this many seconds."),
    json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Capture frames on IFACE of NODE into a pcap file (open it in Wireshark).

    Stops at --count frames or --duration seconds, whichever comes first; Ctrl-C stops
    it early and keeps what was seen.
    """
    from labkit.packets.capture import count_pcap

    require_root()
    n = attach(name).node(node)
    try:
        out = open(write, "wb")  # noqa: SIM115
    except OSError as exc:
        raise UsageError(f"cannot write {write}: {exc.strerror}.",
                         hint="Give a path in a directory that exists and is writable."
                         ) from None
    # The capture runs next to the node's kernel, wherever that is; its pcap comes back
    # on its stdout into the file here.
    with out:
        proc = n.popen([sys.executable, "-m", "labkit.packets.capture", iface,
                        "--count", str(count), "--duration", str(duration)],
                       stdout=out, stderr=subprocess.PIPE)
        try:
            _, err = proc.communicate(timeout=duration + 120)
        except KeyboardInterrupt:  # Ctrl-C ends a capture early; what was seen is kept
            n.host.interrupt(proc)
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    if proc.returncode not in (0, 130) and b"ready" not in err:
        text = err.decode(errors="replace").strip().splitlines()
        why = f"capture on {node}:{iface} failed: " \
              f"{text[-1] if text else f'exit status {proc.returncode}'}."
        hint = f"List the node's interfaces with `labkit status {name}`."
        raise (UsageError if proc.returncode == 2 else LabkitError)(why, hint=hint)
    with open(write, "rb") as fh:
        frames = count_pcap(fh)  # streamed: the file may hold a million frames
    summary = {"file": write, "frames": frames, "node": node, "iface": iface}
    if json:
        emit_json(summary)
    else:
        info(f"{frames} frames from {node}:{iface} written to {write}")


def register(app: typer.Typer) -> None:
    app.command()(capture)
