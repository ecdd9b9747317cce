"""A client for the kernel's TIPC generic-netlink family "TIPCv2", built on pyroute2.

pyroute2 has no TIPC support, so the attribute layout of include/uapi/linux/tipc_netlink.h
is declared here. Requests are built by small pure functions (build_*) so host tests can
check their exact bytes without a TIPC kernel; TipcNetlink sends them.

The netlink socket is created while this thread is inside the lab namespace and handed
to pyroute2 (use_socket), so pyroute2 never forks a helper and can never create a
namespace by accident; pyroute2 refuses to use that socket from another thread instead of
silently opening a new one in whatever namespace that thread is in.

Keys are secrets: key material only ever lives in a Secret (bytes whose repr is redacted),
and error messages never echo a request; NETLINK_CAP_ACK stops the kernel from copying
the request (and so the key) back into its error replies.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pyroute2.netlink import (
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    genlmsg,
    nla,
    nlmsgerr,
)
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import AsyncGenericNetlinkSocket, GenericNetlinkSocket
from pyroute2.netlink.marshal import Marshal

from labkit.base import netns as labnetns
from labkit.errors import LabkitError, MissingFeatureError, UsageError

T = TypeVar("T")

FAMILY = "TIPCv2"
FAMILY_VERSION = 1

# Commands (enum in tipc_netlink.h, counted from TIPC_NL_UNSPEC = 0).
TIPC_NL_BEARER_DISABLE = 2
TIPC_NL_BEARER_ENABLE = 3
TIPC_NL_BEARER_GET = 4
TIPC_NL_BEARER_SET = 5
TIPC_NL_SOCK_GET = 6
TIPC_NL_PUBL_GET = 7
TIPC_NL_LINK_GET = 8
TIPC_NL_LINK_SET = 9
TIPC_NL_LINK_RESET_STATS = 10
TIPC_NL_MEDIA_GET = 11
TIPC_NL_MEDIA_SET = 12
TIPC_NL_NODE_GET = 13
TIPC_NL_NET_GET = 14
TIPC_NL_NET_SET = 15
TIPC_NL_NAME_TABLE_GET = 16
TIPC_NL_MON_SET = 17
TIPC_NL_MON_GET = 18
TIPC_NL_MON_PEER_GET = 19
TIPC_NL_PEER_REMOVE = 20
TIPC_NL_BEARER_ADD = 21
TIPC_NL_UDP_GET_REMOTEIP = 22
TIPC_NL_KEY_SET = 23
TIPC_NL_KEY_FLUSH = 24
TIPC_NL_ADDR_LEGACY_GET = 25

COMMAND_NAMES = {
    TIPC_NL_BEARER_DISABLE: "BEARER_DISABLE",
    TIPC_NL_BEARER_ENABLE: "BEARER_ENABLE",
    TIPC_NL_BEARER_GET: "BEARER_GET",
    TIPC_NL_LINK_GET: "LINK_GET",
    TIPC_NL_NODE_GET: "NODE_GET",
    TIPC_NL_NET_GET: "NET_GET",
    TIPC_NL_NET_SET: "NET_SET",
    TIPC_NL_NAME_TABLE_GET: "NAME_TABLE_GET",
    TIPC_NL_BEARER_ADD: "BEARER_ADD",
    TIPC_NL_KEY_SET: "KEY_SET",
    TIPC_NL_KEY_FLUSH: "KEY_FLUSH",
}

NLA_F_NESTED = 1 << 15
NLM_F_CAPPED = 0x100
NLM_F_ACK_TLVS = 0x200
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11

NODE_ID_LEN = 16
TIPC_UDP_PORT = 6118
TIPC_MAX_LINK_PRI = 31
TIPC_MAX_BEARER_NAME = 32
TIPC_MAX_IF_NAME = 16
TIPC_AEAD_ALG_NAME = 32
AES_GCM_SALT_SIZE = 4
AEAD_KEY_LENGTHS = (16 + 4, 24 + 4, 32 + 4)  # AES-128/192/256 key + 4-byte salt
TIPC_REKEYING_NOW = 0xFFFFFFFF
NET_ID_MIN, NET_ID_MAX = 1, 9999  # tipc_nl_net_set() rejects anything else with EINVAL

# Characters iproute2 and the kernel accept in a printable node identity.
_NAME_CHARS = frozenset(
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_.:@"
)


class Secret(bytes):
    """Key material: usable as bytes, but never shown by repr/str (logs, tracebacks, JSON)."""

    def __repr__(self) -> str:
        return f"<secret: {len(self)} bytes>"

    __str__ = __repr__


# ---------------------------------------------------------------------------------------
# Attribute layout (pyroute2 nla classes). Nests carry NLA_F_NESTED, as iproute2's
# mnl_attr_nest_start does; KEY_SET's node nest is parsed strictly and needs it.


class tipc_prop(nla):
    """Link properties, shared by bearer, link and media nests."""

    prefix = "TIPC_NLA_PROP_"
    nla_map = (
        ("TIPC_NLA_PROP_UNSPEC", "none"),
        ("TIPC_NLA_PROP_PRIO", "uint32"),
        ("TIPC_NLA_PROP_TOL", "uint32"),
        ("TIPC_NLA_PROP_WIN", "uint32"),
        ("TIPC_NLA_PROP_MTU", "uint32"),
        ("TIPC_NLA_PROP_BROADCAST", "uint32"),
        ("TIPC_NLA_PROP_BROADCAST_RATIO", "uint32"),
    )


class tipc_udp_opts(nla):
    prefix = "TIPC_NLA_UDP_"
    nla_map = (
        ("TIPC_NLA_UDP_UNSPEC", "none"),
        ("TIPC_NLA_UDP_LOCAL", "cdata"),  # struct sockaddr_in / sockaddr_in6
        ("TIPC_NLA_UDP_REMOTE", "cdata"),
        ("TIPC_NLA_UDP_MULTI_REMOTEIP", "flag"),
    )


class tipc_bearer(nla):
    prefix = "TIPC_NLA_BEARER_"
    nla_map = (
        ("TIPC_NLA_BEARER_UNSPEC", "none"),
        ("TIPC_NLA_BEARER_NAME", "asciiz"),
        ("TIPC_NLA_BEARER_PROP", "prop | nested"),
        ("TIPC_NLA_BEARER_DOMAIN", "uint32"),
        ("TIPC_NLA_BEARER_UDP_OPTS", "udp_opts | nested"),
    )
    prop = tipc_prop
    udp_opts = tipc_udp_opts


STATS_NAMES = (
    "UNSPEC", "RX_INFO", "RX_FRAGMENTS", "RX_FRAGMENTED", "RX_BUNDLES", "RX_BUNDLED",
    "TX_INFO", "TX_FRAGMENTS", "TX_FRAGMENTED", "TX_BUNDLES", "TX_BUNDLED", "MSG_PROF_TOT",
    "MSG_LEN_CNT", "MSG_LEN_TOT", "MSG_LEN_P0", "MSG_LEN_P1", "MSG_LEN_P2", "MSG_LEN_P3",
    "MSG_LEN_P4", "MSG_LEN_P5", "MSG_LEN_P6", "RX_STATES", "RX_PROBES", "RX_NACKS",
    "RX_DEFERRED", "TX_STATES", "TX_PROBES", "TX_NACKS", "TX_ACKS", "RETRANSMITTED",
    "DUPLICATES", "LINK_CONGS", "MAX_QUEUE", "AVG_QUEUE",
)


class tipc_stats(nla):
    prefix = "TIPC_NLA_STATS_"
    nla_map = tuple(
        (f"TIPC_NLA_STATS_{n}", "none" if n == "UNSPEC" else "uint32") for n in STATS_NAMES
    )


class tipc_link(nla):
    prefix = "TIPC_NLA_LINK_"
    nla_map = (
        ("TIPC_NLA_LINK_UNSPEC", "none"),
        ("TIPC_NLA_LINK_NAME", "asciiz"),
        ("TIPC_NLA_LINK_DEST", "uint32"),
        ("TIPC_NLA_LINK_MTU", "uint32"),
        ("TIPC_NLA_LINK_BROADCAST", "flag"),
        ("TIPC_NLA_LINK_UP", "flag"),
        ("TIPC_NLA_LINK_ACTIVE", "flag"),
        ("TIPC_NLA_LINK_PROP", "prop | nested"),
        ("TIPC_NLA_LINK_STATS", "stats | nested"),
        ("TIPC_NLA_LINK_RX", "uint32"),
        ("TIPC_NLA_LINK_TX", "uint32"),
    )
    prop = tipc_prop
    stats = tipc_stats


class tipc_media(nla):
    prefix = "TIPC_NLA_MEDIA_"
    nla_map = (
        ("TIPC_NLA_MEDIA_UNSPEC", "none"),
        ("TIPC_NLA_MEDIA_NAME", "asciiz"),
        ("TIPC_NLA_MEDIA_PROP", "prop | nested"),
    )
    prop = tipc_prop


class tipc_node(nla):
    prefix = "TIPC_NLA_NODE_"
    nla_map = (
        ("TIPC_NLA_NODE_UNSPEC", "none"),
        ("TIPC_NLA_NODE_ADDR", "uint32"),
        ("TIPC_NLA_NODE_UP", "flag"),
        ("TIPC_NLA_NODE_ID", "cdata"),
        ("TIPC_NLA_NODE_KEY", "cdata"),  # struct tipc_aead_key
        ("TIPC_NLA_NODE_KEY_MASTER", "flag"),
        ("TIPC_NLA_NODE_REKEYING", "uint32"),
    )


class tipc_net(nla):
    prefix = "TIPC_NLA_NET_"
    nla_map = (
        ("TIPC_NLA_NET_UNSPEC", "none"),
        ("TIPC_NLA_NET_ID", "uint32"),
        ("TIPC_NLA_NET_ADDR", "uint32"),
        ("TIPC_NLA_NET_NODEID", "uint64"),  # node id bytes 0-7, host order
        ("TIPC_NLA_NET_NODEID_W1", "uint64"),  # node id bytes 8-15, host order
        ("TIPC_NLA_NET_ADDR_LEGACY", "flag"),
    )


class tipc_publ(nla):
    prefix = "TIPC_NLA_PUBL_"
    nla_map = (
        ("TIPC_NLA_PUBL_UNSPEC", "none"),
        ("TIPC_NLA_PUBL_TYPE", "uint32"),
        ("TIPC_NLA_PUBL_LOWER", "uint32"),
        ("TIPC_NLA_PUBL_UPPER", "uint32"),
        ("TIPC_NLA_PUBL_SCOPE", "uint32"),
        ("TIPC_NLA_PUBL_NODE", "uint32"),
        ("TIPC_NLA_PUBL_REF", "uint32"),
        ("TIPC_NLA_PUBL_KEY", "uint32"),
    )


class tipc_name_table(nla):
    prefix = "TIPC_NLA_NAME_TABLE_"
    nla_map = (
        ("TIPC_NLA_NAME_TABLE_UNSPEC", "none"),
        ("TIPC_NLA_NAME_TABLE_PUBL", "publ | nested"),
    )
    publ = tipc_publ


class tipcmsg(genlmsg):
    """A TIPCv2 genl message: genlmsghdr (cmd, version) + TIPC_NLA_* attributes."""

    prefix = "TIPC_NLA_"
    nla_map = (
        ("TIPC_NLA_UNSPEC", "none"),
        ("TIPC_NLA_BEARER", "bearer | nested"),
        ("TIPC_NLA_SOCK", "hex"),
        ("TIPC_NLA_PUBL", "publ | nested"),
        ("TIPC_NLA_LINK", "link | nested"),
        ("TIPC_NLA_MEDIA", "media | nested"),
        ("TIPC_NLA_NODE", "node | nested"),
        ("TIPC_NLA_NET", "net | nested"),
        ("TIPC_NLA_NAME_TABLE", "name_table | nested"),
        ("TIPC_NLA_MON", "hex"),
        ("TIPC_NLA_MON_PEER", "hex"),
    )
    bearer = tipc_bearer
    publ = tipc_publ
    link = tipc_link
    media = tipc_media
    node = tipc_node
    net = tipc_net
    name_table = tipc_name_table


# ---------------------------------------------------------------------------------------
# Identities, keys and addresses


def node_id_bytes(node_id: bytes | str) -> bytes:
    """The 16-byte node identity, read the way iproute2's str2nodeid reads it.

    A string of up to 16 name characters ([0-9A-Za-z-_.:@]) is used as is, zero-padded
    ("nodeA"); otherwise a string of up to 32 hex digits is the identity in hex. Bytes
    of up to 16 are zero-padded. An all-zero identity means "none" to the kernel.
    """
    if isinstance(node_id, str):
        text = node_id
        if not text:
            raise UsageError("a TIPC node identity cannot be empty.")
        if len(text) <= NODE_ID_LEN and set(text) <= _NAME_CHARS:
            raw = text.encode("ascii")
        elif len(text) <= 2 * NODE_ID_LEN and all(c in "0123456789abcdefABCDEF" for c in text):
            raw = bytes.fromhex(text + ("0" if len(text) % 2 else ""))
        else:
            raise UsageError(
                f"invalid TIPC node identity {text!r}.",
                hint="Use up to 16 characters from [0-9A-Za-z-_.:@] or up to 32 hex digits.",
            )
    else:
        raw = bytes(node_id)
        if len(raw) > NODE_ID_LEN:
            raise UsageError(f"a TIPC node identity has at most 16 bytes, not {len(raw)}.")
    raw = raw.ljust(NODE_ID_LEN, b"\0")
    if not any(raw):
        raise UsageError("a TIPC node identity cannot be all zeros.")
    return raw


def node_id_str(raw: bytes) -> str:
    """The identity as the kernel and iproute2 print it: text if printable, else hex."""
    raw = bytes(raw[:NODE_ID_LEN]).ljust(NODE_ID_LEN, b"\0")
    text = raw.rstrip(b"\0")
    if all(chr(c) in _NAME_CHARS for c in text) and b"\0" not in text:
        return text.decode("ascii")
    return raw.hex().rstrip("0")


def node_hash(raw: bytes) -> int:
    """The 32-bit node address the kernel derives from an identity (hash128to32)."""
    w = struct.unpack("!4I", node_id_bytes(raw))
    return (w[0] ^ w[1] ^ w[2] ^ w[3]) or (w[0] | w[1] | w[2] | w[3])


def aead_key(key: bytes, alg: str = "gcm(aes)") -> Secret:
    """struct tipc_aead_key: char alg_name[32]; u32 keylen (host order); u8 key[keylen].

    key is the AES key followed by the 4-byte salt (20, 28 or 36 bytes).
    """
    if len(key) not in AEAD_KEY_LENGTHS:
        raise UsageError(
            f"a TIPC key must be 20, 28 or 36 bytes (AES key + 4-byte salt), not {len(key)}.",
            hint="Use 16, 24 or 32 random bytes for AES-128/192/256 and append 4 salt bytes.",
        )
    name = alg.encode("ascii")
    if not name or len(name) >= TIPC_AEAD_ALG_NAME:
        raise UsageError(f"invalid TIPC crypto algorithm name {alg!r}.")
    return Secret(name.ljust(TIPC_AEAD_ALG_NAME, b"\0") + struct.pack("=I", len(key)) + key)


def sockaddr(ip: str, port: int, scope_id: int = 0) -> bytes:
    """A raw struct sockaddr_in (16 bytes) or sockaddr_in6 (28 bytes), as getaddrinfo gives."""
    addr = ipaddress.ip_address(ip)
    if not 0 <= port <= 0xFFFF:
        raise UsageError(f"invalid UDP port {port}.")
    if addr.version == 4:
        return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + addr.packed + bytes(8)
    return (
        struct.pack("=H", socket.AF_INET6)
        + struct.pack("!HI", port, 0)
        + addr.packed
        + struct.pack("=I", scope_id)
    )


def parse_sockaddr(raw: bytes) -> tuple[str, int]:
    """(ip, port) from a raw sockaddr_in/sockaddr_in6 the kernel reports."""
    if len(raw) < 4:
        return ("", 0)
    family = struct.unpack_from("=H", raw)[0]
    port = struct.unpack_from("!H", raw, 2)[0]
    if family == socket.AF_INET and len(raw) >= 8:
        return (str(ipaddress.IPv4Address(raw[4:8])), port)
    if family == socket.AF_INET6 and len(raw) >= 24:
        return (str(ipaddress.IPv6Address(raw[8:24])), port)
    return ("", port)


def default_udp_remote(net_id: int, ipv6: bool = False) -> tuple[str, int]:
    """iproute2's default UDP remote: multicast derived from the net id, port 6118."""
    if ipv6:
        return (f"ff02::{net_id}", TIPC_UDP_PORT)
    return (f"228.0.{(net_id >> 8) & 0xFF}.{net_id & 0xFF}", TIPC_UDP_PORT)


