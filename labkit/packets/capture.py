"""Packet capture inside a node, written as pcap (opens in Wireshark).

An AF_PACKET socket made inside the namespace sees that namespace's interface; the loop
is bounded by count and duration, so a capture always ends by itself.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from labkit.base import netns

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
    # Protocol 0 receives nothing until bind() names the interface and the protocol, so
    # no frame of another interface can slip in before the bind.
    sock = netns.socket_in(ns, socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        with netns.entered(ns):
            sock.bind((iface, ETH_P_ALL))  # CPython applies htons itself
    except OSError:
        sock.close()
        raise
    return sock


class PcapStream:
    """A pcap file written frame by frame, so an interrupted capture keeps what it saw."""

    def __init__(self, path: str) -> None:
        from scapy.utils import RawPcapWriter

        self.writer = RawPcapWriter(path, linktype=1, sync=True)
        self.writer.write_header(None)
        self.frames = 0

    def __call__(self, ts: float, data: bytes, outgoing: bool) -> None:
        sec = int(ts)
        self.writer.write_packet(data, sec=sec, usec=int((ts - sec) * 1e6))
        self.frames += 1

    def close(self) -> None:
        self.writer.close()


def capture(ns: str, iface: str, *, count: int = 1000, duration: float = 10.0,
            sock: socket.socket | None = None,
            on_frame: Callable[[float, bytes, bool], None] | None = None) -> Capture:
    """Capture until count frames or duration seconds, whichever comes first.

    With on_frame, each frame goes there as it arrives instead of being kept in memory.
    """
    own = sock is None
    sock = sock or open_socket(ns, iface)
    out = Capture()
    seen = 0
    deadline = time.monotonic() + duration
    try:
        while seen < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([sock], [], [], left)
            if not ready:
                break
            data, addr = sock.recvfrom(65535)
            seen += 1
            frame = (time.time(), data, addr[2] == PACKET_OUTGOING)
            if on_frame is not None:
                on_frame(*frame)
            else:
                out.frames.append(frame)
    finally:
        if own:
            sock.close()
    return out
