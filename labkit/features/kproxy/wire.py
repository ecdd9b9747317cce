"""What crossed a leg, judged from captured frames: TCP streams reassembled per direction,
then read as TLS records. Used to show that a TLS pair's legs carry nothing but TLS
records (whatever terminates TLS: kTLS in the kernel or OpenSSL in the proxy).

Frames come from taps (labkit.packets.tap) inside a node; veth hands over TSO/GSO
super-frames of up to 64 KiB, which the reader takes as they are.
Standard library only.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD
TCP = 6
TLS_TYPES = {20: "change_cipher_spec", 21: "alert", 22: "handshake", 23: "application_data"}
MAX_RECORD = (1 << 14) + 256
Flow = tuple[str, int, str, int]  # src, sport, dst, dport


@dataclass
class Stream:
    """One direction of one TCP connection: payload bytes by sequence number."""

    isn: int | None = None
    parts: dict[int, bytes] = field(default_factory=dict)

    def add(self, seq: int, syn: bool, payload: bytes) -> None:
        if syn:
            self.isn = seq
        if payload:
            self.parts[seq] = payload

    def data(self) -> bytes:
        """The payload in order from the first byte after the SYN (or the lowest seen)."""
        if not self.parts:
            return b""
        start = (self.isn + 1) & 0xFFFFFFFF if self.isn is not None else min(self.parts)
        out = bytearray()
        offset = {((seq - start) & 0xFFFFFFFF): p for seq, p in self.parts.items()}
        pos = 0
        for off in sorted(offset):
            chunk = offset[off]
            if off > pos:
                break  # a hole: stop at what is contiguous
            out += chunk[pos - off:]
            pos = max(pos, off + len(chunk))
        return bytes(out)


def parse_frame(frame: bytes) -> tuple[Flow, int, bool, bytes] | None:
    """(flow, seq, syn, payload) of a TCP frame, None for anything else."""
    if len(frame) < 14:
        return None
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    if ethertype == ETH_IPV4:
        ihl = (frame[14] & 0x0F) * 4
        total = struct.unpack_from("!H", frame, 16)[0]
        if frame[23] != TCP:
            return None
        src, dst = socket.inet_ntoa(frame[26:30]), socket.inet_ntoa(frame[30:34])
        tcp = 14 + ihl
        end = 14 + total if total else len(frame)
    elif ethertype == ETH_IPV6:
        if frame[20] != TCP:
            return None
        src = socket.inet_ntop(socket.AF_INET6, frame[22:38])
        dst = socket.inet_ntop(socket.AF_INET6, frame[38:54])
        tcp = 54
        end = tcp + struct.unpack_from("!H", frame, 18)[0]
    else:
        return None
    sport, dport, seq = struct.unpack_from("!HHI", frame, tcp)
    data_off = (frame[tcp + 12] >> 4) * 4
    syn = bool(frame[tcp + 13] & 0x02)
    return (src, sport, dst, dport), seq, syn, frame[tcp + data_off: max(end, tcp + data_off)]


def streams(frames: list[bytes]) -> dict[Flow, bytes]:
    """Every TCP direction seen, its payload reassembled."""
    found: dict[Flow, Stream] = {}
    for frame in frames:
        parsed = parse_frame(frame)
        if parsed is None:
            continue
        flow, seq, syn, payload = parsed
        found.setdefault(flow, Stream()).add(seq, syn, payload)
    return {flow: s.data() for flow, s in found.items()}


@dataclass
class TlsReading:
    """A byte stream read as TLS records."""

    records: dict[str, int] = field(default_factory=dict)  # record type -> count
    payload_bytes: int = 0
    consumed: int = 0  # bytes that were whole, well-formed records
    total: int = 0
    problem: str = ""  # why reading stopped before the end, if it did

    @property
    def only_tls(self) -> bool:
        return self.total > 0 and self.consumed == self.total and not self.problem


def read_tls(data: bytes) -> TlsReading:
    out = TlsReading(total=len(data))
    pos = 0
    while pos < len(data):
        if len(data) - pos < 5:
            out.problem = f"{len(data) - pos} bytes at the end are no record header"
            break
        kind, version, length = data[pos], struct.unpack_from("!H", data, pos + 1)[0], \
            struct.unpack_from("!H", data, pos + 3)[0]
        if kind not in TLS_TYPES or version not in (0x0301, 0x0303) or length > MAX_RECORD:
            out.problem = (f"bytes {data[pos:pos + 8].hex()} at offset {pos} are not a TLS "
                           "record header")
            break
        if len(data) - pos - 5 < length:
            out.problem = "the capture ends inside a record"
            break
        name = TLS_TYPES[kind]
        out.records[name] = out.records.get(name, 0) + 1
        out.payload_bytes += length
        pos += 5 + length
        out.consumed = pos
    return out
