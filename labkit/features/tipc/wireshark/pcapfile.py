"""Classic pcap files, record by record, with bytes and timestamps kept exactly.

The decrypted copy of a capture must differ from the original only in the frames that
were decrypted, so records are read and written as they are (either byte order,
microsecond or nanosecond timestamps) rather than through a packet library.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

from labkit.base import files
from labkit.errors import UsageError

_MAGICS = {
    b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",  # microseconds
    b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">",  # nanoseconds
}
_PCAPNG = b"\x0a\x0d\x0d\x0a"


@dataclass
class Record:
    """One captured frame: timestamp fields as stored, the bytes, the length on the wire."""

    ts_sec: int
    ts_frac: int
    data: bytes
    orig_len: int


@dataclass
class Pcap:
    header: bytes  # the 24-byte global header, written back unchanged
    endian: str
    linktype: int
    records: list[Record] = field(default_factory=list)
    truncated_tail: bool = False  # the last record was cut short (writer killed)


def read(path: str) -> Pcap:
    blob = files.read_bounded(path, files.PCAP, binary=True)  # FileRefused: a UsageError
    if blob[:4] == _PCAPNG:
        raise UsageError(
            f"{path} is a pcapng file; this reads classic pcap only.",
            hint=f"Convert it first: `editcap -F pcap {path} copy.pcap` (editcap comes with "
                 "tshark), then use copy.pcap.")
    endian = _MAGICS.get(blob[:4])
    if endian is None or len(blob) < 24:
        raise UsageError(f"{path} is not a pcap file (no pcap magic number at its start).",
                         hint="Captures from tcpdump -w, `labkit capture` and Wireshark's "
                              "'pcap' format are what this reads.")
    linktype = struct.unpack(endian + "I", blob[20:24])[0] & 0x0FFFFFFF
    out = Pcap(header=blob[:24], endian=endian, linktype=linktype)
    rec = struct.Struct(endian + "IIII")
    pos = 24
    while pos < len(blob):
        if pos + rec.size > len(blob):
            out.truncated_tail = True
            break
        sec, frac, incl, orig = rec.unpack_from(blob, pos)
        pos += rec.size
        if pos + incl > len(blob):
            out.truncated_tail = True
            break
        out.records.append(Record(sec, frac, blob[pos:pos + incl], orig))
        pos += incl
    return out


def write(path: str, pcap: Pcap, mode: int = 0o600) -> None:
    """Write atomically (temporary file, then rename), created with the given mode."""
    rec = struct.Struct(pcap.endian + "IIII")
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(pcap.header)
            for r in pcap.records:
                fh.write(rec.pack(r.ts_sec, r.ts_frac, len(r.data), r.orig_len))
                fh.write(r.data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
