"""TCP streams rebuilt from captured frames: one direction of one connection, its payload
in sequence order. The one reassembler behind every verdict that reads a stream off the
wire (kproxy legs, the offload NIC's output, handshake consumers' ports).

A tap (labkit.packets.tap) hands over frames as the kernel saw them: veth gives TSO/GSO
super-frames of up to 64 KiB, and a loaded TCG guest retransmits spuriously, often only
the first MSS of a super-frame already captured. So for one sequence number the longest
payload is kept (a short retransmission never replaces a long original), and overlaps
are cut where they start. Parsing is the standard library's struct: Ethernet, IPv4 or
IPv6 (no extension headers: labs send none), TCP.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

Endpoint = tuple[str, int]  # address, port
HALF_SPACE = 1 << 31  # sequence offsets past this lie before the stream's start


@dataclass(frozen=True)
class Segment:
    src: Endpoint
    dst: Endpoint
    seq: int
    syn: bool
    payload: bytes


def parse(frame: bytes) -> Segment | None:
    """The TCP segment in an Ethernet frame, or None for anything else."""
    if len(frame) < 14:
        return None
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    if ethertype == 0x0800 and len(frame) >= 34:
        ihl = (frame[14] & 0x0F) * 4
        total, proto = struct.unpack_from("!H", frame, 16)[0], frame[23]
        src, dst = socket.inet_ntop(socket.AF_INET, frame[26:30]), \
            socket.inet_ntop(socket.AF_INET, frame[30:34])
        # a GSO super-frame may say 0 for its total length: then the frame's end counts
        start, end = 14 + ihl, (14 + total if total else len(frame))
    elif ethertype == 0x86DD and len(frame) >= 54:
        plen, proto = struct.unpack_from("!H", frame, 18)[0], frame[20]
        src, dst = socket.inet_ntop(socket.AF_INET6, frame[22:38]), \
            socket.inet_ntop(socket.AF_INET6, frame[38:54])
        start, end = 54, (54 + plen if plen else len(frame))
    else:
        return None
    if proto != 6 or len(frame) < start + 20:
        return None
    sport, dport, seq = struct.unpack_from("!HHI", frame, start)
    offset = (frame[start + 12] >> 4) * 4
    return Segment((src, sport), (dst, dport), seq, bool(frame[start + 13] & 0x02),
                   frame[start + offset:min(end, len(frame))])


@dataclass
class Stream:
    """One direction of one connection, rebuilt from segments by sequence number."""

    src: Endpoint
    dst: Endpoint
    isn: int | None = None  # the SYN's sequence number, if the capture has it
    parts: dict[int, bytes] = field(default_factory=dict)

    @property
    def syn_seen(self) -> bool:
        return self.isn is not None

    @property
    def flow(self) -> str:
        return f"{self.src[0]}:{self.src[1]} > {self.dst[0]}:{self.dst[1]}"

    @property
    def payload_bytes(self) -> int:
        """Captured payload, each sequence number once."""
        return sum(len(p) for p in self.parts.values())

    def add(self, seg: Segment) -> None:
        if seg.syn:
            if self.isn is not None and seg.seq != self.isn:
                self.parts.clear()  # the same four-tuple, a new connection: start over
            self.isn = seg.seq
            return
        if len(seg.payload) > len(self.parts.get(seg.seq, b"")):
            self.parts[seg.seq] = seg.payload

    def data(self) -> tuple[bytes, bool]:
        """The contiguous bytes from the first after the SYN (without a SYN, from the
        lowest sequence number seen), and whether a hole in the capture cut them short."""
        if not self.parts:
            return b"", False
        start = (self.isn + 1) & 0xFFFFFFFF if self.isn is not None else min(self.parts)
        out = bytearray()
        pos = 0
        ordered = sorted(((s - start) & 0xFFFFFFFF, p) for s, p in self.parts.items())
        for off, chunk in ordered:
            if off >= HALF_SPACE:
                continue  # before the start (a previous connection's tail)
            if off > pos:
                return bytes(out), True
            if off + len(chunk) > pos:
                out += chunk[pos - off:]
                pos = off + len(chunk)
        return bytes(out), False


def streams(frames: list[bytes], port: int | None = None) -> dict[tuple[Endpoint, Endpoint],
                                                                   Stream]:
    """Every direction seen (to or from `port`, if given), keyed (src, dst), in the order
    of their first frame."""
    found: dict[tuple[Endpoint, Endpoint], Stream] = {}
    for frame in frames:
        seg = parse(frame)
        if seg is None or (port is not None and port not in (seg.src[1], seg.dst[1])):
            continue
        found.setdefault((seg.src, seg.dst), Stream(seg.src, seg.dst)).add(seg)
    return found
