"""Generic netlink: the family's id and multicast groups by name (the ctrl family),
generic-netlink requests (genlmsghdr + attributes), and a NETLINK_GENERIC socket of the
one netlink core (labkit.base.netlink: the socket, one request at a time and its replies,
the kernel's refusals with their errno and extended-ack text), whose names are
re-exported here for the families.

Families (TIPCv2 in features/tipc, handshake in features/handshake) build their own
requests and read their own attributes. Standard library only: the handshake daemon
imports this at start under emulation.
"""

from __future__ import annotations

import errno
import socket
import struct

from labkit.base import netlink
from labkit.base.netlink import (  # noqa: F401  (re-exported: the families' framing)
    GENL_HDR,
    NETLINK_ADD_MEMBERSHIP,
    NETLINK_GENERIC,
    NLA_F_NESTED,
    NLA_HDR,
    NLA_TYPE_MASK,
    NLM_F_ACK,
    NLM_F_ACK_TLVS,
    NLM_F_CAPPED,
    NLM_F_DUMP,
    NLM_F_MULTI,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSG_HDR,
    NLMSG_NOOP,
    NLMSGERR_ATTR_MSG,
    RECV_BUF,
    SOL_NETLINK,
    Ack,
    BadReply,
    KernelRefused,
    NlMsg,
    NoAnswer,
    align4,
    attrs,
    exchange,
    nla,
    nla_str,
    nla_u32,
    parse_done,
    parse_error,
    split,
    text,
    u32,
)

GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
CTRL_ATTR_MCAST_GROUPS = 7
CTRL_ATTR_MCAST_GRP_NAME = 1
CTRL_ATTR_MCAST_GRP_ID = 2


class NoFamily(OSError):
    """This kernel has no such generic netlink family (its config or module is missing)."""


# -- messages -------------------------------------------------------------------------------

def genl_request(family: int, cmd: int, body: bytes, seq: int,
                 flags: int = NLM_F_REQUEST | NLM_F_ACK, version: int = 1) -> bytes:
    """nlmsghdr + genlmsghdr + attributes (port id 0: the kernel fills in ours)."""
    return netlink.message(family, flags, seq, GENL_HDR.pack(cmd, version, 0) + body)


def build_getfamily(seq: int, name: str) -> bytes:
    """CTRL_CMD_GETFAMILY by name: the family id and its multicast groups come back."""
    return genl_request(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, nla_str(CTRL_ATTR_FAMILY_NAME, name),
                        seq, version=1)


def parse_family(msg: NlMsg) -> tuple[int, dict[str, int]]:
    """A CTRL_CMD_NEWFAMILY reply: (family id, {multicast group name: group id})."""
    family = 0
    groups: dict[str, int] = {}
    for kind, value in attrs(msg.attr_bytes):
        if kind == CTRL_ATTR_FAMILY_ID:
            family = struct.unpack_from("=H", value)[0]
        elif kind == CTRL_ATTR_MCAST_GROUPS:
            for _, group in attrs(value):
                fields = dict(attrs(group))
                if CTRL_ATTR_MCAST_GRP_NAME in fields and CTRL_ATTR_MCAST_GRP_ID in fields:
                    groups[text(fields[CTRL_ATTR_MCAST_GRP_NAME])] = \
                        u32(fields[CTRL_ATTR_MCAST_GRP_ID])
    return family, groups


# -- the socket -----------------------------------------------------------------------------

def open_socket(timeout: float, netns: str | None = None) -> socket.socket:
    """A bound NETLINK_GENERIC socket (made inside the named namespace, which must exist)
    whose every recv is bounded by `timeout` s."""
    return netlink.open_socket(NETLINK_GENERIC, timeout, netns)


def join(sock: socket.socket, group: int) -> None:
    """Receive the family's multicast group `group` (an id from resolve) on sock."""
    sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)


def resolve(sock: socket.socket, name: str, seq: int) -> tuple[int, dict[str, int]]:
    """The family's id and multicast groups; NoFamily if the kernel has no such family."""
    try:
        replies = exchange(sock, build_getfamily(seq, name), seq)
    except KernelRefused as exc:
        if exc.errno == errno.ENOENT:
            raise NoFamily(errno.ENOENT, f"the kernel has no {name!r} netlink family") \
                from None
        raise
    for reply in replies:
        family, groups = parse_family(reply)
        if family:
            return family, groups
    raise NoFamily(errno.ENOENT, f"the kernel sent no id for the {name!r} family")
