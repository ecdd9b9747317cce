"""Handshake-family requests and replies as bytes: pure functions, no socket.

The family is small (three commands, u32 and string attributes), so its messages are
packed here with struct, as include/uapi/linux/netlink.h and genetlink.h lay them out;
host tests compare every byte with those layouts. genl.py sends and receives them.
Standard library only: the daemon imports this at start under emulation.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from labkit.features.handshake.uapi import (
    A_ACCEPT_AUTH_MODE,
    A_ACCEPT_CERTIFICATE,
    A_ACCEPT_HANDLER_CLASS,
    A_ACCEPT_KEYRING,
    A_ACCEPT_MESSAGE_TYPE,
    A_ACCEPT_PEER_IDENTITY,
    A_ACCEPT_PEERNAME,
    A_ACCEPT_SOCKFD,
    A_ACCEPT_TIMEOUT,
    A_DONE_REMOTE_AUTH,
    A_DONE_SOCKFD,
    A_DONE_STATUS,
    A_X509_CERT,
    A_X509_PRIVKEY,
    CMD_ACCEPT,
    CMD_DONE,
    FAMILY,
    FAMILY_VERSION,
    MAX_PEERIDS,
)

# include/uapi/linux/netlink.h, genetlink.h
NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
GENL_HDR = struct.Struct("=BBH")  # cmd, version, reserved
NLA_HDR = struct.Struct("=HH")  # len, type
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x01
NLM_F_ACK = 0x04
NLM_F_CAPPED = 0x100
NLM_F_ACK_TLVS = 0x200
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
CTRL_ATTR_MCAST_GROUPS = 7
CTRL_ATTR_MCAST_GRP_NAME = 1
CTRL_ATTR_MCAST_GRP_ID = 2
NLMSGERR_ATTR_MSG = 1


def align4(n: int) -> int:
    return (n + 3) & ~3


# ---------------------------------------------------------------------------------------
# Attributes


def nla(kind: int, payload: bytes) -> bytes:
    """One attribute: struct nlattr + payload, padded to 4 bytes."""
    raw = NLA_HDR.pack(NLA_HDR.size + len(payload), kind) + payload
    return raw + b"\0" * (align4(len(raw)) - len(raw))


def nla_u32(kind: int, value: int) -> bytes:
    return nla(kind, struct.pack("=I", value & 0xFFFFFFFF))


def nla_str(kind: int, text: str) -> bytes:
    return nla(kind, text.encode() + b"\0")


def attrs(buf: bytes) -> Iterator[tuple[int, bytes]]:
    """(type without flag bits, payload) of each attribute; stops at a malformed one."""
    pos = 0
    while pos + NLA_HDR.size <= len(buf):
        length, kind = NLA_HDR.unpack_from(buf, pos)
        if length < NLA_HDR.size or pos + length > len(buf):
            return
        yield kind & NLA_TYPE_MASK, buf[pos + NLA_HDR.size:pos + length]
        pos += align4(length)


def u32(payload: bytes) -> int:
    return int(struct.unpack_from("=I", payload)[0])


def text(payload: bytes) -> str:
    return payload.split(b"\0", 1)[0].decode(errors="replace")


# ---------------------------------------------------------------------------------------
# Messages


def genl_request(family: int, cmd: int, body: bytes, seq: int, flags: int = NLM_F_REQUEST |
                 NLM_F_ACK, version: int = FAMILY_VERSION) -> bytes:
    """nlmsghdr + genlmsghdr + attributes (port id 0: the kernel fills in ours)."""
    payload = GENL_HDR.pack(cmd, version, 0) + body
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(payload), family, flags, seq, 0) + payload


def build_getfamily(seq: int, name: str = FAMILY) -> bytes:
    """CTRL_CMD_GETFAMILY by name: the family id and its multicast groups come back."""
    return genl_request(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, nla_str(CTRL_ATTR_FAMILY_NAME, name),
                        seq, version=1)


def build_accept(family: int, seq: int, handler_class: int) -> bytes:
    """ACCEPT: hand me the next request of this handler class (admin-perm)."""
    return genl_request(family, CMD_ACCEPT, nla_u32(A_ACCEPT_HANDLER_CLASS, handler_class),
                        seq)


def build_done(family: int, seq: int, sockfd: int, status: int,
               remote_auth: list[int] | tuple[int, ...] = ()) -> bytes:
    """DONE: the handshake on sockfd ended with status (0 or a positive errno); on success,
    remote_auth names the key serial(s) of the peer identity that was authenticated."""
    if not 0 <= status < 4096:
        raise ValueError(f"DONE status must be 0 or a positive errno, not {status}")
    if len(remote_auth) > MAX_PEERIDS:
        raise ValueError(f"at most {MAX_PEERIDS} remote-auth serials, not {len(remote_auth)}")
    body = nla_u32(A_DONE_STATUS, status) + nla_u32(A_DONE_SOCKFD, sockfd)
    body += b"".join(nla_u32(A_DONE_REMOTE_AUTH, serial) for serial in remote_auth)
    return genl_request(family, CMD_DONE, body, seq)


@dataclass(frozen=True)
class NlMsg:
    """One netlink message of a datagram: header fields and the bytes after nlmsghdr."""

    type: int
    flags: int
    seq: int
    pid: int
    payload: bytes

    @property
    def cmd(self) -> int:
        return self.payload[0] if self.payload else 0

    @property
    def attr_bytes(self) -> bytes:
        """Attributes after the genlmsghdr."""
        return self.payload[GENL_HDR.size:]


def split(datagram: bytes) -> Iterator[NlMsg]:
    """The netlink messages of one datagram; stops at a truncated one."""
    pos = 0
    while pos + NLMSG_HDR.size <= len(datagram):
        length, kind, flags, seq, pid = NLMSG_HDR.unpack_from(datagram, pos)
        if length < NLMSG_HDR.size or pos + length > len(datagram):
            return
        yield NlMsg(kind, flags, seq, pid, datagram[pos + NLMSG_HDR.size:pos + length])
        pos += align4(length)


@dataclass(frozen=True)
class Ack:
    """An NLMSG_ERROR: errno (0 = ack) and the kernel's extended-ack text, if any."""

    errno: int
    message: str = ""


