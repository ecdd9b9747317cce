"""Classic pcap files of Ethernet frames, read without scapy: what `inject` replays and
what a capture without a display filter counts.
"""

from __future__ import annotations

import errno
import struct

from labkit.base import files

PCAP_MAGICS = {0xA1B2C3D4: ("<", 1e-6), 0xA1B23C4D: ("<", 1e-9),
               0xD4C3B2A1: (">", 1e-6), 0x4D3CB2A1: (">", 1e-9)}
LINKTYPE_ETHERNET = 1


def read_pcap_file(path: str) -> list[bytes]:
    """The frames of a classic pcap (either byte order, micro- or nanoseconds) of Ethernet;
    ValueError says why a file is not one."""
    try:
        data = files.read_bounded(path, files.PCAP, binary=True)
    except files.FileRefused as exc:  # callers report an OSError's strerror
        raise OSError(exc.errno or errno.EINVAL, exc.message) from None
    if len(data) < 24:
        raise ValueError("it is too short to be a pcap file")
    magic = struct.unpack("<I", data[:4])[0]
    if magic not in PCAP_MAGICS:
        what = "a pcapng file" if data[:4] == b"\n\r\r\n" else "not a pcap file"
        raise ValueError(f"it is {what}")
    order = PCAP_MAGICS[magic][0]
    linktype = struct.unpack(order + "I", data[20:24])[0]
    if linktype != LINKTYPE_ETHERNET:
        raise ValueError(f"its link type is {linktype}, not Ethernet (1)")
    out, pos = [], 24
    while pos + 16 <= len(data):
        incl = struct.unpack(order + "I", data[pos + 8:pos + 12])[0]
        pos += 16
        if pos + incl > len(data):
            raise ValueError(f"frame {len(out) + 1} is cut short")
        out.append(data[pos:pos + incl])
        pos += incl
    return out

