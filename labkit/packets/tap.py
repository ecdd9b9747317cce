"""A capture that records in a thread while the caller makes traffic: what every feature's
`verify` judges (TIPC bearers and lo, the handshake consumer's link, the offload NIC and
its peer, the kproxy legs).

One copy, because the pitfalls are the same everywhere: a burst of GSO frames (16-64 KiB
each) overflows the default 208 KiB socket buffer while the thread waits for the GIL
(seen: the last 140 KiB of a 512 KiB send, and a verdict that then missed its marker), so
the buffer is forced large, queued frames are drained at once, frames are read whole
(a GSO frame is up to 64 KiB, more with BIG TCP), and the kernel's drop count is read at
the end so that a verdict can tell a hole in the capture from an absence on the wire.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from types import TracebackType

from labkit.packets.capture import PACKET_OUTGOING, open_socket

FRAME_MAX = 1 << 18
BUFFER = 64 << 20  # beyond net.core.rmem_max: root may (SO_RCVBUFFORCE)
SO_RCVBUFFORCE = 33  # include/uapi/asm-generic/socket.h
SOL_PACKET, PACKET_STATISTICS = 263, 6  # include/linux/socket.h, uapi/linux/if_packet.h
DRAIN_TIMEOUT = 300.0  # s: a safety net, not a wait: the join returns when the drain ends


class Tap:
    """Frames of one interface of a namespace, recorded from construction until finish().

    Bounded by max_frames and max_bytes (a flood cannot fill memory). `outgoing[i]` says
    whether frames[i] left the interface; `dropped` (after finish) how many the kernel
    could not queue; `truncated` how many were longer than FRAME_MAX.
    """

    def __init__(self, ns: str | None, iface: str, *, max_frames: int = 100_000,
                 max_bytes: int = 256 << 20, label: str = "") -> None:
        self.iface, self.label = iface, label or iface
        self.sock = open_socket(ns, iface)
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, BUFFER)
        self.frames: list[bytes] = []
        self.outgoing: list[bool] = []
        self.size = self.dropped = self.truncated = 0
        self.last = time.monotonic()  # when the latest frame arrived
        self._limits = (max_frames, max_bytes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _full(self) -> bool:
        return len(self.frames) >= self._limits[0] or self.size >= self._limits[1]

    def _drain(self) -> None:
        while not self._full():
            try:
                data, _, flags, addr = self.sock.recvmsg(FRAME_MAX, 0,
                                                         socket.MSG_DONTWAIT | socket.MSG_TRUNC)
            except (BlockingIOError, InterruptedError):
                return
            if flags & socket.MSG_TRUNC:
                self.truncated += 1
            self.frames.append(data)
            self.outgoing.append(addr[2] == PACKET_OUTGOING)
            self.size += len(data)
            self.last = time.monotonic()

    def _loop(self) -> None:
        while not self._stop.is_set() and not self._full():
            ready, _, _ = select.select([self.sock], [], [], 0.05)
            if ready:
                self._drain()
        with contextlib.suppress(OSError):
            self._drain()  # what arrived before the stop

    def count(self, marker: bytes) -> int:
        """Frames so far that hold the marker (safe while recording)."""
        return sum(marker in f for f in list(self.frames))

    def wait_quiet(self, quiet: float = 0.5, timeout: float = 5.0) -> bool:
        """Until no frame came for `quiet` seconds (the last ACKs and FINs are in), at most
        `timeout`; True if it went quiet."""
        from labkit.base.wait import poll

        return bool(poll(lambda: time.monotonic() - self.last >= quiet, timeout,
                         interval=0.05))

    def finish(self) -> list[bytes]:
        """Stop recording; the frames. Safe to call twice."""
        if self.sock.fileno() < 0:
            return self.frames
        self._stop.set()
        # The thread drains what is queued before it stops: thousands of frames may be
        # (1 MiB each way through a proxy), which a Python thread in a loaded TCG guest
        # read for over 10 s once; closing the socket under it lost the capture's tail.
        # The drain is bounded by max_frames/max_bytes, so this join is too.
        self._thread.join(DRAIN_TIMEOUT)
        with contextlib.suppress(OSError):  # struct tpacket_stats {packets, drops}
            self.dropped = struct.unpack("II", self.sock.getsockopt(
                SOL_PACKET, PACKET_STATISTICS, 8))[1]
        self.sock.close()
        return self.frames

    def __enter__(self) -> Tap:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.finish()
