"""A TLS handshake in user space (OpenSSL through Python's ssl), then its record layer in
the kernel: the one copy of that mechanism.

- The handshake runs on an ssl.SSLObject over memory BIOs, fed one whole record at a time
  (records.py), so nothing the peer sends after its last handshake record is read into
  user space: those records are the kernel's to decrypt.
- The secrets come from the context's key log, pointed at a pipe (keylog.py): they never
  touch a disk, and go nowhere but into the Handshake the caller gets and setsockopt.
- Keys follow RFC 8446 7.3 (TLS 1.3) or the RFC 5246 key block (TLS 1.2); the next record
  numbers are what the handshake used: TLS 1.2's Finished was record 0 each way; a TLS 1.3
  server's NewSessionTickets were sent under its application key.

The transport is anything with read_record() and sendall() (records.RecordSocket, or a
caller's own deadline socket); its exceptions pass through untouched. OpenSSL's failures
become HandshakeError with an errno a caller can report (the handshake upcall's DONE).
"""

from __future__ import annotations

import contextlib
import errno
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any, Protocol

from labkit.ktls import keylog as nss
from labkit.ktls.ciphers import Suite, of_negotiated
from labkit.ktls.keyschedule import tls12_key_block
from labkit.ktls.records import (
    HS_CLIENT_HELLO,
    HS_SERVER_HELLO,
    RecordSocket,
    hello_random,
    split,
)
from labkit.ktls.sockopt import crypto_info, install, tls13_crypto_info
from labkit.ktls.uapi import TLS_1_2_VERSION, TLS_1_3_VERSION

VERSIONS = {"TLSv1.2": TLS_1_2_VERSION, "TLSv1.3": TLS_1_3_VERSION}


class Transport(Protocol):
    def read_record(self) -> bytes: ...

    def sendall(self, data: bytes) -> None: ...


class HandshakeError(OSError):
    """The handshake failed or left something kTLS cannot take; errno says what kind
    (EACCES authentication, EPROTO malformed, ECONNRESET closed, EPROTONOSUPPORT a
    version or suite kTLS is not set up for, EIO no secrets). Never holds key bytes."""


_SSL_EPROTO_WORDS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH",
                     "DECODE_ERROR", "BAD_PACKET", "UNEXPECTED_MESSAGE", "HTTP_REQUEST",
                     "UNEXPECTED_RECORD", "LENGTH_MISMATCH", "BAD_RECORD_TYPE",
                     "RECORD_TOO_LARGE", "UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE")


def ssl_errno(exc: ssl.SSLError) -> int:
    """The errno an OpenSSL failure stands for."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return errno.EACCES
    words = f"{exc.reason or ''} {exc}".upper()
    if any(w in words for w in _SSL_EPROTO_WORDS):
        return errno.EPROTO
    if isinstance(exc, ssl.SSLEOFError):
        return errno.ECONNRESET
    return errno.EACCES


@dataclass(frozen=True, repr=False)
class Handshake:
    """A finished handshake, from one side: what kTLS needs (secrets kept out of repr)."""

    server_side: bool
    version: int  # TLS_1_2_VERSION or TLS_1_3_VERSION
    version_name: str  # as ssl says it: "TLSv1.3"
    cipher: str  # the negotiated suite as ssl names it
    client_random: bytes
    server_random: bytes
    keylog: str = field(repr=False)  # the session's NSS key log lines
    tx_seq: int = 0  # records already sent under the application key
    rx_seq: int = 0  # records already received under it
    peer_cert_der: bytes = b""
    peer_cert: dict[str, Any] = field(default_factory=dict)  # verified certificate's fields
    records_in: int = 0
    flights_out: int = 0

    def __repr__(self) -> str:
        side = "server" if self.server_side else "client"
        return f"Handshake({side}, {self.version_name}, {self.cipher}, <secrets>)"

    @property
    def suite(self) -> Suite:
        try:
            return of_negotiated(self.cipher)
        except ValueError:
            raise HandshakeError(errno.EPROTONOSUPPORT, f"negotiated {self.cipher}, which "
                                                        "kTLS has no cipher for") from None

    def secret(self, label: str) -> bytes:
        """One secret of this session's key log (HandshakeError(EIO) when absent)."""
        found = nss.parse(self.keylog).get(self.client_random, {}).get(label)
        if found is None:
            raise HandshakeError(errno.EIO, f"the TLS library did not reveal its {label}")
        return found

    def traffic_secrets(self) -> tuple[bytes, bytes]:
        """TLS 1.3: (this side's write secret, the peer's)."""
        if self.version != TLS_1_3_VERSION:
            raise HandshakeError(errno.EPROTONOSUPPORT, f"{self.version_name} has no "
                                                        "traffic secrets")
        client, server = self.secret(nss.CLIENT_APP), self.secret(nss.SERVER_APP)
        return (server, client) if self.server_side else (client, server)

    def crypto_infos(self) -> tuple[bytes, bytes]:
        """(TX, RX) struct tls12_crypto_info_* for this side, at the next record numbers."""
        suite = self.suite
        if self.version == TLS_1_3_VERSION:
            tx, rx = self.traffic_secrets()
            return tls13_crypto_info(suite, tx, self.tx_seq), \
                tls13_crypto_info(suite, rx, self.rx_seq)
        if self.version != TLS_1_2_VERSION:
            raise HandshakeError(errno.EPROTONOSUPPORT, f"kTLS takes TLS 1.2 and 1.3, not "
                                                        f"{self.version_name}")
        iv_len = suite.salt_len or 12  # ChaCha20: a 12-byte fixed IV, no salt
        block = tls12_key_block(self.secret(nss.CLIENT_RANDOM), self.client_random,
                                self.server_random, suite.key_len, iv_len, suite.hash)
        mine, peer = ("server", "client") if self.server_side else ("client", "server")

        def info(side: str, seq: int) -> bytes:
            key, fixed = block[f"{side}_key"], block[f"{side}_iv"]
            if suite.salt_len:  # GCM/CCM: the explicit nonce is the record number (OpenSSL)
                return crypto_info(TLS_1_2_VERSION, suite, key, fixed, seq.to_bytes(8, "big"),
                                   seq)
            return crypto_info(TLS_1_2_VERSION, suite, key, b"", fixed, seq)

        return info(mine, self.tx_seq), info(peer, self.rx_seq)


