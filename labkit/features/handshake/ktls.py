"""The kernel's TLS record layer (kTLS) on a socket whose handshake is done.

setsockopt(TCP_ULP, "tls") then TLS_TX and TLS_RX with struct tls12_crypto_info_* of
include/uapi/linux/tls.h, for TLS 1.3: key and IV from each direction's traffic secret
(keyschedule), the IV's first 4 bytes as salt (GCM/CCM; ChaCha20 takes all 12 as iv), and
the sequence number of the next record in each direction. After this, plain send/recv
on the socket carry application data; other record types travel in cmsgs
(TLS_SET_RECORD_TYPE / TLS_GET_RECORD_TYPE). Key bytes go nowhere but setsockopt.
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass

from labkit.features.handshake.keyschedule import traffic_key_iv
from labkit.features.handshake.uapi import (
    CT_APPLICATION_DATA,
    SOL_TLS,
    TCP_ULP,
    TLS_1_3_VERSION,
    TLS_CIPHER_AES_CCM_128,
    TLS_CIPHER_AES_GCM_128,
    TLS_CIPHER_AES_GCM_256,
    TLS_CIPHER_CHACHA20_POLY1305,
    TLS_GET_RECORD_TYPE,
    TLS_RX,
    TLS_SET_RECORD_TYPE,
    TLS_TX,
)


@dataclass(frozen=True)
class Suite:
    """A TLS 1.3 cipher suite as kTLS knows it."""

    name: str  # IANA name, as OpenSSL and Python print it
    code: int  # IANA cipher suite number
    cipher_type: int  # TLS_CIPHER_*
    key_len: int
    salt_len: int  # bytes of the 12-byte IV kept as salt (0 for ChaCha20)
    hash: str

    @property
    def info_size(self) -> int:
        """sizeof(struct tls12_crypto_info_*): header 4 + iv + key + salt + rec_seq 8."""
        return 4 + (12 - self.salt_len) + self.key_len + self.salt_len + 8


SUITES = (
    Suite("TLS_AES_128_GCM_SHA256", 0x1301, TLS_CIPHER_AES_GCM_128, 16, 4, "sha256"),
    Suite("TLS_AES_256_GCM_SHA384", 0x1302, TLS_CIPHER_AES_GCM_256, 32, 4, "sha384"),
    Suite("TLS_CHACHA20_POLY1305_SHA256", 0x1303, TLS_CIPHER_CHACHA20_POLY1305, 32, 0,
          "sha256"),
    Suite("TLS_AES_128_CCM_SHA256", 0x1304, TLS_CIPHER_AES_CCM_128, 16, 4, "sha256"),
)
BY_NAME = {s.name: s for s in SUITES}
BY_CODE = {s.code: s for s in SUITES}


class KtlsError(OSError):
    """The kernel refused kTLS on the socket (no tls module, unsupported cipher...)."""


def crypto_info(suite: Suite, secret: bytes, rec_seq: int) -> bytes:
    """struct tls12_crypto_info_{aes_gcm_128,aes_gcm_256,aes_ccm_128,chacha20_poly1305}:
    version, cipher_type, iv, key, salt, rec_seq (big endian) - for one direction."""
    if not 0 <= rec_seq < 1 << 64:
        raise ValueError(f"record sequence number {rec_seq} does not fit in 64 bits")
    key, iv12 = traffic_key_iv(secret, suite.key_len, suite.hash)
    salt, iv = iv12[:suite.salt_len], iv12[suite.salt_len:]
    return struct.pack("=HH", TLS_1_3_VERSION, suite.cipher_type) + iv + key + salt + \
        rec_seq.to_bytes(8, "big")


@dataclass(frozen=True)
class Session:
    """What a finished TLS 1.3 handshake leaves for the kernel (secrets redacted in repr)."""

    suite: Suite
    tx_secret: bytes
    rx_secret: bytes
    tx_seq: int = 0  # records already sent under tx_secret
    rx_seq: int = 0  # records already received under rx_secret

    def __repr__(self) -> str:
        return f"Session({self.suite.name}, tx_seq={self.tx_seq}, rx_seq={self.rx_seq})"


def install(sock: socket.socket | int, session: Session) -> None:
    """TCP_ULP "tls", then TX and RX state; KtlsError naming the step that failed."""
    fd = sock if isinstance(sock, int) else sock.fileno()
    s = socket.socket(fileno=fd)
    try:
        for step, level, name, value in (
                ("TCP_ULP tls", socket.IPPROTO_TCP, TCP_ULP, b"tls"),
                ("TLS_TX", SOL_TLS, TLS_TX,
                 crypto_info(session.suite, session.tx_secret, session.tx_seq)),
                ("TLS_RX", SOL_TLS, TLS_RX,
                 crypto_info(session.suite, session.rx_secret, session.rx_seq))):
            try:
                s.setsockopt(level, name, value)
            except OSError as exc:
                why = {errno.ENOENT: "the kernel has no tls module",
                       errno.ENOTCONN: "the socket is not connected",
                       errno.EEXIST: "kTLS is already set up on this socket"}.get(
                           exc.errno or 0, exc.strerror or "")
                raise KtlsError(exc.errno or errno.EIO, f"{step}: {why}") from None
    finally:
        s.detach()


def ulp(sock: socket.socket) -> str:
    """The socket's upper-layer protocol ("tls" once kTLS is on, "" before)."""
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, TCP_ULP, 16).split(b"\0", 1)[0].decode()
    except OSError:
        return ""


def send_record(sock: socket.socket, data: bytes, content_type: int = CT_APPLICATION_DATA
                ) -> int:
    """Send data as records of the given content type (application data: plain send)."""
    if content_type == CT_APPLICATION_DATA:
        sock.sendall(data)
        return len(data)
    cmsg = [(SOL_TLS, TLS_SET_RECORD_TYPE, bytes([content_type]))]
    return sock.sendmsg([data], cmsg)


def recv_record(sock: socket.socket, size: int = 1 << 16) -> tuple[int, bytes]:
    """(content type, plaintext) of what the kernel decrypted: a plain recv() fails with
    EIO when the next record is not application data (e.g. a NewSessionTicket)."""
    data, ancdata, _flags, _ = sock.recvmsg(size, socket.CMSG_SPACE(1))
    for level, kind, value in ancdata:
        if level == SOL_TLS and kind == TLS_GET_RECORD_TYPE and value:
            return value[0], data
    return CT_APPLICATION_DATA, data
