"""TIPCv2 requests and replies: pure functions from arguments to messages and back.

Builders check their arguments against the kernel's limits (uapi) before anything is
sent, and host tests compare their bytes with what iproute2 would send; parsers turn a
decoded reply into plain dicts. Nothing here opens a socket (that is client.py).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from typing import Any

from pyroute2.netlink import NLM_F_ACK_TLVS, NLM_F_CAPPED, nlmsgerr
from pyroute2.netlink.exceptions import NetlinkError

from labkit.errors import UsageError
from labkit.features.tipc.attributes import tipcmsg
from labkit.features.tipc.identity import (
    KEY_LENGTHS,
    SALT_LEN,
    Secret,
    either,
    node_hash,
    node_id_bytes,
    node_id_str,
)
from labkit.features.tipc.uapi import (
    AEAD_ALG,
    FAMILY_VERSION,
    NET_ID_MAX,
    NET_ID_MIN,
    REKEYING_MAX,
    TIPC_AEAD_ALG_NAME,
    TIPC_MAX_BEARER_NAME,
    TIPC_MAX_IF_NAME,
    TIPC_MAX_LINK_PRI,
    TIPC_NL_BEARER_ADD,
    TIPC_NL_BEARER_ENABLE,
    TIPC_NL_KEY_SET,
    TIPC_NL_NET_SET,
    TIPC_REKEYING_NOW,
    UDP_PORT,
)

# ---------------------------------------------------------------------------------------
# Arguments: keys, addresses, names


def aead_key(key: bytes, alg: str = AEAD_ALG) -> Secret:
    """struct tipc_aead_key: char alg_name[32]; u32 keylen (host order); u8 key[keylen].

    key is the AES key followed by the salt (20, 28 or 36 bytes).
    """
    if len(key) not in KEY_LENGTHS:
        raise UsageError(
            f"a TIPC key must be {either(KEY_LENGTHS)} bytes (AES key + {SALT_LEN}-byte salt), "
            f"not {len(key)}.",
            hint=f"Use 16, 24 or 32 random bytes for AES-128/192/256 and append {SALT_LEN} "
                 "salt bytes.",
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
    """iproute2's default UDP remote: multicast derived from the net id, the TIPC port."""
    if ipv6:
        return (f"ff02::{net_id}", UDP_PORT)
    return (f"228.0.{(net_id >> 8) & 0xFF}.{net_id & 0xFF}", UDP_PORT)


def udp_bearer_name(name: str) -> str:
    """'u1' or 'udp:u1' -> 'udp:u1', checked."""
    full = name if name.startswith("udp:") else f"udp:{name}"
    check_bearer_name(full)
    return full


def check_bearer_name(full: str) -> None:
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
            hint=f"Bearer names are MEDIA:NAME (eth:veth0, udp:u1), the name under "
                 f"{TIPC_MAX_IF_NAME} characters.",
        )


def check_priority(priority: int | None) -> None:
    if priority is not None and not 0 <= priority <= TIPC_MAX_LINK_PRI:
        raise UsageError(f"a TIPC link priority is 0..{TIPC_MAX_LINK_PRI}, not {priority}.")


def rekeying_value(rekeying: int | str) -> int:
    """Minutes between automatic key changes; 0 turns it off, "now" rekeys once at once."""
    if rekeying == "now":
        return TIPC_REKEYING_NOW
    if isinstance(rekeying, int) and not isinstance(rekeying, bool) and \
            0 <= rekeying <= REKEYING_MAX:
        return rekeying
    raise UsageError(f"invalid TIPC rekeying interval {rekeying!r}.",
                     hint=f"Give minutes from 0 (off) to {REKEYING_MAX}, or \"now\".")


# ---------------------------------------------------------------------------------------
# Requests


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
    check_priority(priority)
    if priority is None:
        return []
    return [("TIPC_NLA_BEARER_PROP", {"attrs": [("TIPC_NLA_PROP_PRIO", priority)]})]