def _split_scope(ip: str) -> tuple[str, str]:
    """'fe80::1%veth0' -> ('fe80::1', 'veth0')."""
    head, _, scope = ip.partition("%")
    return head, scope


def _udp_bearer_name(name: str) -> str:
    full = name if name.startswith("udp:") else f"udp:{name}"
    _check_bearer_name(full)
    return full


def _check_bearer_name(full: str) -> None:
    media, sep, ident = full.partition(":")
    if (
        not sep
        or not media
        or not ident
        or len(full) >= TIPC_MAX_BEARER_NAME
        or len(ident) >= TIPC_MAX_IF_NAME
    ):
        raise UsageError(
            f"invalid TIPC bearer name {full!r}.",
            hint="Bearer names are MEDIA:NAME (eth:veth0, udp:u1), the name under 16 characters.",
        )


def _check_priority(priority: int | None) -> None:
    if priority is not None and not 0 <= priority <= TIPC_MAX_LINK_PRI:
        raise UsageError(f"a TIPC link priority is 0..{TIPC_MAX_LINK_PRI}, not {priority}.")


# ---------------------------------------------------------------------------------------
# Request builders: pure, so host tests can check the bytes.


def _msg(cmd: int, attrs: list[Any] | None = None) -> tipcmsg:
    msg = tipcmsg()
    msg["cmd"] = cmd
    msg["version"] = FAMILY_VERSION
    msg["reserved"] = 0
    msg["attrs"] = attrs or []
    return msg


