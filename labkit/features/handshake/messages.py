"""Handshake-family requests and replies as bytes: pure functions, no socket.

The family is small (three commands, u32 and string attributes), so its messages are
packed with struct over the netlink framing of labkit.base.genl (the one transport, whose
names are re-exported here); host tests compare every byte with the kernel's layouts.
genl.py sends and receives them.
Standard library only: the daemon imports this at start under emulation.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# The netlink framing (headers, attributes, acks, the ctrl family) is the transport's.
from labkit.base.genl import (  # noqa: F401  (re-exported for the family)
    CTRL_ATTR_FAMILY_ID,
    CTRL_ATTR_FAMILY_NAME,
    CTRL_ATTR_MCAST_GROUPS,
    CTRL_ATTR_MCAST_GRP_ID,
    CTRL_ATTR_MCAST_GRP_NAME,
    CTRL_CMD_GETFAMILY,
    GENL_HDR,
    GENL_ID_CTRL,
    NLA_F_NESTED,
    NLA_HDR,
    NLA_TYPE_MASK,
    NLM_F_ACK,
    NLM_F_ACK_TLVS,
    NLM_F_CAPPED,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSG_HDR,
    NLMSGERR_ATTR_MSG,
    Ack,
    NlMsg,
    align4,
    attrs,
    nla,
    nla_str,
    nla_u32,
    parse_error,
    parse_family,
    split,
    text,
    u32,
)
from labkit.base.genl import build_getfamily as _getfamily
from labkit.base.genl import genl_request as _genl_request
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


def genl_request(family: int, cmd: int, body: bytes, seq: int, flags: int = NLM_F_REQUEST |
                 NLM_F_ACK, version: int = FAMILY_VERSION) -> bytes:
    """nlmsghdr + genlmsghdr + attributes, at the handshake family's version."""
    return _genl_request(family, cmd, body, seq, flags, version)


def build_getfamily(seq: int, name: str = FAMILY) -> bytes:
    """CTRL_CMD_GETFAMILY by name (the handshake family's by default)."""
    return _getfamily(seq, name)


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
