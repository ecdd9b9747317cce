"""User-space proxies: one connection's two directions, each moved by its own thread.

Modes:
  boomerang  read(2) into a buffer, write(2) it out (plain TCP), or SSL_read/SSL_write
             through OpenSSL (TLS pairs: the proxy decrypts and re-encrypts). read/write
             rather than recv/send because /proc/PID/io counts the former (rchar, wchar):
             the copies then show where the measurements look for them.
  splice     splice(2) socket -> pipe -> socket: the bytes never enter user memory. On TLS
             pairs both sockets are kTLS sockets, so the kernel decrypts on the way in and
             encrypts on the way out.

Close semantics (what sockmap does not do by itself, and every mode must): a FIN is
forwarded (shutdown SHUT_WR) after the last byte was handed to the other socket, which
TCP sends before the FIN; a reset is forwarded (SO_LINGER 0 close) only once the other
socket's send queue is empty, since an RST discards what is still queued.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import queue
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING, Any

from labkit.base.wait import poll
from labkit.features.kproxy import tcpstate
from labkit.features.kproxy.policy import Filter, StreamError, dropped, header_length
from labkit.ktls.uapi import SOL_TLS, TLS_GET_RECORD_TYPE

if TYPE_CHECKING:
    from labkit.features.kproxy.proxy import Proxy

BUFFER = 1 << 18  # bytes per read in boomerang mode
PIPE_SIZE = 1 << 20  # splice pipe capacity (F_SETPIPE_SZ)
F_SETPIPE_SZ = 1031
SPLICE_F_MOVE, SPLICE_F_MORE = 1, 4
RECORD_OVERHEAD = 22  # TLS 1.3 AEAD record: 5-byte header, content type byte, 16-byte tag
DRAIN_TIMEOUT = 10.0  # s to wait for a send queue to empty before forwarding a reset
ALERT, HANDSHAKE = 21, 22
_ENDED = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, TimeoutError)


class Side:
    """One socket of a connection and how its bytes are read and written."""

    def __init__(self, sock: socket.socket, tls: Any = None, ktls: bool = False) -> None:
        self.sock = sock  # the TCP socket (an ssl.SSLSocket for user-space TLS)
        self.fd = sock.fileno()
        self.tls = tls  # ssl.SSLSocket when the proxy does TLS in user space
        self.ktls = ktls  # kTLS installed: splice reads plaintext, writes records
        self.base_received = 0  # TCP bytes received before the data phase (handshake)
        self.base_handed = 0

    def mark_data_start(self) -> None:
        st = tcpstate.read(self.sock)
        self.base_received, self.base_handed = st.bytes_received, st.handed

    def read_into(self, buf: bytearray | memoryview) -> int:
        if self.tls is not None:
            return self.tls.recv_into(buf)
        return os.readv(self.fd, [buf])

    def write_all(self, data: bytes | memoryview) -> None:
        if self.tls is not None:
            self.tls.sendall(data)
            return
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def shutdown(self, how: int) -> None:
        # socket.socket's own shutdown: ssl.SSLSocket.shutdown would drop its TLS state,
        # and the other direction still reads records from this socket.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.sock, how)


class Connection:
    """Both directions of one proxied connection, and the closes between them."""

    def __init__(self, proxy: Proxy, a: Side, b: Side, mode: str) -> None:
        self.proxy = proxy
        self.mode = mode  # splice | boomerang
        self.a, self.b = a, b  # a: accepted from the client, b: connected upstream
        self.events: queue.Queue[tuple[str, bool]] = queue.Queue()
        self.closing = threading.Event()  # a reset or abort is being forwarded
        self.plain = {True: 0, False: 0}  # plaintext bytes moved, by direction (up=True)

    def run(self) -> None:
        threads = [threading.Thread(target=self._pump, args=(up,), daemon=True,
                                    name=f"pump-{'up' if up else 'down'}")
                   for up in (True, False)]
        for t in threads:
            t.start()
        finished = 0
        while finished < 2:
            what, up = self.events.get()
            if what == "done":
                finished += 1
            elif what in ("reset", "abort") and not self.closing.is_set():
                self._forward_reset(up, abort=what == "abort")
                self._wake(threads)
        for t in threads:
            t.join()
        if self.proxy.tls:
            self._count_records()
        for side in (self.a, self.b):  # only now: no thread uses these fds any more
            with contextlib.suppress(OSError):
                side.sock.close()  # an RST where SO_LINGER 0 was set
        self.proxy.stats.add(active=-1, closed=1)

    def _wake(self, threads: list[threading.Thread]) -> None:
        """Make both pumps return: readers wake at SHUT_RD; a writer blocked on a peer
        that does not read wakes only at SHUT_WR (the FIN precedes the RST then)."""
        for side in (self.a, self.b):
            side.shutdown(socket.SHUT_RD)
        deadline = time.monotonic() + 1.0
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in threads):
            for side in (self.a, self.b):
                side.shutdown(socket.SHUT_WR)

    def _count_records(self) -> None:
        """TLS records each leg carried in the data phase, from its TCP byte counts: the
        proxy decrypted every record that arrived and encrypted every record it sent."""
        decrypted = encrypted = 0
        for side, plain_in, plain_out in ((self.a, self.plain[True], self.plain[False]),
                                          (self.b, self.plain[False], self.plain[True])):
            with contextlib.suppress(OSError):
                st = tcpstate.read(side.sock)
                decrypted += (st.bytes_received - side.base_received - plain_in) // RECORD_OVERHEAD
                encrypted += (st.handed - side.base_handed - plain_out) // RECORD_OVERHEAD
        self.proxy.stats.crypt(records_decrypted=max(0, decrypted),
                               records_encrypted=max(0, encrypted))

    # -- one direction ---------------------------------------------------------------
    def _pump(self, up: bool) -> None:
        src, dst = (self.a, self.b) if up else (self.b, self.a)
        try:
            outcome = self._move(src, dst, up)
        except StreamError:
            self.proxy.stats.add(stream_errors=1)
            outcome = "abort"
        except _ENDED:
            outcome = "reset"
        except OSError as exc:
            outcome = "reset" if exc.errno in (errno.ECONNRESET, errno.EPIPE) else "abort"
        if outcome == "eof" and not self.closing.is_set():
            dst.shutdown(socket.SHUT_WR)  # TCP sends the FIN after every byte handed over
            self.proxy.stats.add(half_closes=1)
        elif outcome in ("reset", "abort"):
            self.events.put((outcome, up))
        self.events.put(("done", up))

    def _move(self, src: Side, dst: Side, up: bool) -> str:
        stats = self.proxy.stats
        if self.mode == "splice":
            return self._splice(src, dst, up)
        rule = self.proxy.rule
        flt = Filter(rule) if rule is not None else None
        buf = bytearray(BUFFER)
        view = memoryview(buf)
        while True:
            n = src.read_into(buf)
            if n == 0:
                if flt is not None and flt.incomplete:
                    stats.moved(up, incomplete_bytes=flt.incomplete)
                return "eof"
            if flt is None:
                dst.write_all(view[:n])
                stats.moved(up, bytes=n)
                self.plain[up] += n
            else:
                before = (flt.tally.drop_msgs, flt.tally.drop_bytes, flt.tally.pass_msgs)
                try:
                    out = flt.feed(view[:n])
                except StreamError as exc:
                    dst.write_all(exc.passed)  # the messages before the bad one
                    raise
                if out:
                    dst.write_all(out)
                stats.moved(up, bytes=len(out), messages=flt.tally.pass_msgs - before[2],
                            dropped_messages=flt.tally.drop_msgs - before[0],
                            dropped_bytes=flt.tally.drop_bytes - before[1])
            if src.tls is not None:
                stats.crypt(decrypted_bytes=n, encrypted_bytes=n)

    def _splice(self, src: Side, dst: Side, up: bool) -> str:
        stats = self.proxy.stats
        rule = self.proxy.rule
        r, w = os.pipe()
        try:
            with contextlib.suppress(OSError):
                fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_SIZE)
            if rule is None:
                while True:
                    n = self._splice_in(src, w, PIPE_SIZE)
                    if n == 0:
                        return "eof"
                    _splice_out(r, dst.fd, n)
                    stats.moved(up, bytes=n)
                    self.plain[up] += n
                    if src.ktls:
                        stats.crypt(decrypted_bytes=n, encrypted_bytes=n)
            sink = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            try:
                while True:
                    head = _peek(src.sock, rule.header)
                    if len(head) < rule.header:
                        stats.moved(up, incomplete_bytes=len(head))
                        return "eof"
                    length = header_length(rule, head)
                    start = _peek(src.sock, min(length, rule.header + len(rule.prefix)))
                    drop = dropped(rule, start)
                    moved = 0
                    while moved < length:
                        n = self._splice_in(src, w, length - moved)
                        if n == 0:
                            stats.moved(up, incomplete_bytes=moved)
                            return "eof"
                        _splice_out(r, sink if drop else dst.fd, n)
                        moved += n
                    if drop:
                        stats.moved(up, dropped_messages=1, dropped_bytes=length)
                    else:
                        stats.moved(up, bytes=length, messages=1)
            finally:
                os.close(sink)
        finally:
            os.close(r)
            os.close(w)

    def _splice_in(self, src: Side, pipe_w: int, count: int) -> int:
        while True:
            try:
                return os.splice(src.fd, pipe_w, count, flags=SPLICE_F_MOVE)
            except OSError as exc:
                # kTLS: a record that is not application data (an alert, a post-handshake
                # message) cannot be spliced; read it, then go on or end.
                if not src.ktls or exc.errno not in (errno.EINVAL, errno.EIO):
                    raise
                if not _control_record(src.sock):
                    return 0

    # -- closes ----------------------------------------------------------------------
    def _forward_reset(self, up: bool, abort: bool) -> None:
        """src was reset (or its stream broke the policy): once the other side's send
        queue has drained, mark it (both, on abort) to close with an RST."""
        self.closing.set()
        src, dst = (self.a, self.b) if up else (self.b, self.a)
        if not abort:
            def drained() -> bool:
                try:
                    return tcpstate.outq(dst.sock) == 0
                except OSError:  # the socket is gone: nothing left to drain
                    return True

            if not poll(drained, DRAIN_TIMEOUT, interval=0.005):
                self.proxy.stats.add(drain_timeouts=1)
        self.proxy.stats.add(resets=1)
        for side in (self.a, self.b) if abort else (dst,):
            with contextlib.suppress(OSError):
                side.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                     struct.pack("ii", 1, 0))


def _splice_out(pipe_r: int, fd: int, count: int) -> None:
    while count:
        count -= os.splice(pipe_r, fd, count, flags=SPLICE_F_MOVE)


def _peek(sock: socket.socket, count: int) -> bytes:
    """The next count bytes without consuming them (fewer only at end of stream)."""
    return sock.recv(count, socket.MSG_PEEK | socket.MSG_WAITALL) if count else b""


def _control_record(sock: socket.socket) -> bool:
    """Read one non-data kTLS record; True to go on (e.g. a NewSessionTicket), False at
    the peer's close_notify or any other alert."""
    data, anc, _, _ = sock.recvmsg(1 << 14, socket.CMSG_SPACE(1))
    kind = next((c[2][0] for c in anc if c[0] == SOL_TLS and c[1] == TLS_GET_RECORD_TYPE),
                None)
    if kind == HANDSHAKE:
        return True
    if kind == ALERT or not data:
        return False
    raise OSError(errno.EPROTO, f"unexpected TLS record type {kind}")
