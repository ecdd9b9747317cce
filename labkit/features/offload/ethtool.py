"""`ethtool -S`, `-k` and `-K` as ioctls (SIOCETHTOOL) from this process.

Widgets poll the NIC's counters every second, in a VM under emulation where starting
`ethtool` costs a tenth of a second or more; an ioctl on a socket of the node's
namespace costs microseconds. Layouts are include/uapi/linux/ethtool.h's.
"""

from __future__ import annotations

import array
import fcntl
import socket
import struct

SIOCETHTOOL = 0x8946
ETHTOOL_GSTRINGS = 0x1B
ETHTOOL_GSTATS = 0x1D
ETHTOOL_GSSET_INFO = 0x37
ETHTOOL_GFEATURES = 0x3A
ETHTOOL_SFEATURES = 0x3B
ETH_SS_STATS = 1
ETH_SS_FEATURES = 4
ETH_GSTRING_LEN = 32
TLS_TX_FEATURE = "tls-hw-tx-offload"


def _ioctl(sock: socket.socket, ifname: str, buf: bytearray) -> None:
    data = array.array("B", buf)
    addr, _ = data.buffer_info()
    ifreq = struct.pack("16sP16x", ifname.encode(), addr)
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
    buf[:] = data.tobytes()


def _set_size(sock: socket.socket, ifname: str, sset: int) -> int:
    buf = bytearray(struct.pack("=IIQI", ETHTOOL_GSSET_INFO, 0, 1 << sset, 0))
    _ioctl(sock, ifname, buf)
    mask = struct.unpack_from("=Q", buf, 8)[0]
    return struct.unpack_from("=I", buf, 16)[0] if mask & (1 << sset) else 0


def strings(sock: socket.socket, ifname: str, sset: int) -> list[str]:
    count = _set_size(sock, ifname, sset)
    buf = bytearray(struct.pack("=III", ETHTOOL_GSTRINGS, sset, count)
                    + bytes(count * ETH_GSTRING_LEN))
    _ioctl(sock, ifname, buf)
    raw = buf[12:]
    return [raw[i * ETH_GSTRING_LEN:(i + 1) * ETH_GSTRING_LEN].split(b"\0", 1)[0].decode()
            for i in range(count)]


def stats(sock: socket.socket, ifname: str) -> dict[str, int]:
    """The device's `ethtool -S` counters by name."""
    names = strings(sock, ifname, ETH_SS_STATS)
    buf = bytearray(struct.pack("=II", ETHTOOL_GSTATS, len(names)) + bytes(8 * len(names)))
    _ioctl(sock, ifname, buf)
    values = struct.unpack_from(f"={len(names)}Q", buf, 8)
    return dict(zip(names, values, strict=True))


def _feature_bit(sock: socket.socket, ifname: str, name: str) -> tuple[int, int]:
    """(bit, blocks): the feature's bit, and the u32 words the kernel's feature set takes
    (ETHTOOL_SFEATURES wants exactly ETHTOOL_DEV_FEATURE_WORDS of them)."""
    names = strings(sock, ifname, ETH_SS_FEATURES)
    if name not in names:
        raise OSError(95, f"{ifname} has no feature {name}")  # EOPNOTSUPP
    return names.index(name), (len(names) + 31) // 32


def feature(sock: socket.socket, ifname: str, name: str = TLS_TX_FEATURE) -> bool:
    """Whether a feature is active now (`ethtool -k` "on")."""
    bit, blocks = _feature_bit(sock, ifname, name)
    buf = bytearray(struct.pack("=II", ETHTOOL_GFEATURES, blocks) + bytes(16 * blocks))
    _ioctl(sock, ifname, buf)
    active = struct.unpack_from("=I", buf, 8 + 16 * (bit // 32) + 8)[0]
    return bool(active & (1 << (bit % 32)))


def set_feature(sock: socket.socket, ifname: str, on: bool,
                name: str = TLS_TX_FEATURE) -> None:
    """`ethtool -K IFNAME NAME on|off`."""
    bit, blocks = _feature_bit(sock, ifname, name)
    body = bytearray(8 * blocks)
    struct.pack_into("=II", body, 8 * (bit // 32), 1 << (bit % 32),
                     (1 << (bit % 32)) if on else 0)
    buf = bytearray(struct.pack("=II", ETHTOOL_SFEATURES, blocks) + bytes(body))
    _ioctl(sock, ifname, buf)
