"""Where a TIPC message sits in a captured frame, and how to put another one in its place.

TIPC travels in Ethernet frames (ethertype 0x88CA, also behind VLAN tags) and in UDP
datagrams to or from port 6118 (udp bearer). Captures come as Ethernet, Linux cooked
(SLL, SLL2: `tcpdump -i any`) or raw IP. Replacing the message keeps every byte before
it and fixes what depends on its length: UDP length and checksum, the IP total or payload
length and the IPv4 header checksum.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from labkit.features.tipc.uapi import ETH_P_TIPC
from labkit.features.tipc.uapi import UDP_PORT as TIPC_UDP_PORT

ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
VLAN_TYPES = (0x8100, 0x88A8, 0x9100)
LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_SLL, LINKTYPE_SLL2 = 1, 101, 113, 276
LINKTYPES = {LINKTYPE_ETHERNET: "Ethernet", LINKTYPE_RAW: "raw IP",
             LINKTYPE_SLL: "Linux cooked (SLL)", LINKTYPE_SLL2: "Linux cooked (SLL2)"}
IPPROTO_UDP = 17


@dataclass(frozen=True)
class Spot:
    """The TIPC message is frame[start:end]; ip/udp are header offsets when over UDP."""

    start: int
    end: int
    ip: int | None = None
    ip_version: int | None = None
    udp: int | None = None


def locate(linktype: int, frame: bytes,
           udp_ports: tuple[int, ...] = (TIPC_UDP_PORT,)) -> Spot | None:
    """Where TIPC is in this frame, or None (not TIPC, or a link type not handled).

    UDP datagrams count when either port is one of udp_ports (a udp bearer may use
    another port than 6118)."""
    try:
        if linktype == LINKTYPE_ETHERNET:
            off, proto = 12, struct.unpack_from("!H", frame, 12)[0]
            while proto in VLAN_TYPES:
                off += 4
                proto = struct.unpack_from("!H", frame, off)[0]
            return _by_protocol(frame, proto, off + 2, udp_ports)
        if linktype == LINKTYPE_SLL:
            return _by_protocol(frame, struct.unpack_from("!H", frame, 14)[0], 16, udp_ports)
        if linktype == LINKTYPE_SLL2:
            return _by_protocol(frame, struct.unpack_from("!H", frame, 0)[0], 20, udp_ports)
        if linktype == LINKTYPE_RAW and frame:
            version = frame[0] >> 4
            return _by_protocol(frame, ETH_P_IP if version == 4 else ETH_P_IPV6, 0, udp_ports)
    except (struct.error, IndexError):  # shorter than its headers say
        return None
    return None


def _by_protocol(frame: bytes, proto: int, off: int, ports: tuple[int, ...]) -> Spot | None:
    if proto == ETH_P_TIPC:
        return Spot(off, len(frame)) if len(frame) > off else None
    if proto == ETH_P_IP:
        return _udp4(frame, off, ports)
    if proto == ETH_P_IPV6:
        return _udp6(frame, off, ports)
    return None


def _udp4(frame: bytes, ip: int, ports: tuple[int, ...]) -> Spot | None:
    vihl, = struct.unpack_from("!B", frame, ip)
    if vihl >> 4 != 4:
        return None
    ihl = (vihl & 0xF) * 4
    frag, proto = struct.unpack_from("!H", frame, ip + 6)[0], frame[ip + 9]
    if proto != IPPROTO_UDP or frag & 0x3FFF:  # not UDP, or a fragment
        return None
    return _udp(frame, ip, 4, ip + ihl, ports)


def _udp6(frame: bytes, ip: int, ports: tuple[int, ...]) -> Spot | None:
    if frame[ip] >> 4 != 6 or frame[ip + 6] != IPPROTO_UDP:
        return None
    return _udp(frame, ip, 6, ip + 40, ports)


def _udp(frame: bytes, ip: int, version: int, udp: int,
         ports: tuple[int, ...]) -> Spot | None:
    sport, dport, length = struct.unpack_from("!HHH", frame, udp)
    if (sport not in ports and dport not in ports) or length < 8:
        return None
    end = min(len(frame), udp + length)
    return Spot(udp + 8, end, ip, version, udp) if end > udp + 8 else None


def replace(frame: bytes, spot: Spot, message: bytes) -> bytes:
    """The frame with the TIPC message at spot replaced by message (trailing padding dropped)."""
    out = bytearray(frame[:spot.start] + message)
    if spot.udp is None or spot.ip is None:
        return bytes(out)
    udp_len = 8 + len(message)
    had_csum = struct.unpack_from("!H", out, spot.udp + 6)[0] != 0
    struct.pack_into("!H", out, spot.udp + 4, udp_len)
    struct.pack_into("!H", out, spot.udp + 6, 0)
    if spot.ip_version == 4:
        ihl = (out[spot.ip] & 0xF) * 4
        struct.pack_into("!H", out, spot.ip + 2, ihl + udp_len)
        struct.pack_into("!H", out, spot.ip + 10, 0)
        struct.pack_into("!H", out, spot.ip + 10, _csum(bytes(out[spot.ip:spot.ip + ihl])))
        if not had_csum:  # IPv4 may go without one (the kernel's udp bearer does): keep it so
            return bytes(out)
        pseudo = bytes(out[spot.ip + 12:spot.ip + 20]) + struct.pack("!BBH", 0, 17, udp_len)
    else:
        struct.pack_into("!H", out, spot.ip + 4, udp_len)
        pseudo = bytes(out[spot.ip + 8:spot.ip + 40]) + struct.pack("!IxxxB", udp_len, 17)
    csum = _csum(pseudo + bytes(out[spot.udp:])) or 0xFFFF
    struct.pack_into("!H", out, spot.udp + 6, csum)
    return bytes(out)


def _csum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
