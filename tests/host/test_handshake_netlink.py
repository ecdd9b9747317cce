"""The handshake family's requests and replies, byte for byte, against
include/uapi/linux/handshake.h (Documentation/netlink/specs/handshake.yaml) and the netlink
headers; and the client's exchange against a stand-in kernel on a socketpair. No
handshake kernel needed: the numbers below are spelled out independently of the code.
"""

from __future__ import annotations

import errno
import socket
import struct
import threading

import pytest

from labkit.features.handshake import genl, uapi
from labkit.features.handshake import messages as m

FAMILY = 0x21  # the kernel assigns the id; 33 was seen in the 6.12 VM
SEQ = 77
REQUEST, ACK = 0x1, 0x4
# uapi numbers, written out independently of labkit.features.handshake.uapi
CMD_READY, CMD_ACCEPT, CMD_DONE = 1, 2, 3
ACCEPT_SOCKFD, ACCEPT_HANDLER_CLASS, ACCEPT_MESSAGE_TYPE, ACCEPT_TIMEOUT = 1, 2, 3, 4
ACCEPT_AUTH_MODE, ACCEPT_PEER_IDENTITY, ACCEPT_CERTIFICATE, ACCEPT_PEERNAME = 5, 6, 7, 8
X509_CERT, X509_PRIVKEY = 1, 2
DONE_STATUS, DONE_SOCKFD, DONE_REMOTE_AUTH = 1, 2, 3
HANDLER_TLSHD, CLIENTHELLO, SERVERHELLO = 1, 1, 2
AUTH_UNAUTH, AUTH_PSK, AUTH_X509 = 1, 2, 3
NESTED = 1 << 15


def attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=I", value))


def message(msg_type: int, cmd: int, body: bytes, flags: int, seq: int = SEQ,
            pid: int = 0) -> bytes:
    payload = struct.pack("=BBH", cmd, 1, 0) + body
    return struct.pack("=IHHII", 16 + len(payload), msg_type, flags, seq, pid) + payload


def test_uapi_numbers_match_the_spec() -> None:
    assert (uapi.CMD_READY, uapi.CMD_ACCEPT, uapi.CMD_DONE) == (1, 2, 3)
    assert (uapi.A_ACCEPT_SOCKFD, uapi.A_ACCEPT_HANDLER_CLASS, uapi.A_ACCEPT_MESSAGE_TYPE,
            uapi.A_ACCEPT_TIMEOUT, uapi.A_ACCEPT_AUTH_MODE, uapi.A_ACCEPT_PEER_IDENTITY,
            uapi.A_ACCEPT_CERTIFICATE) == (1, 2, 3, 4, 5, 6, 7)
    assert (uapi.A_DONE_STATUS, uapi.A_DONE_SOCKFD, uapi.A_DONE_REMOTE_AUTH) == (1, 2, 3)
    assert (uapi.AUTH_UNAUTH, uapi.AUTH_PSK, uapi.AUTH_X509) == (1, 2, 3)
    assert uapi.HANDLER_CLASS_TLSHD == 1 and uapi.MCGRP_TLSHD == "tlshd"


def test_accept_request_bytes() -> None:
    want = message(FAMILY, CMD_ACCEPT, u32(ACCEPT_HANDLER_CLASS, HANDLER_TLSHD), REQUEST | ACK)
    assert m.build_accept(FAMILY, SEQ, HANDLER_TLSHD) == want
    assert len(want) == 16 + 4 + 8  # nlmsghdr, genlmsghdr, one u32 attribute


def test_done_request_bytes_success_with_remote_auth() -> None:
    want = message(FAMILY, CMD_DONE, u32(DONE_STATUS, 0) + u32(DONE_SOCKFD, 9)
                   + u32(DONE_REMOTE_AUTH, 0x2AD81FDA), REQUEST | ACK)
    assert m.build_done(FAMILY, SEQ, 9, 0, [0x2AD81FDA]) == want


def test_done_request_bytes_failure_carries_positive_errno() -> None:
    want = message(FAMILY, CMD_DONE, u32(DONE_STATUS, errno.EACCES) + u32(DONE_SOCKFD, 12),
                   REQUEST | ACK)
    assert m.build_done(FAMILY, SEQ, 12, errno.EACCES) == want


@pytest.mark.parametrize(("status", "serials"), [(-1, ()), (5000, ()), (0, (1,) * 6)])
def test_done_refuses_what_the_kernel_would_misread(status: int, serials: tuple[int, ...]
                                                     ) -> None:
    with pytest.raises(ValueError):
        m.build_done(FAMILY, SEQ, 3, status, serials)


def test_getfamily_request_bytes() -> None:
    name = b"handshake\0"
    want = message(0x10, 3, attr(2, name), REQUEST | ACK)
    assert m.build_getfamily(SEQ) == want


def accept_reply(*attrs: bytes) -> m.NlMsg:
    raw = message(FAMILY, CMD_ACCEPT, b"".join(attrs), 0)
    return next(m.split(raw))


def test_parse_accept_psk_client() -> None:
    reply = accept_reply(u32(ACCEPT_SOCKFD, 7), u32(ACCEPT_MESSAGE_TYPE, CLIENTHELLO),
                         u32(ACCEPT_TIMEOUT, 10000), u32(ACCEPT_AUTH_MODE, AUTH_PSK),
                         u32(ACCEPT_PEER_IDENTITY, 0x11), u32(ACCEPT_PEER_IDENTITY, 0x22))
    acc = m.parse_accept(reply)
    assert (acc.sockfd, acc.message_type, acc.timeout_ms, acc.auth_mode) == \
        (7, CLIENTHELLO, 10000, AUTH_PSK)
    assert acc.peer_identities == (0x11, 0x22)
    assert acc.describe()["auth_mode"] == "psk"