def build_net_set(net_id: int | None = None, node_id: bytes | str | None = None) -> tipcmsg:
    """NET_SET: nest NET { ID u32, NODEID u64, NODEID_W1 u64 } (the id as two host u64)."""
    attrs: list[Any] = []
    if net_id is not None:
        if not NET_ID_MIN <= net_id <= NET_ID_MAX:
            raise UsageError(f"a TIPC net id is {NET_ID_MIN}..{NET_ID_MAX}, not {net_id}.")
        attrs.append(("TIPC_NLA_NET_ID", net_id))
    if node_id is not None:
        w0, w1 = struct.unpack("=QQ", node_id_bytes(node_id))
        attrs += [("TIPC_NLA_NET_NODEID", w0), ("TIPC_NLA_NET_NODEID_W1", w1)]
    if not attrs:
        raise UsageError("set_net needs a net id, a node identity or both.")
    return _msg(TIPC_NL_NET_SET, [("TIPC_NLA_NET", {"attrs": attrs})])


def _prop(priority: int | None) -> list[Any]:
    _check_priority(priority)
    if priority is None:
        return []
    return [("TIPC_NLA_BEARER_PROP", {"attrs": [("TIPC_NLA_PROP_PRIO", priority)]})]


def build_bearer_enable_eth(
    ifname: str, priority: int | None = None, domain: int | None = None
) -> tipcmsg:
    """BEARER_ENABLE: nest BEARER { [DOMAIN], [PROP { PRIO }], NAME "eth:IFNAME" }."""
    name = f"eth:{ifname}"
    _check_bearer_name(name)
    attrs: list[Any] = []
    if domain is not None:
        attrs.append(("TIPC_NLA_BEARER_DOMAIN", domain))
    attrs += _prop(priority)
    attrs.append(("TIPC_NLA_BEARER_NAME", name))
    return _msg(TIPC_NL_BEARER_ENABLE, [("TIPC_NLA_BEARER", {"attrs": attrs})])


