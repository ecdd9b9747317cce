"""The sending side: a real TLS handshake in user space, then kTLS TX on the socket, so the
kernel (and, for TLS 1.2, the emulated NIC under it) protects every record that follows.

labkit.ktls.handshake drives Python's ssl over memory BIOs fed one whole record at a
time, so no byte the server sends after its last handshake record is read into user
space. The session's keys come from its key log (a pipe: never on disk; its text is kept
in memory only when `verify encryption` asks) and go nowhere but setsockopt(SOL_TLS,
TLS_TX). The client's Finished was its first protected record in TLS 1.2, so application
data starts at sequence 1 there; at 0 under TLS 1.3's application secret.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import time
from dataclasses import dataclass

from labkit.base import netns
from labkit.base.wait import Timeout, wait_until
from labkit.features.offload import tlskeys
from labkit.ktls.handshake import install_ktls, run
from labkit.ktls.records import RecordSocket
from labkit.ktls.sockopt import send_record
from labkit.ktls.uapi import CLOSE_NOTIFY, CT_ALERT
from labkit.ktls.uapi import TLS_1_2_VERSION as TLS_1_2
from labkit.ktls.uapi import TLS_1_3_VERSION as TLS_1_3


class SessionError(Exception):
    """The handshake or kTLS setup failed; the text says which step (never key bytes)."""


@dataclass
class Session:
    sock: socket.socket
    version: int
    cipher: str  # labkit's cipher name
    suite: str  # as negotiated (OpenSSL's name)
    keylog: str  # the key log's text, kept only when asked (verify encryption)


def context(version: int, cipher: tlskeys.Cipher) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the lab's throwaway certificate
    v = ssl.TLSVersion.TLSv1_2 if version == TLS_1_2 else ssl.TLSVersion.TLSv1_3
    ctx.minimum_version = ctx.maximum_version = v
    if version == TLS_1_2:
        ctx.set_ciphers(cipher.tls12)
    return ctx


def connect(ns: str, address: str, port: int, version: int, cipher_name: str,
            timeout: float, keep_keylog: bool = False) -> Session:
    """Connect from namespace ns (retrying until the receiver listens, within timeout),
    handshake, install kTLS TX."""
    deadline = time.monotonic() + timeout
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    why = [""]

    def attempt() -> socket.socket | None:
        s = netns.socket_in(ns, family, socket.SOCK_STREAM)
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            s.connect((address, port))
            return s
        except OSError as exc:
            s.close()
            why[0] = str(exc.strerror or exc)
            return None

    try:
        sock = wait_until(attempt, timeout, f"a receiver to accept on {address} port {port}",
                          interval=0.1)
    except Timeout:
        raise SessionError(f"no receiver accepted on {address} port {port} within "
                           f"{timeout:g} s ({why[0]})") from None
    try:
        return _handshake(sock, version, tlskeys.CIPHERS[cipher_name], deadline, keep_keylog)
    except BaseException:
        sock.close()
        raise


def _handshake(sock: socket.socket, version: int, cipher: tlskeys.Cipher, deadline: float,
               keep_keylog: bool) -> Session:
    """labkit.ktls.handshake (one record at a time, the key log in a pipe), then the
    client's keys to kTLS TX at the next record number (1 after TLS 1.2's Finished)."""
    try:
        hs = run(context(version, cipher), RecordSocket(sock, deadline), server_side=False)
    except OSError as exc:  # HandshakeError, or the record reader's (closed, not TLS, late)
        raise SessionError(f"the TLS handshake failed: {exc.strerror or exc}") from None
    negotiated = tlskeys.cipher_of(hs.cipher)
    try:
        install_ktls(sock, hs, rx=False)
    except OSError as exc:
        raise SessionError(f"the kernel refused kTLS TX ({exc.strerror or exc})") from None
    sock.settimeout(None)
    return Session(sock, version, negotiated.short, hs.cipher, hs.keylog if keep_keylog else "")


def close_notify(sock: socket.socket) -> None:
    """An alert record through kTLS, so the receiver ends cleanly."""
    with contextlib.suppress(OSError):
        send_record(sock, CLOSE_NOTIFY, CT_ALERT)


def total_retrans(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return int(struct.unpack_from("I", info, 100)[0])  # struct tcp_info.tcpi_total_retrans


VERSIONS = {"1.2": TLS_1_2, "1.3": TLS_1_3}
