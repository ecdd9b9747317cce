"""Packet capture inside a node, written as pcap (opens in Wireshark).

An AF_PACKET socket made inside the namespace sees that namespace's interface; the loop
is bounded by count and duration, so a capture always ends by itself.
"""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass, field

from labkit.lab import netns

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


@dataclass
class Capture:
    """Frames captured: (timestamp, bytes, outgoing?)."""

    frames: list[tuple[float, bytes, bool]] = field(default_factory=list)

    def write(self, path: str) -> None:
        from scapy.utils import RawPcapWriter

        writer = RawPcapWriter(path, linktype=1, sync=True)
        try:
            writer.write_header(None)
            for ts, data, _ in self.frames:
                sec = int(ts)
                writer.write_packet(data, sec=sec, usec=int((ts - sec) * 1e6))
        finally:
            writer.close()


def open_socket(ns: str, iface: str) -> socket.socket:
    sock = netns.socket_in(ns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        with netns.entered(ns):
            sock.bind((iface, ETH_P_ALL))
    except OSError:
        sock.close()
        raise
    return sock


def capture(ns: str, iface: str, *, count: int = 1000, duration: float = 10.0,
            sock: socket.socket | None = None) -> Capture:
    """Capture until count frames or duration seconds, whichever comes first."""
    own = sock is None
    sock = sock or open_socket(ns, iface)
    out = Capture()
    deadline = time.monotonic() + duration
    try:
        while len(out.frames) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([sock], [], [], left)
            if not ready:
                break
            data, addr = sock.recvfrom(65535)
            out.frames.append((time.time(), data, addr[2] == PACKET_OUTGOING))
    finally:
        if own:
            sock.close()
    return out