def build_bearer_enable_udp(
    name: str,
    local: bytes,
    remote: bytes,
    priority: int | None = None,
    domain: int | None = None,
) -> tipcmsg:
    """BEARER_ENABLE: nest BEARER { ..., NAME "udp:NAME", UDP_OPTS { LOCAL, REMOTE } }.

    local and remote are raw sockaddrs (see sockaddr()); the kernel needs both and the
    same address family for both.
    """
    if len(local) != len(remote):
        raise UsageError("the local and remote UDP addresses must both be IPv4 or both IPv6.")
    attrs: list[Any] = []
    if domain is not None:
        attrs.append(("TIPC_NLA_BEARER_DOMAIN", domain))
    attrs += _prop(priority)
    attrs.append(("TIPC_NLA_BEARER_NAME", _udp_bearer_name(name)))
    attrs.append(
        (
            "TIPC_NLA_BEARER_UDP_OPTS",
            {"attrs": [("TIPC_NLA_UDP_LOCAL", local), ("TIPC_NLA_UDP_REMOTE", remote)]},
        )
    )
    return _msg(TIPC_NL_BEARER_ENABLE, [("TIPC_NLA_BEARER", {"attrs": attrs})])


def build_bearer_add(name: str, remote: bytes) -> tipcmsg:
    """BEARER_ADD: nest BEARER { NAME "udp:NAME", UDP_OPTS { REMOTE } } (a unicast peer)."""
    attrs = [
        ("TIPC_NLA_BEARER_NAME", _udp_bearer_name(name)),
        ("TIPC_NLA_BEARER_UDP_OPTS", {"attrs": [("TIPC_NLA_UDP_REMOTE", remote)]}),
    ]
    return _msg(TIPC_NL_BEARER_ADD, [("TIPC_NLA_BEARER", {"attrs": attrs})])


def build_bearer_disable(name: str) -> tipcmsg:
    """BEARER_DISABLE: nest BEARER { NAME }."""
    _check_bearer_name(name)
    return _msg(
        TIPC_NL_BEARER_DISABLE, [("TIPC_NLA_BEARER", {"attrs": [("TIPC_NLA_BEARER_NAME", name)]})]
    )


def rekeying_value(rekeying: int | str) -> int:
    """Minutes between automatic key changes; 0 turns it off, "now" rekeys once at once."""
    if rekeying == "now":
        return TIPC_REKEYING_NOW
    if isinstance(rekeying, int) and 0 <= rekeying < TIPC_REKEYING_NOW:
        return rekeying
    raise UsageError(f"invalid TIPC rekeying interval {rekeying!r}.",
                     hint="Give minutes (0 turns rekeying off) or \"now\".")


