"""HandshakeNetlink: the handshake genl family of the current network namespace.

Two NETLINK_GENERIC sockets of the one transport (labkit.base.genl), made in the
namespace they serve (the family is per-namespace: READY goes only to listeners there, and
ACCEPT hands over requests of the requesting socket's namespace): one joined to the
"tlshd" multicast group, read only for READY notifications, and one for ACCEPT/DONE
request-reply exchanges, shared by the daemon's workers under a lock. Standard library only.
"""

from __future__ import annotations

import errno
import secrets
import socket
import threading

from labkit.base import genl
from labkit.base.genl import KernelRefused, NoFamily, exchange
from labkit.features.handshake import messages as m
from labkit.features.handshake.uapi import (
    CMD_READY,
    FAMILY,
    HANDLER_CLASS_TLSHD,
    MCGRP_TLSHD,
)

__all__ = ["HandshakeNetlink", "KernelRefused", "NoFamily", "exchange", "resolve"]

REPLY_TIMEOUT = 10.0  # s: the kernel answers at once; this bounds a wedged exchange


def resolve(sock: socket.socket, seq: int) -> tuple[int, dict[str, int]]:
    """The handshake family's id and multicast groups; NoFamily if the kernel has none."""
    return genl.resolve(sock, FAMILY, seq)


class HandshakeNetlink:
    """The handshake family in this process's network namespace."""

    def __init__(self, timeout: float = REPLY_TIMEOUT) -> None:
        self._req = genl.open_socket(timeout)
        self._lock = threading.Lock()
        self._seq = secrets.randbelow(1 << 30)
        self._mcast: socket.socket | None = None
        try:
            self.family, self.groups = resolve(self._req, self._next())
        except BaseException:
            self._req.close()
            raise

    def _next(self) -> int:
        self._seq = (self._seq + 1) & 0x7FFFFFFF
        return self._seq

    def close(self) -> None:
        self._req.close()
        if self._mcast is not None:
            self._mcast.close()

    def __enter__(self) -> HandshakeNetlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- READY ------------------------------------------------------------------------
    def listen(self) -> socket.socket:
        """Join the tlshd group: from now on the kernel has a listener in this namespace
        (a request submitted without one fails at once with ESRCH). Returns the socket
        READY arrives on, for select()."""
        if self._mcast is None:
            if MCGRP_TLSHD not in self.groups:
                raise NoFamily(errno.ENOENT, f"the {FAMILY!r} family has no "
                               f"{MCGRP_TLSHD!r} multicast group")
            sock = genl.open_socket(REPLY_TIMEOUT)
            try:
                genl.join(sock, self.groups[MCGRP_TLSHD])
                sock.setblocking(False)
            except OSError:
                sock.close()
                raise
            self._mcast = sock
        return self._mcast

    def readies(self) -> int:
        """Drain the multicast socket: how many READY notifications for tlshd arrived."""
        sock = self.listen()
        count = 0
        while True:
            try:
                data = sock.recv(genl.RECV_BUF)
            except (BlockingIOError, InterruptedError):
                return count
            except OSError as exc:  # ENOBUFS: notifications were lost; ACCEPT finds them
                if exc.errno == errno.ENOBUFS:
                    count += 1
                    continue
                raise
            for msg in m.split(data):
                if msg.type == self.family and msg.cmd == CMD_READY and \
                        m.parse_ready(msg) == HANDLER_CLASS_TLSHD:
                    count += 1

    # -- ACCEPT / DONE ------------------------------------------------------------------
    def accept(self, handler_class: int = HANDLER_CLASS_TLSHD) -> m.Accepted | None:
        """The next pending request (its socket is now an fd of this process), or None
        when none is queued (EAGAIN)."""
        with self._lock:
            seq = self._next()
            try:
                replies = exchange(self._req, m.build_accept(self.family, seq, handler_class),
                                   seq)
            except KernelRefused as exc:
                if exc.errno == errno.EAGAIN:
                    return None
                raise
        for reply in replies:
            return m.parse_accept(reply)
        return None

    def done(self, sockfd: int, status: int, remote_auth: list[int] | tuple[int, ...] = ()
             ) -> None:
        """Report the end of a handshake (status 0 or a positive errno). The fd stays ours
        to close."""
        with self._lock:
            seq = self._next()
            exchange(self._req, m.build_done(self.family, seq, sockfd, status, remote_auth),
                     seq)
