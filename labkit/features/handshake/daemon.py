"""labkit's handshake daemon: one per lab node whose kernel consumers need TLS.

    python -m labkit.features.handshake.daemon --config /run/labkit/labs/LAB.handshake-NODE

Started inside the node (the handshake family is per network namespace) by the feature's
setup. It joins the "tlshd" group, and on READY takes requests with ACCEPT while a slot of
its bounded pool is free; each runs in a worker (handshaker.serve) that ends in DONE.
Requests it has no slot for stay queued in the kernel, which caps them per namespace
(uapi.pending_cap) and refuses more with EAGAIN: the DoS bound the review thread asked for.

SIGUSR1 stalls it (no more ACCEPTs: requests pile up in the kernel), SIGUSR2 resumes it,
SIGTERM stops it. Everything is imported before it joins the group, because under
emulation a first import can take longer than the kernel's handshake timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from labkit.features.handshake import engines
from labkit.features.handshake.events import EventLog, Status, errno_name
from labkit.features.handshake.genl import HandshakeNetlink, NoFamily
from labkit.features.handshake.handshaker import NodeConfig, Outcome, serve
from labkit.features.handshake.messages import Accepted
from labkit.features.handshake.uapi import AUTH_MODES, MSG_TYPES

TICK = 1.0  # s: how often the loop looks for queued requests without a READY


class Daemon:
    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.events = EventLog(cfg.events, cfg.node)
        self.status = Status(cfg.status, lab=cfg.lab, node=cfg.node, pool=cfg.pool,
                             keylog=bool(cfg.keylog))
        self.slots = threading.Semaphore(cfg.pool)
        self.pool = ThreadPoolExecutor(max_workers=cfg.pool, thread_name_prefix="handshake")
        self.stalled = False
        self.stopping = False
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.nl: HandshakeNetlink | None = None
        self._keylog_lock = threading.Lock()

    # -- signals (async-signal-safe: flags and a byte down the pipe) -----------------------
    def on_signal(self, signum: int, frame: object) -> None:
        if signum == signal.SIGUSR1:
            self.stalled = True
        elif signum == signal.SIGUSR2:
            self.stalled = False
        else:
            self.stopping = True
        with contextlib.suppress(OSError):
            os.write(self.wake_w, b"s")

    def wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self.wake_w, b"w")

    # -- the loop ----------------------------------------------------------------------
    def run(self) -> int:
        try:
            self.nl = HandshakeNetlink()
            mcast = self.nl.listen()
        except NoFamily as exc:
            self.status.update(state="failed", error=exc.strerror)
            print(f"handshake daemon: {exc.strerror}", file=sys.stderr)
            return 2
        self.status.update(state="serving", family=self.nl.family)
        self.events.emit("listening", pool=self.cfg.pool, family=self.nl.family)
        was_stalled = False
        next_tick = time.monotonic()
        poller = select.poll()
        poller.register(mcast.fileno(), select.POLLIN)
        poller.register(self.wake_r, select.POLLIN)
        while not self.stopping:
            poller.poll(max(0.0, next_tick - time.monotonic()) * 1000)
            with contextlib.suppress(BlockingIOError):
                os.read(self.wake_r, 4096)
            readies = self.nl.readies()
            if readies:
                self.status.add("ready", readies)
                self.events.emit("ready", count=readies, stalled=self.stalled)
            if self.stalled != was_stalled:
                was_stalled = self.stalled
                self.status.update(stalled=self.stalled)
                self.events.emit("stalled" if self.stalled else "resumed")
            if not self.stalled:
                self.take_requests()
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + TICK
        self.events.emit("stopping", in_flight=self.status.data["in_flight"])
        self.pool.shutdown(wait=True, cancel_futures=False)
        self.status.update(state="stopped")
        self.nl.close()
        return 0

    def take_requests(self) -> None:
        """ACCEPT while a slot is free and the kernel has requests queued."""
        assert self.nl is not None
        while self.slots.acquire(blocking=False):
            try:
                acc = self.nl.accept()
            except OSError as exc:
                self.slots.release()
                self.events.emit("accept_error", errno=errno_name(exc.errno or 0))
                return
            if acc is None:
                self.slots.release()
                return
            self.status.add("accepted")
            self.status.add("in_flight")
            self.events.emit("accept", **self.describe(acc))
            self.pool.submit(self.work, acc)

    @staticmethod
    def describe(acc: Accepted) -> dict[str, Any]:
        return {"fd": acc.sockfd, "peer": _peer(acc.sockfd),
                "role": "server" if MSG_TYPES.get(acc.message_type) == "serverhello"
                else "client", **acc.describe(),
                "auth": AUTH_MODES.get(acc.auth_mode, str(acc.auth_mode))}

    def work(self, acc: Accepted) -> None:
        assert self.nl is not None
        try:
            outcome = serve(acc, self.cfg, self.nl.done)
            self.record(acc, outcome)
        finally:
            self.status.add("in_flight", -1)
            self.slots.release()
            self.wake()

    def record(self, acc: Accepted, outcome: Outcome) -> None:
        ms = outcome.seconds * 1000
        result = outcome.result
        if outcome.status == 0 and result is not None:
            self.status.add("done")
            self.status.latency(ms)
            if result.keylog and self.cfg.keylog:
                self.append_keylog(result.keylog)
        else:
            self.status.failed(outcome.status)
        self.events.emit("done", fd=acc.sockfd, status=outcome.status,
                         errno=errno_name(outcome.status), reason=outcome.reason,
                         ms=round(ms, 3), cipher=result.cipher if result else "",
                         peer_identity=result.peer if result else "",
                         remote_auth=result.remote_auth if result else [],
                         tx_seq=result.session.tx_seq if result else None,
                         rx_seq=result.session.rx_seq if result else None)

    def append_keylog(self, lines: list[str]) -> None:
        """NSS key log lines, only when the lab asked for a key log (file 0600)."""
        with self._keylog_lock:
            fd = os.open(self.cfg.keylog, os.O_WRONLY | os.O_CREAT | os.O_APPEND |
                         os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, ("\n".join(lines) + "\n").encode())
            finally:
                os.close(fd)


def _peer(fd: int) -> str:
    import socket

    try:
        s = socket.socket(fileno=fd)
    except OSError:
        return ""
    try:
        local, remote = s.getsockname(), s.getpeername()
        return f"{local[0]}:{local[1]} -> {remote[0]}:{remote[1]}"
    except OSError:
        return ""
    finally:
        s.detach()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m labkit.features.handshake.daemon")
    ap.add_argument("--config", required=True, help="the node's daemon configuration (JSON)")
    args = ap.parse_args(argv)
    with open(args.config) as fh:
        cfg = NodeConfig.from_json(json.load(fh))
    engines.load_tlslite()  # seconds under emulation: before READY can arrive, not after
    daemon = Daemon(cfg)
    try:
        warm = engines.warm_up(cfg.cert, cfg.key, cfg.ca)
    except RuntimeError as exc:
        daemon.status.update(state="failed", error=str(exc))
        print(f"handshake daemon: {exc}", file=sys.stderr)
        return 1
    daemon.status.update(warmup_ms=round(warm * 1000, 1))
    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, daemon.on_signal)
    return daemon.run()


if __name__ == "__main__":
    sys.exit(main())