def build_key_set(
    key: bytes | None,
    *,
    master: bool = False,
    node_id: bytes | str | None = None,
    rekeying: int | str | None = None,
    alg: str = "gcm(aes)",
) -> tipcmsg:
    """KEY_SET: nest NODE { KEY tipc_aead_key, [ID 16 bytes], [KEY_MASTER], [REKEYING] }.

    No ID: a cluster key (master=True: the cluster master key). ID = own identity: this
    node's TX key; ID = a peer's identity: the RX key for that peer. key=None with a
    rekeying value only changes the rekeying interval.
    """
    if master and node_id is not None:
        raise UsageError("a per-node TIPC key cannot also be the master key.")
    if key is None and rekeying is None:
        raise UsageError("set_key needs a key, a rekeying interval or both.")
    attrs: list[Any] = []
    if key is not None:
        attrs.append(("TIPC_NLA_NODE_KEY", aead_key(key, alg)))
        if node_id is not None:
            attrs.append(("TIPC_NLA_NODE_ID", node_id_bytes(node_id)))
        if master:
            attrs.append(("TIPC_NLA_NODE_KEY_MASTER", True))
    if rekeying is not None:
        attrs.append(("TIPC_NLA_NODE_REKEYING", rekeying_value(rekeying)))
    return _msg(TIPC_NL_KEY_SET, [("TIPC_NLA_NODE", {"attrs": attrs})])


def build_simple(cmd: int) -> tipcmsg:
    """A request without attributes: the GET dumps and KEY_FLUSH."""
    return _msg(cmd)


def encode(msg: tipcmsg, family_id: int, flags: int, seq: int = 0, pid: int = 0) -> bytes:
    """The wire bytes of a request, as TipcNetlink would send it (for tests and debugging)."""
    msg["header"]["type"] = family_id
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg["header"]["pid"] = pid
    msg.encode()
    return bytes(msg.data[: msg["header"]["length"]])


# ---------------------------------------------------------------------------------------
# Replies