def test_parse_accept_x509_with_certificate_nest_peername_and_unknown() -> None:
    cert = attr(ACCEPT_CERTIFICATE | NESTED, u32(X509_CERT, 0x100) + u32(X509_PRIVKEY, 0x101))
    reply = accept_reply(u32(ACCEPT_SOCKFD, 5), u32(ACCEPT_MESSAGE_TYPE, SERVERHELLO),
                         u32(ACCEPT_AUTH_MODE, AUTH_X509), cert,
                         attr(ACCEPT_PEERNAME, b"198.18.6.1\0"), u32(30, 1))
    acc = m.parse_accept(reply)
    assert (acc.certificate, acc.privkey) == (0x100, 0x101)
    assert acc.peername == "198.18.6.1"
    assert acc.unknown == (30,)


def test_parse_accept_without_socket_is_an_error() -> None:
    with pytest.raises(ValueError):
        m.parse_accept(accept_reply(u32(ACCEPT_MESSAGE_TYPE, CLIENTHELLO)))


def test_parse_ready_and_truncated_attributes() -> None:
    ready = next(m.split(message(FAMILY, CMD_READY, u32(ACCEPT_HANDLER_CLASS, 1), 0)))
    assert m.parse_ready(ready) == 1
    cut = message(FAMILY, CMD_READY, u32(ACCEPT_HANDLER_CLASS, 1), 0)[:-2]
    assert list(m.split(cut)) == []  # a truncated message is not half-parsed


def test_parse_family_reply_with_groups() -> None:
    grp = (attr(1 | NESTED, u32(2, 13) + attr(1, b"none\0"))
           + attr(2 | NESTED, u32(2, 14) + attr(1, b"tlshd\0")))
    body = attr(1, struct.pack("=H", FAMILY) + b"\0\0") + attr(2, b"handshake\0") + \
        attr(7 | NESTED, grp)
    reply = next(m.split(message(0x10, 1, body, 0)))
    assert m.parse_family(reply) == (FAMILY, {"none": 13, "tlshd": 14})


def error_reply(code: int, seq: int, text: str = "") -> bytes:
    """NLMSG_ERROR with a capped echo (NETLINK_CAP_ACK) and an ext-ack message."""
    echoed = struct.pack("=IHHII", 28, FAMILY, REQUEST | ACK, seq, 0)
    tlvs = attr(1, text.encode() + b"\0") if text else b""
    flags = 0x100 | (0x200 if text else 0)
    body = struct.pack("=i", -code) + echoed + tlvs
    return struct.pack("=IHHII", 16 + len(body), 2, flags, seq, 0) + body


def test_parse_error_reads_errno_and_extack_text() -> None:
    ack = m.parse_error(next(m.split(error_reply(errno.EBUSY, 3, "no request"))))
    assert ack == m.Ack(errno.EBUSY, "no request")
    assert m.parse_error(next(m.split(error_reply(0, 3)))).errno == 0


class FakeKernel:
    """The far end of a datagram socketpair, answering like the handshake family."""

    def __init__(self, answer: list[bytes]) -> None:
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.ours.settimeout(2)
        self.answer = answer
        self.seen: list[bytes] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        request = self.theirs.recv(65536)
        self.seen.append(request)
        seq = struct.unpack_from("=I", request, 8)[0]
        for datagram in self.answer:
            self.theirs.send(datagram.replace(b"SEQ!", struct.pack("=I", seq)))

    def close(self) -> None:
        self.thread.join(2)
        self.ours.close()
        self.theirs.close()


def test_exchange_skips_stale_replies_and_returns_at_the_ack() -> None:
    reply = message(FAMILY, CMD_ACCEPT, u32(ACCEPT_SOCKFD, 4), 0, seq=0)
    stale = error_reply(errno.EAGAIN, 1)  # an answer to an abandoned request
    k = FakeKernel([stale, reply[:8] + b"SEQ!" + reply[12:], error_reply(0, 0)[:8] + b"SEQ!"
                    + error_reply(0, 0)[12:]])
    try:
        got = genl.exchange(k.ours, m.build_accept(FAMILY, 5, 1), 5)
    finally:
        k.close()
    assert [x.type for x in got] == [FAMILY]
    assert m.parse_accept(got[0]).sockfd == 4
    assert k.seen[0] == m.build_accept(FAMILY, 5, 1)


def test_exchange_raises_the_kernels_errno() -> None:
    err = error_reply(errno.EAGAIN, 0)
    k = FakeKernel([err[:8] + b"SEQ!" + err[12:]])
    try:
        with pytest.raises(genl.KernelRefused) as info:
            genl.exchange(k.ours, m.build_accept(FAMILY, 9, 1), 9)
    finally:
        k.close()
    assert info.value.errno == errno.EAGAIN


def test_pending_cap_follows_handshake_net_init() -> None:
    gib = 1 << 30
    assert uapi.pending_cap(2 * gib) == 5  # 524288 pages / (25 * 4096)
    assert uapi.pending_cap(2019140 * 1024) == 4  # the 2G VM's MemTotal (seen: cap 4)
    assert uapi.pending_cap(256 << 20) == 3  # clamped at 3
    assert uapi.pending_cap(64 * gib) == 50  # clamped at 50
