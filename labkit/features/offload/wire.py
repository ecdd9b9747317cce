"""Frames on an interface, and the TCP streams in them, for judging what a NIC sent.

The tap (labkit.packets.tap) is opened before the connection starts, so each stream is
seen from its SYN; both ends of a tlsnic pair hand over GSO super-frames, which it reads
whole, and it counts the frames the kernel dropped. Parsing is the standard library's
struct: Ethernet, IPv4 or IPv6 (no extension headers: labs send none), TCP.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field


@dataclass
class Segment:
    src: tuple[str, int]
    dst: tuple[str, int]
    seq: int
    syn: bool
    payload: bytes


def parse(frame: bytes) -> Segment | None:
    """The TCP segment in an Ethernet frame, or None."""
    if len(frame) < 14:
        return None
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    if ethertype == 0x0800 and len(frame) >= 34:
        ihl = (frame[14] & 0x0F) * 4
        total, proto = struct.unpack_from("!H", frame, 16)[0], frame[23]
        src, dst = socket.inet_ntop(socket.AF_INET, frame[26:30]), \
            socket.inet_ntop(socket.AF_INET, frame[30:34])
        start, end = 14 + ihl, 14 + total
    elif ethertype == 0x86DD and len(frame) >= 54:
        plen, proto = struct.unpack_from("!H", frame, 18)[0], frame[20]
        src, dst = socket.inet_ntop(socket.AF_INET6, frame[22:38]), \
            socket.inet_ntop(socket.AF_INET6, frame[38:54])
        start, end = 54, 54 + plen
    else:
        return None
    if proto != 6 or len(frame) < start + 20:
        return None
    sport, dport, seq = struct.unpack_from("!HHI", frame, start)
    offset = (frame[start + 12] >> 4) * 4
    flags = frame[start + 13]
    return Segment((src, sport), (dst, dport), seq, bool(flags & 0x02),
                   frame[start + offset:min(end, len(frame))])


@dataclass
class Stream:
    """One direction of one connection, rebuilt from segments by sequence number."""

    isn: int | None = None
    parts: dict[int, bytes] = field(default_factory=dict)
    segments: int = 0

    def add(self, seg: Segment) -> None:
        if seg.syn:
            self.isn = seg.seq
            return
        if seg.payload:
            self.segments += 1
            old = self.parts.get(seg.seq, b"")
            if len(seg.payload) > len(old):
                self.parts[seg.seq] = seg.payload

    def data(self) -> tuple[bytes, bool]:
        """The contiguous bytes from the first after the SYN, and whether a gap cut them
        short (None ISN: no SYN seen, nothing can be said from the start)."""
        if self.isn is None:
            return b"", True
        start = (self.isn + 1) & 0xFFFFFFFF
        out = bytearray()
        pos = 0
        for off, chunk in sorted(((s - start) & 0xFFFFFFFF, c) for s, c in self.parts.items()):
            if off > pos:
                return bytes(out), True
            if off + len(chunk) > pos:
                out += chunk[pos - off:]
                pos = off + len(chunk)
        return bytes(out), False


def streams(frames: list[bytes], port: int) -> tuple[Stream, Stream]:
    """(to the port, from the port) of the last connection to the port in the frames."""
    to_port, from_port = Stream(), Stream()
    for frame in frames:
        seg = parse(frame)
        if seg is None:
            continue
        if seg.dst[1] == port:
            if seg.syn:  # a new connection: start over
                to_port, from_port = Stream(), Stream()
            to_port.add(seg)
        elif seg.src[1] == port:
            from_port.add(seg)
    return to_port, from_port
