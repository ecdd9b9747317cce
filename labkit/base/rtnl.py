"""rtnetlink sockets living in lab namespaces, and kernel errors turned into user errors.

Building a lab and reading its interfaces take a handful of requests (links, addresses,
routes). `Rtnl` sends them itself on a plain netlink socket: struct packing only. pyroute2
would do the same through an asyncio loop per request and ~8 s of imports in a TCG guest
(where a lab is built), 30 ms of work per request here (issue 18). `iproute`/`opened`
still hand out pyroute2's IPRoute, imported on first use, for code that needs more of
rtnetlink than this (traffic control, route lookups).

A socket is created while this thread is inside the namespace (see netns.entered), so it
lives there; no helper process is forked and no namespace is ever created by accident.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from labkit.base import netlink, netns
from labkit.base.netlink import (
    NETLINK_ROUTE,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    KernelRefused,
    attrs,
    nla,
    nla_str,
    nla_u32,
)
from labkit.errors import LabkitError, Loc

if TYPE_CHECKING:
    from pyroute2.iproute import IPRoute

# <linux/rtnetlink.h>, <linux/if_link.h>, <linux/if_addr.h> (netlink.h's are the core's)
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_GETADDR, RTM_NEWROUTE = 16, 18, 20, 22, 24
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER = 1, 3, 4, 10
IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_IFALIAS, IFLA_NET_NS_FD = 16, 18, 20, 28
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFLA_BR_FORWARD_DELAY, IFLA_BR_STP_STATE, IFLA_BR_MCAST_SNOOPING = 1, 5, 23
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY = 1, 4, 5
RT_TABLE_MAIN, RTPROT_BOOT, RTN_UNICAST = 254, 3, 1
IFF_UP = 0x1
OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")

_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg: family, dst/src len, tos, table, proto...

# The kernel refused a request: errno, and its extended-ack message if it gave one (as
# strerror, which kernel_error shows). The core's one class, under the name callers know.
NetlinkError = KernelRefused


def nested(kind: int, *parts: bytes) -> bytes:
    """A nested attribute (without NLA_F_NESTED, as iproute2 sends it)."""
    return nla(kind, b"".join(parts))


def parse_attrs(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """type -> payload of the attributes in data[offset:] (nested flag cleared)."""
    return dict(attrs(data[offset:]))


def bridge_data(forward_delay: int = 0, stp: bool = False,
                mcast_snooping: bool | None = None) -> bytes:
    """IFLA_INFO_DATA of a bridge: STP off and no forwarding delay by default (a lab's
    bridges have no loops to protect against and should forward at once)."""
    out = nla_u32(IFLA_BR_FORWARD_DELAY, forward_delay) + nla_u32(IFLA_BR_STP_STATE,
                                                                  int(stp))
    if mcast_snooping is not None:
        out += nla(IFLA_BR_MCAST_SNOOPING, struct.pack("=B", int(mcast_snooping)))
    return out


def peer_data(peer: str, peer_ns_fd: int | None = None) -> bytes:
    """IFLA_INFO_DATA of a veth (or a veth-like kind): its peer's name and namespace."""
    body = nla_str(IFLA_IFNAME, peer)
    if peer_ns_fd is not None:
        body += nla_u32(IFLA_NET_NS_FD, peer_ns_fd)
    return nested(VETH_INFO_PEER, _IFINFO.pack(0, 0, 0, 0, 0) + body)


