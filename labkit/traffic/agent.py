"""The process that sends or receives measured traffic inside a node.

Run as `python -m labkit.traffic.agent serve|send --proto P ...`. TCP is built in; any
other protocol is an endpoint module a feature provides (`--endpoint MODULE`, which
`labkit.traffic.meter` looks up in the feature registry). The agent uses only the
standard library so it starts fast even in an emulated VM, and it is bounded: a sender
stops at --duration seconds or --max-messages, a server at --timeout seconds. Results
are one JSON line on stdout; a server prints {"ready": true} once it listens.

An endpoint module (stdlib only, like the agent) provides what the Tcp class below does:
    SOCKETS           socket kinds by name, the first the default
    CONNECTIONLESS    the kinds that send datagrams (sendto) instead of connecting
    NOT_YET           errnos meaning "the peer is not known here yet": retry until a deadline
    check(kind, size) UsageError for options the protocol cannot carry (run before starting)
    listen(kind, port, address) -> bound (and listening) server socket
    sender(kind, port, address) -> (socket, destination): destination None = connected
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import os
import socket
import sys
import time
from types import ModuleType
from typing import Any

from labkit.base.wait import wait_until
from labkit.errors import LabkitError

END = b"\x00"  # end-of-run datagram; data messages are always longer


class Tcp:
    """The built-in endpoint: one TCP stream to --address --port."""

    SOCKETS = {"stream": socket.SOCK_STREAM}
    CONNECTIONLESS: frozenset[str] = frozenset()
    NOT_YET = frozenset({errno.ECONNREFUSED})  # the server is not listening yet

    @staticmethod
    def check(kind: str, size: int) -> None:
        """Nothing to check: a stream carries any size."""

    @staticmethod
    def listen(kind: str, port: int, address: str) -> socket.socket:
        s = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((address, port))
        s.listen(1)
        return s

    @staticmethod
    def sender(kind: str, port: int, address: str) -> tuple[socket.socket, Any]:
        s = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
        try:
            s.connect((address, port))
        except OSError:
            s.close()
            raise
        return s, None


def endpoint(name: str) -> Any:
    """The endpoint implementation: built-in TCP, or a feature's module by name."""
    return Tcp if not name else importlib.import_module(name)


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def serve(ep: ModuleType | type, args: argparse.Namespace) -> int:
    srv = ep.listen(args.socket, args.port, args.address)
    srv.settimeout(args.timeout)
    _emit({"ready": True})
    total = messages = 0
    marker_seen = False
    first = last = None
    deadline = time.monotonic() + args.timeout
    error = None
    datagrams = args.socket in ep.CONNECTIONLESS
    try:
        conn = srv if datagrams else srv.accept()[0]
        conn.settimeout(max(0.1, deadline - time.monotonic()))
        while time.monotonic() < deadline:
            data = conn.recv(1 << 17)
            if not data or (datagrams and data == END):
                break
            now = time.monotonic()
            first = first or now
            last = now
            total += len(data)
            messages += 1
            if args.marker and not marker_seen and bytes.fromhex(args.marker) in data:
                marker_seen = True
    except TimeoutError:
        pass
    except OSError as exc:  # e.g. a reset at the end of the run: report what arrived
        error = f"{type(exc).__name__}: {exc}"
    seconds = (last - first) if first and last and last > first else 0.0
    _emit({"role": "server", "bytes": total, "messages": messages, "seconds": seconds,
           "marker_seen": marker_seen, "error": error})
    return 0


def _until_known(ep: Any, action: Any, timeout: float, what: str) -> Any:
    """Run action() until it stops failing with "not known here yet", bounded."""

    def attempt() -> Any:
        try:
            return action() or True
        except OSError as exc:
            if exc.errno in ep.NOT_YET:
                return None
            raise

    return wait_until(attempt, timeout, what)


def send(ep: ModuleType | type, args: argparse.Namespace) -> int:
    payload = bytearray(os.urandom(16) * (args.size // 16 + 1))[: args.size]
    if args.marker:
        marker = bytes.fromhex(args.marker)
        payload[: len(marker)] = marker
    payload = bytes(payload)
    start = time.monotonic()
    s, dest = _until_known(ep, lambda: ep.sender(args.socket, args.port, args.address),
                           args.connect_timeout, f"the {args.proto} server to accept")
    total = messages = 0
    try:
        if dest is not None:  # datagrams: the first one waits until the peer is known here
            _until_known(ep, lambda: s.sendto(payload, dest),
                         max(0.0, start + args.connect_timeout - time.monotonic()),
                         f"the {args.proto} server to be known")
            total, messages = len(payload), 1
        t0 = time.monotonic()
        deadline = t0 + args.duration
        while messages < args.max_messages and time.monotonic() < deadline:
            if dest is not None:
                s.sendto(payload, dest)
            else:
                s.sendall(payload)
            total += len(payload)
            messages += 1
        seconds = time.monotonic() - t0
        if dest is not None:
            s.sendto(END, dest)
    finally:
        s.close()
    _emit({"role": "client", "bytes": total, "messages": messages, "seconds": seconds,
           "connect_seconds": t0 - start})
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="labkit.traffic.agent")
    ap.add_argument("role", choices=["serve", "send"])
    ap.add_argument("--proto", required=True, help="tcp, or the protocol of --endpoint")
    ap.add_argument("--endpoint", default="", help="module implementing --proto (not tcp)")
    ap.add_argument("--socket", default="stream", help="socket kind the endpoint offers")
    ap.add_argument("--address", default="", help="tcp: the server's address")
    ap.add_argument("--port", type=int, default=5201, help="tcp port or service instance")
    ap.add_argument("--size", type=int, default=65536)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--max-messages", type=int, default=10_000_000)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--connect-timeout", type=float, default=15.0)
    ap.add_argument("--marker", default="", help="hex bytes put at the start of each message")
    args = ap.parse_args(argv)
    ep = endpoint(args.endpoint)
    try:
        ep.check(args.socket, args.size)
        return serve(ep, args) if args.role == "serve" else send(ep, args)
    except LabkitError as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
