"""What crossed a leg, read as TLS records: used to show that a TLS pair's legs carry
nothing but TLS records (whatever terminates TLS: kTLS in the kernel or OpenSSL in the
proxy). The streams come from labkit.packets.tcpstream. Standard library only.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

TLS_TYPES = {20: "change_cipher_spec", 21: "alert", 22: "handshake", 23: "application_data"}
MAX_RECORD = (1 << 14) + 256


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