def _prop_dict(prop: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    if prop is None:
        return out
    for key, field in (
        ("TIPC_NLA_PROP_PRIO", "priority"),
        ("TIPC_NLA_PROP_TOL", "tolerance"),
        ("TIPC_NLA_PROP_WIN", "window"),
        ("TIPC_NLA_PROP_MTU", "mtu"),
        ("TIPC_NLA_PROP_BROADCAST", "broadcast_mode"),
        ("TIPC_NLA_PROP_BROADCAST_RATIO", "broadcast_ratio"),
    ):
        value = prop.get_attr(key)
        if value is not None:
            out[field] = value
    return out


def parse_link(msg: Any) -> dict[str, Any] | None:
    """One LINK_GET reply as a dict; the stats nest flattened into 'stats'."""
    link = msg.get_attr("TIPC_NLA_LINK")
    if link is None:
        return None
    stats: dict[str, int] = {}
    nest = link.get_attr("TIPC_NLA_LINK_STATS")
    if nest is not None:
        for name, value in nest["attrs"]:
            if name.startswith("TIPC_NLA_STATS_") and isinstance(value, int):
                stats[name[len("TIPC_NLA_STATS_"):].lower()] = value
    return {
        "name": link.get_attr("TIPC_NLA_LINK_NAME"),
        # The kernel fills DEST with its own cluster mask, a legacy field: not the peer.
        "dest": link.get_attr("TIPC_NLA_LINK_DEST"),
        "mtu": link.get_attr("TIPC_NLA_LINK_MTU"),
        "up": bool(link.get_attr("TIPC_NLA_LINK_UP")),
        "active": bool(link.get_attr("TIPC_NLA_LINK_ACTIVE")),
        "broadcast": bool(link.get_attr("TIPC_NLA_LINK_BROADCAST")),
        "rx_packets": link.get_attr("TIPC_NLA_LINK_RX") or 0,
        "tx_packets": link.get_attr("TIPC_NLA_LINK_TX") or 0,
        "retransmissions": stats.get("retransmitted", 0),
        **_prop_dict(link.get_attr("TIPC_NLA_LINK_PROP")),
        "stats": stats,
    }


def parse_bearer(msg: Any) -> dict[str, Any] | None:
    bearer = msg.get_attr("TIPC_NLA_BEARER")
    if bearer is None:
        return None
    out: dict[str, Any] = {"name": bearer.get_attr("TIPC_NLA_BEARER_NAME")}
    out.update(_prop_dict(bearer.get_attr("TIPC_NLA_BEARER_PROP")))
    udp = bearer.get_attr("TIPC_NLA_BEARER_UDP_OPTS")
    if udp is not None:
        local = udp.get_attr("TIPC_NLA_UDP_LOCAL")
        remote = udp.get_attr("TIPC_NLA_UDP_REMOTE")
        out["udp"] = {
            "local": parse_sockaddr(local) if local else None,
            "remote": parse_sockaddr(remote) if remote else None,
            "multi_remote": bool(udp.get_attr("TIPC_NLA_UDP_MULTI_REMOTEIP")),
        }
    return out


def parse_publication(msg: Any) -> dict[str, Any] | None:
    table = msg.get_attr("TIPC_NLA_NAME_TABLE")
    publ = table.get_attr("TIPC_NLA_NAME_TABLE_PUBL") if table is not None else None
    if publ is None:
        return None
    return {
        "type": publ.get_attr("TIPC_NLA_PUBL_TYPE"),
        "lower": publ.get_attr("TIPC_NLA_PUBL_LOWER"),
        "upper": publ.get_attr("TIPC_NLA_PUBL_UPPER"),
        "scope": publ.get_attr("TIPC_NLA_PUBL_SCOPE"),
        "node": publ.get_attr("TIPC_NLA_PUBL_NODE"),
        "port": publ.get_attr("TIPC_NLA_PUBL_REF"),
        "key": publ.get_attr("TIPC_NLA_PUBL_KEY"),
    }


def parse_net(msg: Any) -> dict[str, Any] | None:
    net = msg.get_attr("TIPC_NLA_NET")
    if net is None:
        return None
    w0 = net.get_attr("TIPC_NLA_NET_NODEID") or 0
    w1 = net.get_attr("TIPC_NLA_NET_NODEID_W1") or 0
    raw = struct.pack("=QQ", w0, w1)
    return {
        "net_id": net.get_attr("TIPC_NLA_NET_ID"),
        "node_id": raw,
        "identity": node_id_str(raw) if any(raw) else None,
        "hash": node_hash(raw) if any(raw) else None,
    }


# ---------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True)
class _Hint:
    cmd: int | None
    code: int
    text: str


NET_SET_HINT = (
    "Set the net id and identity before enabling bearers: once a bearer has given the "
    "node an address they are fixed until the namespace is recreated."
)

_HINTS = (
    _Hint(TIPC_NL_NET_SET, errno.EPERM, NET_SET_HINT),
    _Hint(TIPC_NL_NET_SET, errno.EINVAL, f"The net id must be {NET_ID_MIN}..{NET_ID_MAX}."),
    _Hint(TIPC_NL_BEARER_ENABLE, errno.ENODEV,
          "No such interface in this namespace (eth), or no interface holds the local IP "
          "address (udp)."),
    _Hint(TIPC_NL_BEARER_ENABLE, errno.EADDRINUSE,
          "The UDP port is taken: another bearer or socket in the namespace uses it."),
    _Hint(TIPC_NL_BEARER_ENABLE, errno.EINVAL,
          "Check the bearer name (eth:IFNAME, udp:NAME), that it is not already enabled, "
          "that at most 3 bearers exist, and that local and remote UDP addresses share "
          "a family."),
    _Hint(TIPC_NL_BEARER_ADD, errno.EINVAL,
          "Remote addresses can only be added to a udp bearer with a unicast remote."),
    _Hint(TIPC_NL_BEARER_DISABLE, errno.EINVAL, "No bearer by that name is enabled."),
    _Hint(TIPC_NL_KEY_SET, errno.EPERM,
          "The node has no identity yet: set it (set_net) before setting keys."),
    _Hint(TIPC_NL_KEY_SET, errno.ENODEV,
          "The kernel cannot load the cipher: is CONFIG_CRYPTO_GCM available?"),
    _Hint(TIPC_NL_KEY_SET, errno.EBUSY,
          "Every key slot is in use; flush the keys or wait for the pending key to settle."),
    _Hint(TIPC_NL_KEY_SET, errno.EKEYREJECTED, "The key must be 20, 28 or 36 bytes."),
    _Hint(None, errno.EPERM, "TIPC configuration needs CAP_NET_ADMIN in the namespace."),
)

ENOTSUPP = 524  # kernel-internal, seen by userspace when only "gcm(aes)" is supported


def tipc_error(exc: NetlinkError, cmd: int, netns: str | None) -> LabkitError:
    """A NetlinkError turned into a LabkitError with the kernel's words and a hint.

    Only the errno and the kernel's ext-ack text are used: nothing of the request
    (which may hold a key) goes into the message.
    """
    code = exc.code
    text = ""
    if len(exc.args) > 1 and exc.args[1] and exc.args[1] != os.strerror(code):
        text = str(exc.args[1])
    reason = os.strerror(code) if code != ENOTSUPP else "operation not supported"
    where = f" in namespace {netns}" if netns else ""
    what = COMMAND_NAMES.get(cmd, str(cmd))
    message = f"the kernel refused TIPC {what}{where}: {reason}"
    if text:
        message += f" ({text})"
    message += "."
    hint = next(
        (h.text for h in _HINTS if h.code == code and h.cmd in (cmd, None)), ""
    )
    if code == ENOTSUPP and cmd == TIPC_NL_KEY_SET:
        hint = 'The kernel only supports the "gcm(aes)" algorithm.'
    return LabkitError(message, hint=hint)


# ---------------------------------------------------------------------------------------
# The socket


def parse_error(chunk: bytes) -> nlmsgerr:
    """An NLMSG_ERROR message with the echoed request dropped and the ext-ack TLVs kept.

    pyroute2 0.9.7 cannot decode a capped error (NETLINK_CAP_ACK) and keeps a decoded copy
    of the echoed request, which for KEY_SET would hold the key. Here only the outer
    header, the errno and the TLVs (NLMSGERR_ATTR_MSG...) survive.
    """
    length, mtype, flags, seq, pid = struct.unpack_from("=IHHII", chunk)
    code = struct.unpack_from("=i", chunk, 16)[0] if len(chunk) >= 20 else -errno.EIO
    tlvs = b""
    if flags & NLM_F_ACK_TLVS and len(chunk) >= 36:
        inner_len = struct.unpack_from("=I", chunk, 20)[0]
        echoed = 16 if flags & NLM_F_CAPPED else (inner_len + 3) & ~3
        tlvs = bytes(chunk[20 + echoed:length])
    buf = struct.pack("=IHHIIi", 20 + len(tlvs), mtype, flags, seq, pid, code) + tlvs
    msg = nlmsgerr(buf)
    msg.decode()
    error: Exception | None = None
    if code:
        text = msg.get_attr("NLMSGERR_ATTR_MSG")
        error = (OSError if -code == errno.ENOBUFS else NetlinkError)(abs(code), text)
    msg["header"]["error"] = error
    return msg


class _TipcMarshal(Marshal):
    def parse_one_message(self, key, flags, sequence_number, data, offset, length):  # type: ignore[no-untyped-def]
        if key == NLMSG_ERROR:
            return parse_error(bytes(data[offset:offset + length]))
        return super().parse_one_message(key, flags, sequence_number, data, offset, length)


class _AsyncTipcSocket(AsyncGenericNetlinkSocket):
    module_err_level = "debug"  # a missing family is reported as MissingFeatureError
    marshal_class = _TipcMarshal


class _TipcSocket(GenericNetlinkSocket):
    async_class = _AsyncTipcSocket


def _open_raw(netns: str | None) -> socket.socket:
    """A NETLINK_GENERIC socket in the named namespace (never creating one)."""

    def make() -> socket.socket:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 16)  # NETLINK_GENERIC

    if netns is None:
        sock = make()
    else:
        if not labnetns.exists(netns):
            raise LabkitError(
                f"there is no network namespace {netns!r}.",
                hint="Is the lab up? `labkit status` lists its namespaces.",
            )
        with labnetns.entered(netns):
            sock = make()
    sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
    sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
    return sock


