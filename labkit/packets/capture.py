"""Packet capture inside a node, written as pcap (opens in Wireshark and tshark).

An AF_PACKET socket made inside the namespace sees that namespace's interface; the loop
is bounded by count and duration, so a capture always ends by itself. Standard library
only: `python -m labkit.packets.capture IFACE` runs inside a node (in a VM too, started
by Node.popen) and streams the pcap to stdout, so the file lands wherever the caller
wants it, on the host.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
LINKTYPE_ETHERNET = 1
SNAPLEN = 262144
PCAP_HEADER = struct.Struct("<IHHiIII")
RECORD_HEADER = struct.Struct("<IIII")


@dataclass
class Capture:
    """Frames captured: (timestamp, bytes, outgoing?)."""

    frames: list[tuple[float, bytes, bool]] = field(default_factory=list)

    def write(self, path: str) -> None:
        with open(path, "wb") as fh:
            writer = PcapWriter(fh)
            for ts, data, out in self.frames:
                writer(ts, data, out)


class PcapWriter:
    """pcap (not pcapng) written frame by frame and flushed, so an interrupted capture keeps
    what it saw and a reader at the other end of a pipe sees frames as they come."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.frames = 0
        out.write(PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET))
        out.flush()

    def __call__(self, ts: float, data: bytes, outgoing: bool = False) -> None:
        sec = int(ts)
        self.out.write(RECORD_HEADER.pack(sec, int((ts - sec) * 1e6), len(data), len(data)))
        self.out.write(data)
        self.out.flush()
        self.frames += 1


class PcapStream(PcapWriter):
    """A pcap file at a path (what `labkit capture -w FILE` writes on a local lab)."""

    def __init__(self, path: str) -> None:
        self._fh = open(path, "wb")  # noqa: SIM115 (closed by close())
        super().__init__(self._fh)

    def close(self) -> None:
        self._fh.close()


def read_pcap(data: bytes) -> list[tuple[float, bytes]]:
    """(timestamp, frame) of every record in a classic little-endian pcap."""
    out = []
    if len(data) < PCAP_HEADER.size:
        return out
    pos = PCAP_HEADER.size
    while pos + RECORD_HEADER.size <= len(data):
        sec, usec, incl, _ = RECORD_HEADER.unpack_from(data, pos)
        pos += RECORD_HEADER.size
        out.append((sec + usec / 1e6, data[pos:pos + incl]))
        pos += incl
    return out


def count_pcap(fh: BinaryIO) -> int:
    """Records in a classic pcap file, read header by header (a capture of a million
    jumbo frames is counted in constant memory, not loaded)."""
    if len(fh.read(PCAP_HEADER.size)) < PCAP_HEADER.size:
        return 0
    frames = 0
    while len(head := fh.read(RECORD_HEADER.size)) == RECORD_HEADER.size:
        _, _, incl, _ = RECORD_HEADER.unpack(head)
        fh.seek(incl, os.SEEK_CUR)
        frames += 1
    return frames


def open_socket(ns: str | None, iface: str) -> socket.socket:
    """A raw socket bound to one interface of a namespace (None: the current one).

    Protocol 0 receives nothing until bind() names the interface and the protocol, so no
    frame of another interface can slip in before the bind.
    """
    if ns is None:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            sock.bind((iface, ETH_P_ALL))  # CPython applies htons itself
        except OSError:
            sock.close()
            raise
        return sock
    from labkit.base import netns

    sock = netns.socket_in(ns, socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        with netns.entered(ns):
            sock.bind((iface, ETH_P_ALL))
    except OSError:
        sock.close()
        raise
    return sock


def capture(ns: str | None, iface: str, *, count: int = 1000, duration: float = 10.0,
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


def main(argv: list[str] | None = None) -> int:
    """Capture on IFACE of the current namespace, pcap to stdout; "ready" on stderr first."""
    ap = argparse.ArgumentParser(prog="python -m labkit.packets.capture")
    ap.add_argument("iface")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=10.0)
    args = ap.parse_args(argv)
    try:
        sock = open_socket(None, args.iface)
    except OSError as exc:
        print(f"cannot capture on {args.iface}: {exc.strerror}", file=sys.stderr)
        return 2
    sys.stderr.write("ready\n")
    sys.stderr.flush()
    writer = PcapWriter(sys.stdout.buffer)
    try:
        capture(None, args.iface, count=args.count, duration=args.duration, sock=sock,
                on_frame=writer)
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