def build_bearer_enable_eth(
    ifname: str, priority: int | None = None, domain: int | None = None
) -> tipcmsg:
    """BEARER_ENABLE: nest BEARER { [DOMAIN], [PROP { PRIO }], NAME "eth:IFNAME" }."""
    name = f"eth:{ifname}"
    check_bearer_name(name)
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
    attrs.append(("TIPC_NLA_BEARER_NAME", udp_bearer_name(name)))
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
        ("TIPC_NLA_BEARER_NAME", udp_bearer_name(name)),
        ("TIPC_NLA_BEARER_UDP_OPTS", {"attrs": [("TIPC_NLA_UDP_REMOTE", remote)]}),
    ]
    return _msg(TIPC_NL_BEARER_ADD, [("TIPC_NLA_BEARER", {"attrs": attrs})])


def build_key_set(
    key: bytes | None,
    *,
    master: bool = False,
    node_id: bytes | str | None = None,
    rekeying: int | str | None = None,
    alg: str = AEAD_ALG,
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
    """The wire bytes of a request, as the client sends it."""
    msg["header"]["type"] = family_id
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg["header"]["pid"] = pid
    msg.encode()
    return bytes(msg.data[: msg["header"]["length"]])


# ---------------------------------------------------------------------------------------
# Replies


def parse_error(chunk: bytes) -> nlmsgerr:
    """An NLMSG_ERROR message with the echoed request dropped and the ext-ack TLVs kept;
    header.error holds the NetlinkError, None for an ack.

    The echoed request of a KEY_SET would hold the key, and a capped echo (NETLINK_CAP_ACK)
    is only its header: here only the outer header, the errno and the TLVs
    (NLMSGERR_ATTR_MSG...) survive.
    """
    length, mtype, flags, seq, pid = struct.unpack_from("=IHHII", chunk)
    code = struct.unpack_from("=i", chunk, 16)[0] if len(chunk) >= 20 else -errno.EIO
    tlvs = b""
    if flags & NLM_F_ACK_TLVS and len(chunk) >= 36:
        inner_len = struct.unpack_from("=I", chunk, 20)[0]
        echoed = 16 if flags & NLM_F_CAPPED else (inner_len + 3) & ~3
        tlvs = bytes(chunk[20 + echoed:length])
    return _status(mtype, flags, seq, pid, code, tlvs)


def parse_done(chunk: bytes) -> nlmsgerr:
    """The NLMSG_DONE that ends a dump: its errno (0 for a complete dump) and any ext-ack
    TLVs, which follow the errno directly (nothing is echoed)."""
    length, mtype, flags, seq, pid = struct.unpack_from("=IHHII", chunk)
    code = struct.unpack_from("=i", chunk, 16)[0] if len(chunk) >= 20 else 0
    tlvs = bytes(chunk[20:length]) if flags & NLM_F_ACK_TLVS else b""
    return _status(mtype, flags, seq, pid, code, tlvs)


def _status(mtype: int, flags: int, seq: int, pid: int, code: int, tlvs: bytes) -> nlmsgerr:
    buf = struct.pack("=IHHIIi", 20 + len(tlvs), mtype, flags, seq, pid, code) + tlvs
    msg = nlmsgerr(buf)
    msg.decode()
    error: Exception | None = None
    if code:
        text = msg.get_attr("NLMSGERR_ATTR_MSG")
        error = (OSError if -code == errno.ENOBUFS else NetlinkError)(abs(code), text)
    msg["header"]["error"] = error
    return msg


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


def parse_node(msg: Any) -> dict[str, Any] | None:
    """One NODE_GET reply: {addr, up}; the identity is looked up by the client."""
    node = msg.get_attr("TIPC_NLA_NODE")
    if node is None:
        return None
    return {"addr": node.get_attr("TIPC_NLA_NODE_ADDR"),
            "up": bool(node.get_attr("TIPC_NLA_NODE_UP"))}


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