class TipcNetlink:
    """TIPC configuration of one network namespace through the TIPCv2 genl family.

    Use as a context manager; every method raises LabkitError with the kernel's own
    error text when the kernel refuses. Not thread-safe: use it from the thread that
    opened it.
    """

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._nl: _TipcSocket | None = None
        self._raw: socket.socket | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def open(self) -> TipcNetlink:
        if self._nl is not None:
            return self
        raw = _open_raw(self.netns)
        try:
            nl = _TipcSocket(use_socket=raw)
        except BaseException:
            raw.close()
            raise
        try:
            nl.bind(FAMILY, tipcmsg)
        except NetlinkError as exc:
            nl.close()
            raw.close()
            if exc.code == errno.ENOENT:
                raise MissingFeatureError(
                    "the kernel has no TIPC netlink family (TIPCv2).",
                    hint="Load it with `modprobe tipc`, or run the lab in the VM "
                    "(`labkit vm run`) if this kernel has no TIPC.",
                ) from None
            raise tipc_error(exc, 0, self.netns) from None
        self._raw, self._nl = raw, nl
        return self

    def close(self) -> None:
        nl, raw = self._nl, self._raw
        self._nl = self._raw = None
        if nl is not None:
            nl.close()
        if raw is not None:
            raw.close()

    def __enter__(self) -> TipcNetlink:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "open" if self._nl is not None else "closed"
        return f"TipcNetlink(netns={self.netns!r}, {state})"

    @property
    def family_id(self) -> int:
        return self._sock().prid

    def _sock(self) -> _TipcSocket:
        if self._nl is None:
            raise RuntimeError("TipcNetlink is not open; use it as a context manager")
        return self._nl

    def _request(self, msg: tipcmsg, dump: bool = False) -> list[Any]:
        nl = self._sock()
        flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else NLM_F_ACK)
        cmd = msg["cmd"]
        try:
            replies = list(nl.nlm_request(msg, msg_type=nl.prid, msg_flags=flags))
        except NetlinkError as exc:
            raise tipc_error(exc, cmd, self.netns) from None
        return [r for r in replies if r.get("cmd") is not None and r["header"]["type"] == nl.prid]

    def _in_ns(self, fn: Callable[[], T]) -> T:
        if self.netns is None:
            return fn()
        with labnetns.entered(self.netns):
            return fn()

    # -- configuration -----------------------------------------------------------------

    def set_net(self, net_id: int | None = None, node_id: bytes | str | None = None) -> None:
        """NET_SET: the cluster (net) id and this node's 128-bit identity.

        Must come before any bearer: once a bearer has given the node an address the
        kernel answers EPERM. During the first second after a bearer is enabled (the
        address trial) the kernel still accepts a new net id, but the bearer keeps
        advertising the old one and no link comes up: so any enabled bearer is refused
        here, unless nothing would change (so setting up a lab twice is harmless). The
        kernel silently keeps an identity that was already set, so the identity is read
        back and a different one is an error.
        """
        msg = build_net_set(net_id, node_id)
        enabled = [b["name"] for b in self.bearers()]
        if enabled:
            have = self.net()
            if (net_id is None or net_id == have["net_id"]) and (
                node_id is None or node_id_bytes(node_id) == have["node_id"]
            ):
                return
            raise LabkitError(
                f"cannot change the TIPC net id or identity{self._where()}: bearer(s) "
                f"{', '.join(enabled)} already enabled.",
                hint=NET_SET_HINT,
            )
        self._request(msg)
        if node_id is not None:
            want = node_id_bytes(node_id)
            have = self.net()["node_id"]
            if have != want:
                raise LabkitError(
                    f"the TIPC node identity{self._where()} is already "
                    f"{node_id_str(have)!r}; the kernel kept it instead of "
                    f"{node_id_str(want)!r}.",
                    hint="An identity is set once per namespace: set it before enabling "
                    "bearers, or recreate the namespace.",
                )

    def enable_bearer_eth(
        self, ifname: str, priority: int | None = None, domain: int | None = None
    ) -> str:
        """BEARER_ENABLE media eth on an interface of this namespace; returns 'eth:IFNAME'."""
        self._request(build_bearer_enable_eth(ifname, priority, domain))
        return f"eth:{ifname}"

    def enable_bearer_udp(
        self,
        name: str,
        local: tuple[str, int] | str,
        remote: tuple[str, int] | str | None = None,
        priority: int | None = None,
        domain: int | None = None,
    ) -> str:
        """BEARER_ENABLE media udp; returns 'udp:NAME'.

        local/remote are (ip, port) or just ip (port 6118); an IPv6 link-local address
        takes its interface as 'fe80::1%veth0'. Without remote, iproute2's default:
        multicast 228.0.(netid>>8).(netid&0xff) (IPv4) or ff02::NETID (IPv6), port 6118.
        A unicast remote makes a replicast bearer; add more peers with add_udp_remote.
        """
        lip, lport = _ip_port(local)
        lraw = self._sockaddr(lip, lport)
        if remote is None:
            remote = default_udp_remote(self.net()["net_id"], ipv6=len(lraw) > 16)
        rip, rport = _ip_port(remote)
        rraw = self._sockaddr(rip, rport)
        self._request(build_bearer_enable_udp(name, lraw, rraw, priority, domain))
        return _udp_bearer_name(name)

    def add_udp_remote(self, name: str, remote: tuple[str, int] | str) -> None:
        """BEARER_ADD: one more unicast peer for a udp bearer (not for a multicast one)."""
        rip, rport = _ip_port(remote)
        self._request(build_bearer_add(name, self._sockaddr(rip, rport)))

    def disable_bearer(self, name: str) -> None:
        """BEARER_DISABLE by full name ('eth:veth0', 'udp:u1'); its links go down."""
        self._request(build_bearer_disable(name))

    def set_key(
        self,
        key: bytes | None,
        *,
        master: bool = False,
        node_id: bytes | str | None = None,
        rekeying: int | str | None = None,
        alg: str = "gcm(aes)",
    ) -> None:
        """KEY_SET: a cluster key, the master key, or a per-node key (see build_key_set).

        key = AES key + 4-byte salt (20, 28 or 36 bytes). Needs the node identity set.
        The key bytes never appear in errors or logs.
        """
        self._request(
            build_key_set(key, master=master, node_id=node_id, rekeying=rekeying, alg=alg)
        )

    def flush_keys(self) -> None:
        """KEY_FLUSH: remove every TX and RX key of this node."""
        self._request(build_simple(TIPC_NL_KEY_FLUSH))

    # -- state -------------------------------------------------------------------------

    def net(self) -> dict[str, Any]:
        """NET_GET: {net_id, node_id (16 bytes), identity (printable), hash}."""
        for reply in self._request(build_simple(TIPC_NL_NET_GET), dump=True):
            parsed = parse_net(reply)
            if parsed is not None:
                return parsed
        raise LabkitError(f"the kernel sent no TIPC net information{self._where()}.")

    def own_address(self) -> int:
        """This node's 32-bit address (0 until a bearer ended the address trial)."""

        def get() -> int:
            with socket.socket(socket.AF_TIPC, socket.SOCK_RDM) as s:
                # CPython gives (TIPC_ADDR_ID, node, ref, 0, scope)
                return int(s.getsockname()[1])

        return self._in_ns(get)

    def bearers(self) -> list[dict[str, Any]]:
        """BEARER_GET dump: name, priority, tolerance, window, [mtu, udp{local,remote}]."""
        out = [parse_bearer(r) for r in self._request(build_simple(TIPC_NL_BEARER_GET), True)]
        return [b for b in out if b is not None]

    def links(self) -> list[dict[str, Any]]:
        """LINK_GET dump: the broadcast link and every unicast link with its counters."""
        out = [parse_link(r) for r in self._request(build_simple(TIPC_NL_LINK_GET), True)]
        return [link for link in out if link is not None]

    def nodes(self) -> list[dict[str, Any]]:
        """NODE_GET dump: {addr, up, identity} of every peer node this node knows."""
        out = []
        for reply in self._request(build_simple(TIPC_NL_NODE_GET), dump=True):
            node = reply.get_attr("TIPC_NLA_NODE")
            if node is None:
                continue
            addr = node.get_attr("TIPC_NLA_NODE_ADDR")
            raw = self.node_id_of(addr) if addr else None
            out.append({
                "addr": addr,
                "up": bool(node.get_attr("TIPC_NLA_NODE_UP")),
                "identity": node_id_str(raw) if raw else None,
            })
        return out

    def node_id_of(self, addr: int) -> bytes | None:
        """The 16-byte identity behind a node address (SIOCGETNODEID), None if unknown."""
        siocgetnodeid = 0x89E0 + 1  # SIOCPROTOPRIVATE + 1

        def get() -> bytes | None:
            import fcntl

            req = struct.pack("=I16s", addr, b"")
            with socket.socket(socket.AF_TIPC, socket.SOCK_RDM) as s:
                try:
                    res = fcntl.ioctl(s.fileno(), siocgetnodeid, req)
                except OSError:
                    return None
            raw = res[4:20]
            return raw if any(raw) else None

        return self._in_ns(get)

    def name_table(self) -> list[dict[str, Any]]:
        """NAME_TABLE_GET dump: {type, lower, upper, scope, node, port, key} per binding."""
        out = [
            parse_publication(r)
            for r in self._request(build_simple(TIPC_NL_NAME_TABLE_GET), dump=True)
        ]
        return [p for p in out if p is not None]

    def wait_links_up(self, count: int = 1, timeout: float = 10.0,
                      interval: float = 0.1) -> list[dict[str, Any]]:
        """Poll until at least count unicast links are up; LabkitError after timeout s."""
        deadline = time.monotonic() + timeout
        while True:
            links = [lk for lk in self.links() if not lk["broadcast"]]
            if sum(1 for lk in links if lk["up"]) >= count:
                return links
            if time.monotonic() >= deadline:
                names = ", ".join(f"{lk['name']} ({'up' if lk['up'] else 'down'})"
                                  for lk in links) or "none"
                raise LabkitError(
                    f"TIPC links{self._where()} not up after {timeout:g} s: "
                    f"{count} expected, links seen: {names}.",
                    hint="Check that both ends share the net id, that bearers are enabled "
                    "on connected interfaces, and that keys (if any) match.",
                )
            time.sleep(interval)

    # -- helpers -----------------------------------------------------------------------

    def _where(self) -> str:
        return f" in namespace {self.netns}" if self.netns else ""

    def _sockaddr(self, ip: str, port: int) -> bytes:
        addr, scope = _split_scope(ip)
        scope_id = 0
        if scope:
            scope_id = int(scope) if scope.isdigit() else self._in_ns(
                lambda: socket.if_nametoindex(scope)
            )
        return sockaddr(addr, port, scope_id)


def _ip_port(value: tuple[str, int] | str) -> tuple[str, int]:
    if isinstance(value, str):
        return value, TIPC_UDP_PORT
    ip, port = value
    return ip, int(port)