class Rtnl:
    """One rtnetlink socket in one namespace (this thread's when ns is None)."""

    def __init__(self, ns: str | None = None) -> None:
        self.sock = netlink.open_socket(NETLINK_ROUTE, netns=ns)
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests ---------------------------------------------------------------------
    def request(self, kind: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
        """Send one request; its answers (type, payload) until the ack or the dump's end.
        NetlinkError if the kernel refused it."""
        self.seq += 1
        msgs = netlink.exchange(self.sock, netlink.message(kind, flags | NLM_F_REQUEST,
                                                           self.seq, body), self.seq)
        return [(m.type, m.payload) for m in msgs]

    def _link(self, flags: int, index: int, body_attrs: bytes, up: bool | None = None) -> None:
        ifi_flags, change = (0, 0) if up is None else (IFF_UP if up else 0, IFF_UP)
        self.request(RTM_NEWLINK, NLM_F_ACK | flags,
                     _IFINFO.pack(socket.AF_UNSPEC, 0, index, ifi_flags, change) + body_attrs)

    def add_link(self, name: str, kind: str, data: bytes = b"", master: int | None = None,
                 up: bool | None = None) -> None:
        """Create a link (data: its IFLA_INFO_DATA, see bridge_data and peer_data)."""
        info = nla_str(IFLA_INFO_KIND, kind) + (nla(IFLA_INFO_DATA, data)
                                                   if data else b"")
        body_attrs = nla_str(IFLA_IFNAME, name) + nested(IFLA_LINKINFO, info)
        if master is not None:
            body_attrs += nla_u32(IFLA_MASTER, master)
        self._link(NLM_F_CREATE | NLM_F_EXCL, 0, body_attrs, up)

    def set_link(self, index: int = 0, name: str | None = None, up: bool | None = None,
                 mtu: int | None = None, alias: str | None = None,
                 master: int | None = None) -> None:
        """Change a link found by index, or by name when index is 0."""
        body_attrs = nla_str(IFLA_IFNAME, name) if name and not index else b""
        if mtu is not None:
            body_attrs += nla_u32(IFLA_MTU, mtu)
        if alias is not None:
            body_attrs += nla_str(IFLA_IFALIAS, alias)
        if master is not None:
            body_attrs += nla_u32(IFLA_MASTER, master)
        self._link(0, index, body_attrs, up)

    def index(self, name: str) -> int:
        """The ifindex of a link by name (NetlinkError ENODEV if there is none)."""
        answers = self.request(RTM_GETLINK, 0, _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
                               + nla_str(IFLA_IFNAME, name))
        return int(_IFINFO.unpack_from(answers[0][1])[2])

    def links(self) -> list[dict[str, Any]]:
        """Every link: index, flags, ifname, mtu, state (operstate), mac, master, alias,
        kind (the names `ip -j link` and pyroute2 use)."""
        out = []
        for _, payload in self.request(RTM_GETLINK, NLM_F_DUMP,
                                       _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
            _, _, index, flags, _ = _IFINFO.unpack_from(payload)
            a = parse_attrs(payload, _IFINFO.size)
            info = parse_attrs(a[IFLA_LINKINFO]) if IFLA_LINKINFO in a else {}
            state = a.get(IFLA_OPERSTATE, b"\0")[0]
            out.append({
                "index": index, "flags": flags,
                "ifname": _str(a.get(IFLA_IFNAME)),
                "mtu": _u32(a.get(IFLA_MTU)),
                "state": OPERSTATES[state] if state < len(OPERSTATES) else str(state),
                "mac": ":".join(f"{b:02x}" for b in a[IFLA_ADDRESS])
                if IFLA_ADDRESS in a else None,
                "master": _u32(a.get(IFLA_MASTER)),
                "alias": _str(a.get(IFLA_IFALIAS)),
                "kind": _str(info.get(IFLA_INFO_KIND)),
            })
        return out

    def add_addr(self, index: int, address: str, prefixlen: int, flags: int = 0) -> None:
        ip = ipaddress.ip_address(address)
        family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
        raw = ip.packed
        self.request(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
                     _IFADDR.pack(family, prefixlen, flags, 0, index)
                     + nla(IFA_LOCAL, raw) + nla(IFA_ADDRESS, raw))

    def addrs(self) -> list[tuple[int, str]]:
        """(ifindex, "address/prefixlen") of every address, as `ip -j addr` lists them."""
        out = []
        for _, payload in self.request(RTM_GETADDR, NLM_F_DUMP,
                                       _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
            family, prefixlen, _, _, index = _IFADDR.unpack_from(payload)
            a = parse_attrs(payload, _IFADDR.size)
            raw = a.get(IFA_ADDRESS) or a.get(IFA_LOCAL)
            if raw is not None and family in (socket.AF_INET, socket.AF_INET6):
                out.append((index, f"{ipaddress.ip_address(raw)}/{prefixlen}"))
        return out

    def add_route(self, dst: str, via: str, oif: int | None = None) -> None:
        """A unicast route in the main table, as `ip route add DST via VIA [dev]` adds it."""
        net = ipaddress.ip_network(dst, strict=False)
        family = socket.AF_INET if net.version == 4 else socket.AF_INET6
        body_attrs = nla(RTA_GATEWAY, ipaddress.ip_address(via).packed)
        if net.prefixlen:
            body_attrs += nla(RTA_DST, net.network_address.packed)
        if oif is not None:
            body_attrs += nla_u32(RTA_OIF, oif)
        self.request(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
                     _RTMSG.pack(family, net.prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT,
                                 0, RTN_UNICAST, 0) + body_attrs)


def _str(raw: bytes | None) -> str | None:
    return raw.rstrip(b"\0").decode(errors="replace") if raw is not None else None


def _u32(raw: bytes | None) -> int | None:
    return struct.unpack("=I", raw[:4])[0] if raw is not None and len(raw) >= 4 else None


def iproute(ns: str) -> IPRoute:
    """pyroute2's IPRoute in namespace ns (imports pyroute2's rtnetlink: seconds in a TCG
    guest; Rtnl covers building and reading a lab)."""
    from pyroute2.iproute import IPRoute

    with netns.entered(ns):
        return IPRoute(ext_ack=True)


@contextlib.contextmanager
def opened(ns: str) -> Iterator[IPRoute]:
    ipr = iproute(ns)
    try:
        yield ipr
    finally:
        ipr.close()


def kernel_error(exc: BaseException, what: str, loc: Loc | None = None) -> LabkitError:
    """Say which step the kernel refused and why, pointing at the topology line."""
    code, message = _code_and_text(exc)
    hint = {
        errno.EPERM: "labkit needs root (CAP_NET_ADMIN) for this.",
        errno.EEXIST: "Something with that name or address already exists; "
                      "is another lab using it? Try `labkit status`.",
        errno.EOPNOTSUPP: "This kernel lacks the feature; `labkit doctor` lists what it has.",
        errno.ENETUNREACH: "The gateway is not reachable from the node's subnets.",
    }.get(code, "")
    return LabkitError(f"the kernel refused to {what}: {message}.", hint=hint, loc=loc)


def _code_and_text(exc: BaseException) -> tuple[int, str]:
    if isinstance(exc, OSError) and exc.errno:  # Rtnl's NetlinkError, or a syscall's
        return exc.errno, exc.strerror or os.strerror(exc.errno)
    code = getattr(exc, "code", None)  # pyroute2's NetlinkError (not imported for this)
    if type(exc).__name__ == "NetlinkError" and isinstance(code, int):
        args = exc.args
        return code, str(args[1]) if len(args) > 1 and args[1] else os.strerror(code)
    return 0, str(exc)
