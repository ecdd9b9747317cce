"""TLS 1.3 handshakes in user space, then the record layer in the kernel (kTLS).

Python's ssl (OpenSSL) does the handshake over memory BIOs, fed one TLS record at a time
straight from the socket, so nothing the peer sends after its Finished is read into user
space: those records are the kernel's to decrypt. The traffic secrets come from the
context's key log (Python 3.11 has no other way to them; the file is created 0600 and
removed as soon as it was read); key and IV follow RFC 8446 section 7.3, and go to the
kernel with setsockopt(SOL_TLS, TLS_TX/TLS_RX) (include/uapi/linux/tls.h).

Secrets never leave this module except into setsockopt; nothing here logs them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import struct

from labkit.ktls.ciphers import BY_NAME
from labkit.ktls.sockopt import install, tls13_crypto_info
from labkit.ktls.uapi import MAX_CIPHERTEXT, RECORD_HEADER


class TlsError(Exception):
    """The handshake failed or produced something kTLS cannot take."""


def _read_exact(sock: socket.socket, count: int) -> bytes:
    data = sock.recv(count, socket.MSG_WAITALL)
    if len(data) != count:
        raise TlsError("the peer closed the connection during the TLS handshake")
    return data


def _read_record(sock: socket.socket) -> bytes:
    head = _read_exact(sock, RECORD_HEADER)
    length = struct.unpack("!H", head[3:5])[0]
    if length > MAX_CIPHERTEXT:
        raise TlsError("the peer sent something that is not a TLS record")
    return head + _read_exact(sock, length)


def _secrets(keylog: str, client_random: bytes) -> dict[str, bytes]:
    found = {}
    with open(keylog) as fh:
        for line in fh:
            parts = line.split()
            if len(parts) == 3 and parts[1].lower() == client_random.hex():
                found[parts[0]] = bytes.fromhex(parts[2])
    return found


def handshake_to_ktls(sock: socket.socket, ctx: ssl.SSLContext, keylog: str, *,
                      server_side: bool, server_hostname: str | None = None) -> str:
    """Run the TLS 1.3 handshake on a connected TCP socket, then hand the record layer to
    the kernel (TX and RX). `ctx` must log keys to `keylog` (made 0600 by the caller);
    the file is removed here. Returns the cipher suite's name."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_side=server_side,
                       server_hostname=server_hostname)
    client_random = b""
    try:
        while True:
            try:
                obj.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            data = outgoing.read()
            if data and not client_random and not server_side:
                client_random = data[11:43]  # record 5 + handshake 4 + version 2
            if data:
                sock.sendall(data)
            if done:
                break
            record = _read_record(sock)
            if not client_random and server_side:
                client_random = record[11:43]
            incoming.write(record)
        if incoming.pending or obj.pending():
            raise TlsError("TLS data arrived with the handshake; kTLS cannot take it over")
        if obj.version() != "TLSv1.3":
            raise TlsError(f"negotiated {obj.version()}; labkit's kTLS path takes TLS 1.3")
        name = (obj.cipher() or ("?",))[0]
        suite = BY_NAME.get(name)
        if suite is None:
            raise TlsError(f"cipher suite {name} has no kTLS support here")
        found = _secrets(keylog, client_random)
    except ssl.SSLError as exc:
        raise TlsError(f"TLS handshake failed: {exc.reason or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(keylog)
    client, server = found.get("CLIENT_TRAFFIC_SECRET_0"), found.get("SERVER_TRAFFIC_SECRET_0")
    if client is None or server is None:
        raise TlsError("the key log has no traffic secrets for this connection")
    tx, rx = (server, client) if server_side else (client, server)
    install(sock, tls13_crypto_info(suite, tx, 0), tls13_crypto_info(suite, rx, 0))
    return name