def parse_error(msg: NlMsg) -> Ack:
    """NLMSG_ERROR: int error, the echoed request header (whole request unless capped),
    then extended-ack attributes when NLM_F_ACK_TLVS is set."""
    code = struct.unpack_from("=i", msg.payload)[0] if len(msg.payload) >= 4 else -5
    message = ""
    if msg.flags & NLM_F_ACK_TLVS and len(msg.payload) >= 4 + NLMSG_HDR.size:
        inner_len = NLMSG_HDR.unpack_from(msg.payload, 4)[0]
        echoed = NLMSG_HDR.size if msg.flags & NLM_F_CAPPED else align4(inner_len)
        for kind, value in attrs(msg.payload[4 + echoed:]):
            if kind == NLMSGERR_ATTR_MSG:
                message = text(value)
    return Ack(-code, message)


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


def parse_ready(msg: NlMsg) -> int:
    """READY (multicast): the handler class a request is waiting for."""
    for kind, value in attrs(msg.attr_bytes):
        if kind == A_ACCEPT_HANDLER_CLASS:
            return u32(value)
    return 0


@dataclass(frozen=True)
class Accepted:
    """What ACCEPT hands over: the socket (a new fd in this process) and the parameters."""

    sockfd: int
    message_type: int
    auth_mode: int
    timeout_ms: int = 0  # 0: the request carries none
    peer_identities: tuple[int, ...] = ()  # key serials (psk)
    certificate: int = 0  # key serial of our certificate (x509), 0 = none given
    privkey: int = 0  # key serial of its private key
    peername: str = ""  # the name the server's certificate must carry (client side)
    keyring: int = 0  # key serial of a keyring to search (newer kernels)
    unknown: tuple[int, ...] = field(default=())  # attribute types this code does not know

    def describe(self) -> dict[str, object]:
        """The parameters as the trace shows them (serials, never key material)."""
        from labkit.features.handshake.uapi import AUTH_MODES, MSG_TYPES

        return {"sockfd": self.sockfd,
                "message_type": MSG_TYPES.get(self.message_type, str(self.message_type)),
                "auth_mode": AUTH_MODES.get(self.auth_mode, str(self.auth_mode)),
                "timeout_ms": self.timeout_ms, "peer_identities": list(self.peer_identities),
                "certificate": self.certificate, "privkey": self.privkey,
                "peername": self.peername, "keyring": self.keyring}


def parse_accept(msg: NlMsg) -> Accepted:
    """The ACCEPT reply; ValueError if it names no socket."""
    sockfd = message_type = auth = timeout = cert = key = keyring = 0
    sockfd_seen = False
    peers: list[int] = []
    peername = ""
    unknown: list[int] = []
    for kind, value in attrs(msg.attr_bytes):
        if kind == A_ACCEPT_SOCKFD:
            sockfd, sockfd_seen = struct.unpack_from("=i", value)[0], True
        elif kind == A_ACCEPT_MESSAGE_TYPE:
            message_type = u32(value)
        elif kind == A_ACCEPT_AUTH_MODE:
            auth = u32(value)
        elif kind == A_ACCEPT_TIMEOUT:
            timeout = u32(value)
        elif kind == A_ACCEPT_PEER_IDENTITY:
            peers.append(u32(value))
        elif kind == A_ACCEPT_CERTIFICATE:
            for sub, sval in attrs(value):
                if sub == A_X509_CERT:
                    cert = u32(sval)
                elif sub == A_X509_PRIVKEY:
                    key = u32(sval)
        elif kind == A_ACCEPT_PEERNAME:
            peername = text(value)
        elif kind == A_ACCEPT_KEYRING:
            keyring = u32(value)
        else:
            unknown.append(kind)
    if not sockfd_seen:
        raise ValueError("the ACCEPT reply names no socket")
    return Accepted(sockfd, message_type, auth, timeout, tuple(peers), cert, key, peername,
                    keyring, tuple(unknown))
