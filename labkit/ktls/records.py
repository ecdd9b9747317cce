"""TLS records off a socket, whole and one at a time, and the hellos' randoms in them.

A handshake that kTLS takes over must not read a byte past its last handshake record:
what follows is the kernel's to decrypt. So records are read header first, then exactly
their length. The socket's file flags and timeout are left alone (a socket the kernel
handed over is shared with its in-kernel consumer): every wait is a poll() with the time
left to the deadline, every read and write uses MSG_DONTWAIT.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from labkit.ktls.uapi import (
    CT_ALERT,
    CT_APPLICATION_DATA,
    CT_CHANGE_CIPHER_SPEC,
    CT_HANDSHAKE,
    MAX_CIPHERTEXT,
    RECORD_HEADER,
)

RECORD_TYPES = (CT_CHANGE_CIPHER_SPEC, CT_ALERT, CT_HANDSHAKE, CT_APPLICATION_DATA)
HS_CLIENT_HELLO, HS_SERVER_HELLO = 1, 2


class RecordError(OSError):
    """No whole record: EPROTO (bytes that are not TLS), ECONNRESET (the peer closed or
    reset), ETIMEDOUT (the deadline passed). The text is for people, never key bytes."""


def check_header(head: bytes) -> tuple[int, int]:
    """(content type, length) of a record header; RecordError(EPROTO) for bytes that are
    not one (unknown type, a version that is not 3.x, an impossible length)."""
    kind, version, length = struct.unpack("!BHH", head)
    if not is_header(kind, version, length):
        raise RecordError(errno.EPROTO, f"the peer sent bytes that are not a TLS record "
                                        f"(header {head.hex()})")
    return kind, length


def is_header(kind: int, version: int, length: int, max_length: int = MAX_CIPHERTEXT) -> bool:
    """A known content type, a 3.x version and a length a record may have: the one rule
    for telling a record header from other bytes, on a socket or in a capture."""
    return kind in RECORD_TYPES and version >> 8 == 3 and length <= max_length


def read_record(recv_exact: Callable[[int], bytes]) -> bytes:
    """One whole record (header and body) through recv_exact(n), which returns exactly n
    bytes or raises: the one record reader every transport uses."""
    head = recv_exact(RECORD_HEADER)
    _, length = check_header(head)
    return head + recv_exact(length)


class RecordSocket:
    """recv/send/sendall and whole records over a connected socket, each wait bounded by
    one deadline (time.monotonic(); None waits as long as it takes): the interface the
    TLS libraries expect from a socket. Failures raise `error(errno, text)`: RecordError
    here, a caller's own type in a subclass (the handshake daemon's HandshakeFailed)."""

    error: type[Exception] = RecordError

    def __init__(self, sock: socket.socket, deadline: float | None = None) -> None:
        self.sock = sock
        self.deadline = deadline
        self.bytes_in = 0
        self.bytes_out = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def _wait(self, events: int) -> None:
        left = None if self.deadline is None else self.deadline - time.monotonic()
        if left is not None and left <= 0:
            raise self.error(errno.ETIMEDOUT, "the handshake did not finish in time")
        poller = select.poll()
        poller.register(self.sock.fileno(), events)
        if not poller.poll(None if left is None else left * 1000):
            raise self.error(errno.ETIMEDOUT, "the peer stalled past the handshake's deadline")

    def recv(self, size: int) -> bytes:
        """Up to size bytes as soon as some arrive; b"" at the peer's end of stream."""
        while True:
            self._wait(select.POLLIN)
            try:
                data = self.sock.recv(size, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError, TimeoutError):
                continue
            except ConnectionResetError:
                raise self.error(errno.ECONNRESET, "the peer reset the connection during the "
                                                   "handshake") from None
            self.bytes_in += len(data)
            return data

    def recv_exact(self, size: int) -> bytes:
        out = b""
        while len(out) < size:
            chunk = self.recv(size - len(out))
            if not chunk:
                raise self.error(errno.ECONNRESET, "the peer closed the connection during the "
                                                   "handshake")
            out += chunk
        return out

    def read_record(self) -> bytes:
        """One whole record (header and body), validated as far as a header can be."""
        try:
            return read_record(self.recv_exact)
        except RecordError as exc:
            if self.error is RecordError:
                raise
            raise self.error(exc.errno or errno.EPROTO, exc.strerror or "") from None

    def send(self, data: bytes) -> int:
        while True:
            self._wait(select.POLLOUT)
            try:
                sent = self.sock.send(data, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            except (BlockingIOError, InterruptedError, TimeoutError):
                continue
            except (BrokenPipeError, ConnectionResetError):
                raise self.error(errno.ECONNRESET, "the peer closed the connection during the "
                                                   "handshake") from None
            self.bytes_out += sent
            return sent

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self.send(view):]


NAMES = {CT_CHANGE_CIPHER_SPEC: "change_cipher_spec", CT_ALERT: "alert",
         CT_HANDSHAKE: "handshake", CT_APPLICATION_DATA: "application_data"}
MAX_TLS12_CIPHERTEXT = (1 << 14) + 2048  # RFC 5246's ceiling; TLS 1.3's is MAX_CIPHERTEXT


@dataclass(frozen=True)
class Record:
    type: int
    version: int
    body: bytes
    offset: int  # of its header, in the stream

    @property
    def header(self) -> bytes:
        return struct.pack("!BHH", self.type, self.version, len(self.body))


@dataclass
class Walk:
    """A captured stream read as records, up to where it ends or stops being TLS."""

    records: list[Record] = field(default_factory=list)
    bad_at: int | None = None  # stream offset where the bytes stop being TLS
    tail: int = 0  # bytes after the last whole record (one cut short by the capture's end)

    @property
    def consumed(self) -> int:
        return self.records[-1].offset + RECORD_HEADER + len(self.records[-1].body) \
            if self.records else 0

    def types(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for rec in self.records:
            out[NAMES[rec.type]] = out.get(NAMES[rec.type], 0) + 1
        return out


def walk(data: bytes, max_length: int = MAX_CIPHERTEXT) -> Walk:
    """The records of a captured stream from its first byte: the one reader of TLS off a
    wire (kproxy legs, handshake consumers' ports, the offload NIC's output, decryption).
    A header with an unknown type, a version that is not 3.x or a length past max_length
    is where the bytes stop being TLS."""
    out = Walk()
    pos = 0
    while pos + RECORD_HEADER <= len(data):
        kind, version, length = struct.unpack_from("!BHH", data, pos)
        if not is_header(kind, version, length, max_length):
            out.bad_at = pos
            return out
        if pos + RECORD_HEADER + length > len(data):
            break
        out.records.append(Record(kind, version,
                                  data[pos + RECORD_HEADER:pos + RECORD_HEADER + length], pos))
        pos += RECORD_HEADER + length
    out.tail = len(data) - pos
    return out


def split(data: bytes) -> list[tuple[bytes, bytes]]:
    """(header, body) of each whole record at the start of a stream."""
    return [(rec.header, rec.body) for rec in walk(data, MAX_TLS12_CIPHERTEXT).records]


def hello_random(records: list[tuple[bytes, bytes]], msg_type: int) -> bytes | None:
    """The random of the ClientHello (msg_type 1) or ServerHello (2) among a stream's
    first plaintext records: offset 6 of the message (type, 3-byte length, version)."""
    for header, body in records[:3]:
        if header[0] == CT_HANDSHAKE and body[:1] == bytes([msg_type]) and len(body) >= 38:
            return body[6:38]
    return None
