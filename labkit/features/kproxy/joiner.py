"""Sockmap mode: the kernel moves the bytes; this event loop only forwards the closes.

sockmap passes data, never FIN or RST. Once a socket's peer half-closed or reset, the
proxy must do the same on the other socket, but only after the kernel has finished with
what arrived before: a FIN queued ahead of data still waiting in the sockmap's backlog
makes that data fail (EPIPE), and an RST discards whatever is queued. In-flight data is
accounted for exactly: the verdict program counts per socket the bytes it judged
(passed or dropped), TCP counts the bytes that arrived (tcp_info bytes_received) and the
bytes handed to the other socket (bytes_acked + SIOCOUTQ). A FIN goes on when every
arrived byte was judged and every passed byte was handed over; an RST when they were
also acknowledged. An incomplete policy message at the end of a stream is never judged:
it is counted as dropped once nothing has moved for STALL seconds.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from labkit.features.kproxy import tcpstate
from labkit.features.kproxy.programs import Counters
from labkit.features.kproxy.sockmap import Sockmap, cookie

if TYPE_CHECKING:
    from labkit.features.kproxy.proxy import Proxy

# CLOSE_WAIT, LAST_ACK, CLOSING, TIME_WAIT, and CLOSE: a socket that had sent its own FIN
# goes from FIN_WAIT2 to TIME_WAIT at the peer's FIN, which leaves the full socket CLOSE.
FIN_RECEIVED = {8, 9, 11, 6, 7}
TICK = 0.005  # s between drain checks while a close is pending
STALL = 0.3  # s without progress after which unjudged bytes are an incomplete message
DRAIN_TIMEOUT = 10.0
PEER_RESET = {errno.ECONNRESET, errno.EPIPE, errno.ETIMEDOUT, errno.ECONNABORTED}
EVENTS = select.EPOLLRDHUP | select.EPOLLERR | select.EPOLLHUP | select.EPOLLET


@dataclass
class End:
    """One socket of a joined pair."""

    sock: socket.socket
    key: bytes  # its cookie
    upstream: bool  # True for the socket connected to the upstream server
    base_handed: int = 0
    fin_seen: bool = False  # its peer half-closed
    fin_sent: bool = False  # we half-closed it (forwarding the other side's FIN)


@dataclass
class Pending:
    """A close to forward from `src` to `dst` once the data before it has drained; an
    abort (the stream parser refused the stream) resets both sides at once."""

    src: End
    dst: End
    reset: bool
    abort: bool = False
    since: float = field(default_factory=time.monotonic)
    progress: tuple[int, int] = (-1, -1)
    moved_at: float = field(default_factory=time.monotonic)


@dataclass
class Joined:
    a: End
    b: End
    pending: list[Pending] = field(default_factory=list)
    done: bool = False

    def peer(self, end: End) -> End:
        return self.b if end is self.a else self.a


class Joiner:
    def __init__(self, proxy: Proxy, sockmap: Sockmap) -> None:
        self.proxy = proxy
        self.sockmap = sockmap
        self.epoll = select.epoll()
        self.by_fd: dict[int, tuple[Joined, End]] = {}
        self.incoming: queue.Queue[Joined] = queue.Queue()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.epoll.register(self.wake_r, select.EPOLLIN)
        self.closed = Counters()  # counters of connections that are gone, per direction
        self.closed_down = Counters()
        self.lock = threading.Lock()

    # -- from the accept thread ------------------------------------------------------
    def join(self, a: socket.socket, b: socket.socket) -> None:
        """Proxy a (from the client) and b (to the upstream) in the kernel from now on."""
        conn = Joined(End(a, cookie(a), False), End(b, cookie(b), True))
        conn.a.base_handed = tcpstate.read(a).handed
        conn.b.base_handed = tcpstate.read(b).handed
        self.sockmap.join(a, b)
        self.incoming.put(conn)
        os.write(self.wake_w, b"j")

    def totals(self) -> tuple[Counters, Counters]:
        """(upstream, downstream) counters: closed connections plus live ones."""
        with self.lock:
            up, down = self.closed, self.closed_down
            live = [(c.a.key, c.b.key) for c, e in self.by_fd.values() if e is c.a]
        for ka, kb in live:
            up = up + self.sockmap.counters(ka)
            down = down + self.sockmap.counters(kb)
        return up, down

    # -- the loop --------------------------------------------------------------------
    def run(self) -> None:
        active: dict[int, Joined] = {}
        while True:
            waiting = any(c.pending for c in active.values())
            for fd, _ in self.epoll.poll(TICK if waiting else -1):
                if fd == self.wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self.wake_r, 4096)
                    while not self.incoming.empty():
                        conn = self.incoming.get()
                        active[id(conn)] = conn
                        for end in (conn.a, conn.b):
                            with self.lock:
                                self.by_fd[end.sock.fileno()] = (conn, end)
                            self.epoll.register(end.sock.fileno(), EVENTS)
                            self._event(conn, end)  # a close may have come before
                    continue
                entry = self.by_fd.get(fd)
                if entry is not None:
                    self._event(*entry)
            for key, conn in list(active.items()):
                if conn.pending:
                    self._progress(conn)
                if conn.done:
                    del active[key]

    def _event(self, conn: Joined, end: End) -> None:
        if conn.done:
            return
        peer = conn.peer(end)
        err = end.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            if not any(p.reset for p in conn.pending):
                # ECONNRESET and friends: the peer reset. Anything else (EMSGSIZE, EPROTO)
                # is the stream parser giving up on the stream: a policy violation.
                abort = err not in PEER_RESET
                conn.pending.append(Pending(end, peer, reset=True, abort=abort))
                if abort:
                    self.proxy.stats.add(stream_errors=1)
            return
        if any(p.reset for p in conn.pending):
            # A reset is pending, and it ends the connection. A second event of the same
            # RST finds SO_ERROR already read and the socket in TCP_CLOSE, which reads as
            # a FIN: forwarded while the reset waited for its drain, it reached the peer
            # as EOF before the RST (notebook 04, pair km, in CI-like run ci18).
            return
        state = tcpstate.read(end.sock).state
        if state in FIN_RECEIVED and not end.fin_seen:
            end.fin_seen = True
            conn.pending.append(Pending(end, peer, reset=False))

    def _progress(self, conn: Joined) -> None:
        for p in list(conn.pending):
            if conn.done:
                return
            if not self._drained(p):
                continue
            conn.pending.remove(p)
            if p.reset:
                self.proxy.stats.add(resets=1)
                self._finish(conn, rst=(p.src, p.dst) if p.abort else (p.dst,))
                return
            with contextlib.suppress(OSError):
                p.dst.sock.shutdown(socket.SHUT_WR)
            p.dst.fin_sent = True
            self.proxy.stats.add(half_closes=1)
        if conn.a.fin_sent and conn.b.fin_sent:
            self._finish(conn)

    def _drained(self, p: Pending) -> bool:
        """Has everything that arrived on p.src before its close reached p.dst? On a
        stream the policy refused (abort), what it passed before the bad message: the
        relay proxies forward those messages too (policy.StreamError.passed), and an RST
        while they wait in dst's send queue would discard them (CI-like run ci12)."""
        now = time.monotonic()
        try:
            counts = self.sockmap.counters(p.src.key)
            src, dst = tcpstate.read(p.src.sock), tcpstate.read(p.dst.sock)
        except OSError:
            return True
        arrived = src.bytes_received - (1 if p.src.fin_seen else 0)
        judged = counts.pass_bytes + counts.drop_bytes
        handed = dst.handed - p.dst.base_handed
        delivered = handed >= counts.pass_bytes and (not p.reset or dst.outq == 0)
        if (judged, handed) != p.progress:
            p.progress, p.moved_at = (judged, handed), now
        if delivered and (p.abort or judged >= arrived):
            return True  # an aborted stream's rest is never judged
        if delivered and now - p.moved_at >= STALL:
            self.proxy.stats.moved(not p.src.upstream,
                                   incomplete_bytes=max(0, arrived - judged))
            return True
        if now - p.since >= DRAIN_TIMEOUT:
            self.proxy.stats.add(drain_timeouts=1)
            return True
        return False

    def _finish(self, conn: Joined, rst: tuple[End, ...] = ()) -> None:
        conn.done = True
        up, down = self.sockmap.counters(conn.a.key), self.sockmap.counters(conn.b.key)
        for end in (conn.a, conn.b):
            fd = end.sock.fileno()
            with contextlib.suppress(OSError):
                self.epoll.unregister(fd)
            if end in rst:
                with contextlib.suppress(OSError):
                    end.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))
            with self.lock:
                self.by_fd.pop(fd, None)
            end.sock.close()  # leaves the sockmaps with it
            self.sockmap.forget(end.key)
        with self.lock:
            self.closed = self.closed + up
            self.closed_down = self.closed_down + down
        self.proxy.stats.add(active=-1, closed=1)
