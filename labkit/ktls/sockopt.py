"""kTLS on a socket: struct tls12_crypto_info_* for a direction, TCP_ULP "tls" then TLS_TX
and TLS_RX, and records of types other than application data (cmsgs).

Newer kernels (7.2 has them, 6.12 not) add TLS 1.3 KeyUpdate: TLS_TX/TLS_RX given again
installs the next key (`rekey`), and after the peer's KeyUpdate record reads fail with
EKEYEXPIRED until the new RX key is in (`KeyUpdatePending`, `pending_key_update`: poll and
select hide such a socket's data meanwhile); and TLS_TX_MAX_PAYLOAD_LEN
(`max_payload`), the RFC 8449 record size limit.

Key bytes go nowhere but setsockopt: nothing here logs or keeps them.
"""

from __future__ import annotations

import errno
import socket
import struct

from labkit.ktls.ciphers import Suite
from labkit.ktls.keyschedule import traffic_key_iv
from labkit.ktls.uapi import (
    CT_APPLICATION_DATA,
    HS_KEY_UPDATE,
    SOL_TLS,
    TCP_ULP,
    TLS_1_3_VERSION,
    TLS_GET_RECORD_TYPE,
    TLS_RX,
    TLS_SET_RECORD_TYPE,
    TLS_TX,
    TLS_TX_MAX_PAYLOAD_LEN,
)


class KtlsError(OSError):
    """The kernel refused kTLS on the socket (no tls module, unsupported cipher...)."""


class KeyUpdatePending(KtlsError):
    """The peer sent a KeyUpdate: the kernel holds further records (EKEYEXPIRED) until the
    next RX key is installed with `rekey(sock, rx=...)`."""


def crypto_info(version: int, suite: Suite, key: bytes, salt: bytes, iv: bytes,
                rec_seq: int) -> bytes:
    """struct tls12_crypto_info_{aes_gcm_128,aes_gcm_256,aes_ccm_128,chacha20_poly1305}:
    version, cipher_type, iv, key, salt, rec_seq (big endian), for one direction."""
    if not 0 <= rec_seq < 1 << 64:
        raise ValueError(f"record sequence number {rec_seq} does not fit in 64 bits")
    if len(key) != suite.key_len or len(salt) != suite.salt_len or \
            len(iv) != 12 - suite.salt_len:
        raise ValueError(f"key, salt or iv has the wrong length for {suite.name}")
    return struct.pack("=HH", version, suite.cipher_type) + iv + key + salt + \
        rec_seq.to_bytes(8, "big")


def tls13_crypto_info(suite: Suite, secret: bytes, rec_seq: int) -> bytes:
    """crypto_info for TLS 1.3 from one direction's traffic secret: the 12-byte IV's
    first salt_len bytes are the salt, the rest the iv."""
    key, iv12 = traffic_key_iv(secret, suite.key_len, suite.hash)
    return crypto_info(TLS_1_3_VERSION, suite, key, iv12[:suite.salt_len],
                       iv12[suite.salt_len:], rec_seq)


def install(sock: socket.socket | int, tx: bytes | None, rx: bytes | None = None) -> None:
    """TCP_ULP "tls", then TX and/or RX state (crypto_info bytes); KtlsError naming the
    step that failed, and why in the kernel's terms."""
    fd = sock if isinstance(sock, int) else sock.fileno()
    s = socket.socket(fileno=fd)
    steps = [("TCP_ULP tls", socket.IPPROTO_TCP, TCP_ULP, b"tls")]
    steps += [("TLS_TX", SOL_TLS, TLS_TX, tx)] if tx is not None else []
    steps += [("TLS_RX", SOL_TLS, TLS_RX, rx)] if rx is not None else []
    try:
        for step, level, name, value in steps:
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


def rekey(sock: socket.socket | int, tx: bytes | None = None, rx: bytes | None = None
          ) -> None:
    """Install the next TLS 1.3 key for a direction that already has one (KeyUpdate);
    KtlsError saying why the kernel refused. Same version and cipher as before, rec_seq 0.
    Kernels without kTLS KeyUpdate (6.12) refuse a second TLS_TX/TLS_RX with EBUSY."""
    fd = sock if isinstance(sock, int) else sock.fileno()
    s = socket.socket(fileno=fd)
    try:
        for step, name, value in (("TLS_TX", TLS_TX, tx), ("TLS_RX", TLS_RX, rx)):
            if value is None:
                continue
            try:
                s.setsockopt(SOL_TLS, name, value)
            except OSError as exc:
                why = {errno.EBUSY: "this kernel has no kTLS KeyUpdate (or the session is "
                                    "TLS 1.2, which has no rekey)",
                       errno.EINVAL: "a rekey must keep the TLS version and cipher"}.get(
                           exc.errno or 0, exc.strerror or "")
                raise KtlsError(exc.errno or errno.EIO, f"{step} rekey: {why}") from None
    finally:
        s.detach()


def pending_key_update(sock: socket.socket) -> bool:
    """Whether the kernel holds this socket's records until the next RX key is installed
    (the peer's KeyUpdate was read). poll/select never report such a socket readable, so a
    reader that waits on them would hang instead of seeing EKEYEXPIRED: ask this after a
    KeyUpdate record. A non-blocking peek, which returns at once."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        sock.recvmsg(1, socket.CMSG_SPACE(1), socket.MSG_PEEK)
    except OSError as exc:
        return exc.errno == errno.EKEYEXPIRED
    finally:
        sock.settimeout(timeout)
    return False


def key_update_message(request_update: bool) -> bytes:
    """A KeyUpdate handshake message (RFC 8446 4.6.3), sent as a handshake record under
    the old key (`send_record(sock, msg, CT_HANDSHAKE)`) before `rekey(sock, tx=...)`."""
    return bytes([HS_KEY_UPDATE, 0, 0, 1, 1 if request_update else 0])


def max_payload(sock: socket.socket, size: int | None = None) -> int:
    """TLS_TX_MAX_PAYLOAD_LEN: set the largest plaintext per record the kernel sends
    (RFC 8449; 64..16384, one less for TLS 1.3) when size is given; return the value in
    force. KtlsError where the kernel has no such option (6.12)."""
    try:
        if size is not None:
            sock.setsockopt(SOL_TLS, TLS_TX_MAX_PAYLOAD_LEN, struct.pack("=H", size))
        return int(struct.unpack("=H", sock.getsockopt(SOL_TLS, TLS_TX_MAX_PAYLOAD_LEN, 2))[0])
    except OSError as exc:
        why = {errno.ENOPROTOOPT: "this kernel has no TLS_TX_MAX_PAYLOAD_LEN",
               errno.EINVAL: f"{size} is outside the record size limits"}.get(
                   exc.errno or 0, exc.strerror or "")
        raise KtlsError(exc.errno or errno.EIO, f"TLS_TX_MAX_PAYLOAD_LEN: {why}") from None


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
    EIO when the next record is not application data (e.g. a NewSessionTicket).
    KeyUpdatePending once a received KeyUpdate has been read (kernels with rekey)."""
    try:
        data, ancdata, _flags, _ = sock.recvmsg(size, socket.CMSG_SPACE(1))
    except OSError as exc:
        if exc.errno == errno.EKEYEXPIRED:
            raise KeyUpdatePending(exc.errno, "the peer sent a KeyUpdate: install its next "
                                   "key with rekey(sock, rx=...)") from None
        raise
    for level, kind, value in ancdata:
        if level == SOL_TLS and kind == TLS_GET_RECORD_TYPE and value:
            return value[0], data
    return CT_APPLICATION_DATA, data
