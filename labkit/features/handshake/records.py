"""A handshake's view of the socket: whole TLS records, within a deadline, nothing more.

The socket the kernel hands over is shared with its in-kernel consumer, so its file flags
and timeouts are left alone: every wait is a poll() with the time left, every read and
write uses MSG_DONTWAIT. Records are read header first, then exactly their length, so
nothing the peer sends after its last handshake record is taken into user space: that is
the kernel's to decrypt once kTLS is on. A peer that sends something that is not a TLS
record, closes early, or stalls past the deadline ends the handshake with an errno
(HandshakeFailed), which is what DONE reports.
"""

from __future__ import annotations

import errno
import socket

from labkit.ktls import records


class HandshakeFailed(Exception):
    """The handshake did not complete; errno is what DONE reports, reason is for people
    (never key material)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.errno = code
        self.reason = reason

    def __str__(self) -> str:
        return f"{errno.errorcode.get(self.errno, self.errno)}: {self.reason}"


class DeadlineSocket(records.RecordSocket):
    """labkit.ktls's RecordSocket over a borrowed fd (the socket the kernel handed over),
    failing with HandshakeFailed, the errno DONE reports."""

    error = HandshakeFailed

    def __init__(self, fd: int, deadline: float) -> None:
        super().__init__(socket.socket(fileno=fd), deadline)  # detached by release()

    def release(self) -> None:
        self.sock.detach()


class RecordSource:
    """A DeadlineSocket whose reads come whole records at a time, with bytes that were
    already read (a peeked ClientHello) replayed first: what tlslite-ng reads through."""

    def __init__(self, dsock: DeadlineSocket, replay: bytes = b"") -> None:
        self.dsock = dsock
        self._buf = replay

    def recv(self, size: int) -> bytes:
        if not self._buf:
            self._buf = self.dsock.read_record()
        out, self._buf = self._buf[:size], self._buf[size:]
        return out

    def send(self, data: bytes) -> int:
        return self.dsock.send(data)

    def sendall(self, data: bytes) -> None:
        self.dsock.sendall(data)

    @property
    def drained(self) -> bool:
        """True when no byte read from the socket is left unconsumed."""
        return not self._buf
