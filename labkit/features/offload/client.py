"""The sending side: a real TLS handshake in user space, then kTLS TX on the socket, so the
kernel (and, for TLS 1.2, the emulated NIC under it) protects every record that follows.

Python's ssl does the handshake over memory BIOs fed one whole record at a time, so no
byte the server sends after its last handshake record is read into user space. The
session's keys come from its key log (created 0600 in a private directory, read once,
removed at once) and go nowhere but setsockopt(SOL_TLS, TLS_TX). The client's Finished
was its first protected record in TLS 1.2, so application data starts at sequence 1
there; at 0 under TLS 1.3's application secret.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import struct
import tempfile
import time
from dataclasses import dataclass

from labkit.base import netns
from labkit.base.wait import Timeout, wait_until
from labkit.features.offload import tlskeys
from labkit.features.offload.tlskeys import SOL_TLS, TCP_ULP, TLS_1_2, TLS_1_3, TLS_TX

TLS_SET_RECORD_TYPE = 1
CT_ALERT = 21
CLOSE_NOTIFY = b"\x01\x00"  # alert level warning, description close_notify


class SessionError(Exception):
    """The handshake or kTLS setup failed; the text says which step (never key bytes)."""


@dataclass
class Session:
    sock: socket.socket
    version: int
    cipher: str  # labkit's cipher name
    suite: str  # as negotiated (OpenSSL's name)
    keylog: str  # the key log's text, kept only when asked (verify encryption)


def context(version: int, cipher: tlskeys.Cipher, keylog: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the lab's throwaway certificate
    v = ssl.TLSVersion.TLSv1_2 if version == TLS_1_2 else ssl.TLSVersion.TLSv1_3
    ctx.minimum_version = ctx.maximum_version = v
    if version == TLS_1_2:
        ctx.set_ciphers(cipher.tls12)
    ctx.keylog_filename = keylog
    return ctx


def _read_record(sock: socket.socket, deadline: float) -> bytes:
    out = b""
    need = 5
    while len(out) < need:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(need - len(out))
        if not chunk:
            raise SessionError("the server closed the connection during the handshake")
        out += chunk
        if len(out) == 5:
            need = 5 + int.from_bytes(out[3:5], "big")
    return out


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
    with tempfile.TemporaryDirectory(prefix="labkit-offload-") as tmp:
        os.chmod(tmp, 0o700)
        path = os.path.join(tmp, "keys.log")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = context(version, cipher, path).wrap_bio(inc, out)
        received = b""
        try:
            while True:
                try:
                    obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    if out.pending:
                        sock.sendall(out.read())
                    record = _read_record(sock, deadline)
                    received += record
                    inc.write(record)
        except (ssl.SSLError, OSError) as exc:
            raise SessionError(f"the TLS handshake failed: {exc}") from None
        if out.pending:
            sock.sendall(out.read())
        suite = (obj.cipher() or ("?",))[0]
        with open(path) as fh:
            keylog = fh.read()
    negotiated = tlskeys.cipher_of(suite)
    if version == TLS_1_2:
        keys = tlskeys.session_keys(keylog, TLS_1_2, negotiated, tlskeys.server_random(received))
        seq = 1  # the client's Finished was record 0
    else:
        keys = tlskeys.session_keys(keylog, TLS_1_3, negotiated, None)
        seq = 0
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_ULP, b"tls")
        sock.setsockopt(SOL_TLS, TLS_TX, keys.crypto_info(seq))
    except OSError as exc:
        raise SessionError(f"the kernel refused kTLS TX ({exc.strerror or exc})") from None
    sock.settimeout(None)
    return Session(sock, version, negotiated.short, suite, keylog if keep_keylog else "")


def close_notify(sock: socket.socket) -> None:
    """An alert record through kTLS, so the receiver ends cleanly."""
    with contextlib.suppress(OSError):
        sock.sendmsg([CLOSE_NOTIFY], [(SOL_TLS, TLS_SET_RECORD_TYPE, bytes([CT_ALERT]))])


def total_retrans(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return int(struct.unpack_from("I", info, 100)[0])  # struct tcp_info.tcpi_total_retrans


VERSIONS = {"1.2": TLS_1_2, "1.3": TLS_1_3}
