"""What crossed a leg, read as TLS records: used to show that a TLS pair's legs carry
nothing but TLS records (whatever terminates TLS: kTLS in the kernel or OpenSSL in the
proxy). The streams come from labkit.packets.tcpstream, the records from labkit.ktls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from labkit.ktls.records import walk
from labkit.ktls.uapi import RECORD_HEADER


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
    """A leg's stream read with labkit.ktls's record reader."""
    walked = walk(data)
    out = TlsReading(records=walked.types(), total=len(data), consumed=walked.consumed,
                     payload_bytes=sum(len(r.body) for r in walked.records))
    if walked.bad_at is not None:
        out.problem = (f"bytes {data[walked.bad_at:walked.bad_at + 8].hex()} at offset "
                       f"{walked.bad_at} are not a TLS record header")
    elif walked.tail >= RECORD_HEADER:
        out.problem = "the capture ends inside a record"
    elif walked.tail:
        out.problem = f"{walked.tail} bytes at the end are no record header"
    return out