def run(ctx: ssl.SSLContext, io: Transport, *, server_side: bool,
        server_hostname: str | None = None) -> Handshake:
    """One handshake over io with a context made for it (its key log is taken over: a
    pipe for this handshake only). HandshakeError when OpenSSL fails (its alert, if any,
    is sent first) or when the peer's data came inside the last handshake record."""
    pipe = nss.KeylogPipe()
    sent = received = b""
    records_in = flights_out = final_records = 0
    try:
        ctx.keylog_filename = pipe.path
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing, server_side=server_side,
                           server_hostname=server_hostname)
        while True:
            try:
                obj.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            except ssl.SSLError as exc:
                with contextlib.suppress(Exception):  # the alert OpenSSL wrote
                    if outgoing.pending:
                        io.sendall(outgoing.read())
                raise HandshakeError(ssl_errno(exc), f"TLS handshake failed: "
                                                     f"{exc.reason or exc}") from None
            if outgoing.pending:
                data = outgoing.read()
                if len(sent) < 1 << 16:
                    sent += data
                io.sendall(data)
                flights_out += 1
                final_records = len(split(data)) if done else 0
            if done:
                break
            record = io.read_record()
            if len(received) < 1 << 16:
                received += record
            incoming.write(record)
            records_in += 1
        if incoming.pending or obj.pending():
            raise HandshakeError(errno.EPROTO, "the peer sent data inside its last handshake "
                                               "record; kTLS cannot take it over")
        name = obj.version() or ""
        cipher = (obj.cipher() or ("",))[0]
        peer_der = obj.getpeercert(binary_form=True) or b""
        peer = (obj.getpeercert() or {}) if peer_der else {}
        ctx.keylog_filename = None  # closes OpenSSL's end of the pipe
        text = pipe.text()
    finally:
        pipe.close()
    mine, theirs = split(sent), split(received)
    hellos = (mine, theirs) if not server_side else (theirs, mine)
    version = VERSIONS.get(name, 0)
    tx_seq = rx_seq = 1 if version == TLS_1_2_VERSION else 0
    if version == TLS_1_3_VERSION and server_side:
        tx_seq = final_records  # NewSessionTickets, after the client's Finished
    return Handshake(server_side, version, name, cipher,
                     hello_random(hellos[0], HS_CLIENT_HELLO) or b"",
                     hello_random(hellos[1], HS_SERVER_HELLO) or b"", text, tx_seq, rx_seq,
                     peer_der, peer, records_in, flights_out)


def install_ktls(sock: socket.socket | int, hs: Handshake, *, tx: bool = True,
                 rx: bool = True) -> None:
    """TCP_ULP "tls", then the directions asked for; sockopt.KtlsError names the step the
    kernel refused."""
    tx_info, rx_info = hs.crypto_infos()
    install(sock, tx_info if tx else None, rx_info if rx else None)


def to_ktls(sock: socket.socket, ctx: ssl.SSLContext, *, server_side: bool,
            server_hostname: str | None = None, deadline: float | None = None,
            tx: bool = True, rx: bool = True) -> Handshake:
    """Handshake on a connected TCP socket within deadline (time.monotonic()), then kTLS
    on it: run() through a RecordSocket, then install_ktls()."""
    hs = run(ctx, RecordSocket(sock, deadline), server_side=server_side,
             server_hostname=server_hostname)
    install_ktls(sock, hs, tx=tx, rx=rx)
    return hs
