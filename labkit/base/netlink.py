"""Netlink, the one core under labkit's two clients (rtnl.py for links, addresses and
routes; genl.py for generic-netlink families): a bound socket of a protocol (made inside a
named namespace, if asked), requests packed with struct, one request at a time and its
replies until the ack or the end of the dump, and the kernel's refusals with their errno
and extended-ack text.

The layouts are include/uapi/linux/netlink.h (and genetlink.h's genlmsghdr, which every
generic-netlink message carries after its nlmsghdr). Standard library only (socket,
struct, os): a lab is built and the handshake daemon starts in a guest under emulation,
where every import costs ~35 times what it costs on the host.

NETLINK_CAP_ACK is always set, so a refusal never copies the request (which may hold a
key) back into its error reply.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

NETLINK_ROUTE = 0
NETLINK_GENERIC = 16
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
RECV_BUF = 1 << 16  # the kernel fills a dump skb up to 32 KiB

NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
GENL_HDR = struct.Struct("=BBH")  # cmd, version, reserved
NLA_HDR = struct.Struct("=HH")  # len, type
NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_DUMP = 0x300
NLM_F_EXCL = 0x200  # in a NEW request: fail if it exists
NLM_F_CREATE = 0x400  # in a NEW request: create if it does not exist
NLM_F_CAPPED = 0x100  # in an error: only the request's header was echoed
NLM_F_ACK_TLVS = 0x200  # in an error: extended-ack attributes follow
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF
NLMSGERR_ATTR_MSG = 1


class KernelRefused(OSError):
    """The kernel answered a request with an errno (and maybe an extended-ack text, as
    strerror)."""


class NoAnswer(TimeoutError):
    """The kernel sent no (complete) answer within the socket's timeout."""


class BadReply(ValueError):
    """A reply that is not netlink as the kernel writes it (truncated or garbled)."""


def align4(n: int) -> int:
    return (n + 3) & ~3


# -- attributes -----------------------------------------------------------------------------

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


# -- messages -------------------------------------------------------------------------------

def message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    """nlmsghdr + body (port id 0: the kernel fills in ours)."""
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(body), kind, flags, seq, 0) + body


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
        """A generic-netlink message's command (its genlmsghdr's first byte)."""
        return self.payload[0] if self.payload else 0

    @property
    def attr_bytes(self) -> bytes:
        """A generic-netlink message's attributes (after its genlmsghdr)."""
        return self.payload[GENL_HDR.size:]

    @property
    def raw(self) -> bytes:
        """The whole message as it came (for decoders that want the header too)."""
        return NLMSG_HDR.pack(NLMSG_HDR.size + len(self.payload), self.type, self.flags,
                              self.seq, self.pid) + self.payload


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
    """An NLMSG_ERROR or the NLMSG_DONE of a dump: errno (0 = fine) and the kernel's
    extended-ack text, if any."""

    errno: int
    message: str = ""


def parse_error(msg: NlMsg) -> Ack:
    """NLMSG_ERROR: int error, the echoed request header (whole request unless capped),
    then extended-ack attributes when NLM_F_ACK_TLVS is set."""
    code = struct.unpack_from("=i", msg.payload)[0] if len(msg.payload) >= 4 else -errno.EIO
    message = ""
    if msg.flags & NLM_F_ACK_TLVS and len(msg.payload) >= 4 + NLMSG_HDR.size:
        inner_len = NLMSG_HDR.unpack_from(msg.payload, 4)[0]
        echoed = NLMSG_HDR.size if msg.flags & NLM_F_CAPPED else align4(inner_len)
        message = _ext_ack(msg.payload[4 + echoed:])
    return Ack(-code, message)


def parse_done(msg: NlMsg) -> Ack:
    """NLMSG_DONE ending a dump: its errno (0 for a complete dump), then any ext-ack
    attributes directly (nothing is echoed)."""
    code = struct.unpack_from("=i", msg.payload)[0] if len(msg.payload) >= 4 else 0
    message = _ext_ack(msg.payload[4:]) if msg.flags & NLM_F_ACK_TLVS else ""
    return Ack(-code, message)


def _ext_ack(tlvs: bytes) -> str:
    return next((text(v) for k, v in attrs(tlvs) if k == NLMSGERR_ATTR_MSG), "")


# -- the socket -----------------------------------------------------------------------------

def open_socket(protocol: int, timeout: float | None = None,
                netns: str | None = None) -> socket.socket:
    """A bound netlink socket of `protocol` (made inside the named namespace, which must
    exist, so it lives there), whose every recv is bounded by `timeout` s when one is
    given (SO_RCVTIMEO: no poll() per reply, which under emulation costs as much as the
    recv itself)."""
    if netns is None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                             protocol)
    else:
        from labkit.base import netns as namespaces

        with namespaces.entered(netns):
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                 protocol)
    try:
        with contextlib.suppress(OSError):  # the kernel says why it refused (since 4.12)
            sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        if timeout is not None:
            sec = int(timeout)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                            struct.pack("ll", sec, int((timeout - sec) * 1e6)))
        sock.bind((0, 0))
    except OSError:
        sock.close()
        raise
    return sock


def exchange(sock: socket.socket, request: bytes, seq: int) -> list[NlMsg]:
    """Send one request (its header carrying `seq`); return its replies once the kernel
    acks it or ends its dump. Replies to other sequence numbers (an earlier, abandoned
    request) are skipped.

    KernelRefused with the kernel's errno and ext-ack text; NoAnswer when a recv times
    out; BadReply for a truncated or garbled datagram.
    """
    acked = bool(NLMSG_HDR.unpack_from(request)[2] & NLM_F_ACK)
    sock.send(request)
    replies: list[NlMsg] = []
    while True:
        try:
            data, _, msg_flags, _ = sock.recvmsg(RECV_BUF)
        except (TimeoutError, BlockingIOError):  # SO_RCVTIMEO expired
            raise NoAnswer("the kernel sent no complete answer") from None
        if msg_flags & socket.MSG_TRUNC:
            raise BadReply(f"a netlink reply did not fit in {RECV_BUF} bytes")
        pos = 0
        while pos + NLMSG_HDR.size <= len(data):
            length, kind, flags, mseq, pid = NLMSG_HDR.unpack_from(data, pos)
            if length < NLMSG_HDR.size or pos + length > len(data):
                raise BadReply("a garbled netlink reply")
            msg = NlMsg(kind, flags, mseq, pid, data[pos + NLMSG_HDR.size:pos + length])
            pos += align4(length)
            if mseq != seq or kind == NLMSG_NOOP:
                continue
            if kind in (NLMSG_ERROR, NLMSG_DONE):
                ack = parse_error(msg) if kind == NLMSG_ERROR else parse_done(msg)
                if ack.errno:
                    raise KernelRefused(ack.errno, ack.message or os.strerror(ack.errno))
                return replies
            replies.append(msg)
            if not flags & NLM_F_MULTI and not acked:
                return replies
