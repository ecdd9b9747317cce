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
import select
import socket
import time

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


class DeadlineSocket:
    """recv/send/sendall over a borrowed fd, each bounded by one overall deadline; the
    interface the TLS libraries expect from a socket."""

    def __init__(self, fd: int, deadline: float) -> None:
        self.sock = socket.socket(fileno=fd)  # detached again by release(); never closed
        self.deadline = deadline
        self.bytes_in = 0
        self.bytes_out = 0

    def release(self) -> None:
        self.sock.detach()

    def fileno(self) -> int:
        return self.sock.fileno()

    def _wait(self, events: int) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise HandshakeFailed(errno.ETIMEDOUT, "the handshake did not finish in time")
        poller = select.poll()
        poller.register(self.sock.fileno(), events)
        if not poller.poll(left * 1000):
            raise HandshakeFailed(errno.ETIMEDOUT, "the peer stalled past the handshake's "
                                                   "deadline")

    def recv(self, size: int) -> bytes:
        """Up to size bytes; b"" only at the deadline's end is an error, not EOF."""
        while True:
            self._wait(select.POLLIN)
            try:
                data = self.sock.recv(size, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                continue
            except ConnectionResetError:
                raise HandshakeFailed(errno.ECONNRESET, "the peer reset the connection "
                                                        "during the handshake") from None
            self.bytes_in += len(data)
            return data

    def recv_exact(self, size: int) -> bytes:
        out = b""
        while len(out) < size:
            chunk = self.recv(size - len(out))
            if not chunk:
                raise HandshakeFailed(errno.ECONNRESET, "the peer closed the connection "
                                                        "during the handshake")
            out += chunk
        return out

    def read_record(self) -> bytes:
        """One whole TLS record (header and body), validated as far as a header can be."""
        try:
            return records.read_record(self.recv_exact)
        except records.RecordError as exc:
            raise HandshakeFailed(exc.errno or errno.EPROTO, exc.strerror or "") from None

    def send(self, data: bytes) -> int:
        while True:
            self._wait(select.POLLOUT)
            try:
                sent = self.sock.send(data, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            except (BlockingIOError, InterruptedError):
                continue
            except (BrokenPipeError, ConnectionResetError):
                raise HandshakeFailed(errno.ECONNRESET, "the peer closed the connection "
                                                        "during the handshake") from None
            self.bytes_out += sent
            return sent

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self.send(bytes(view)):]


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
