"""The process that sends or receives measured traffic inside a node.

Run as `python -m labkit.traffic.agent serve|send ...`. It uses only the standard
library (no pyroute2) so it starts fast even in an emulated VM, and it is bounded: a
sender stops at --duration seconds or --max-messages, a server at --timeout seconds.
Results are one JSON line on stdout; a server prints {"ready": true} once it listens.

TIPC services are addressed by name: type 18888, instance = the port given.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import sys
import time

AF_TIPC = socket.AF_TIPC
TIPC_ADDR_NAMESEQ = socket.TIPC_ADDR_NAMESEQ
TIPC_ADDR_NAME = socket.TIPC_ADDR_NAME
SERVICE_TYPE = 18888
END = b"\x00"  # RDM end-of-run message; data messages are always longer
SOCK_TYPES = {"stream": socket.SOCK_STREAM, "rdm": socket.SOCK_RDM,
              "seqpacket": socket.SOCK_SEQPACKET}


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _server_socket(args: argparse.Namespace) -> socket.socket:
    if args.proto == "tipc":
        s = socket.socket(AF_TIPC, SOCK_TYPES[args.socket])
        s.bind((TIPC_ADDR_NAMESEQ, SERVICE_TYPE, args.port, args.port))
    else:
        family = socket.AF_INET6 if ":" in args.address else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((args.address, args.port))
    if args.proto == "tcp" or args.socket != "rdm":
        s.listen(1)
    return s


def serve(args: argparse.Namespace) -> int:
    srv = _server_socket(args)
    srv.settimeout(args.timeout)
    _emit({"ready": True})
    total = messages = 0
    marker_seen = False
    first = last = None
    deadline = time.monotonic() + args.timeout
    error = None
    try:
        conn = srv if (args.proto == "tipc" and args.socket == "rdm") else srv.accept()[0]
        conn.settimeout(max(0.1, deadline - time.monotonic()))
        while time.monotonic() < deadline:
            data = conn.recv(1 << 17)
            if not data or (conn is srv and data == END):
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


def _connect(args: argparse.Namespace, deadline: float) -> socket.socket:
    """Connect, retrying while the service is not yet known (name table not synced)."""
    while True:
        if args.proto == "tipc":
            s = socket.socket(AF_TIPC, SOCK_TYPES[args.socket])
            addr: tuple = (TIPC_ADDR_NAME, SERVICE_TYPE, args.port, 0)
        else:
            family = socket.AF_INET6 if ":" in args.address else socket.AF_INET
            s = socket.socket(family, socket.SOCK_STREAM)
            addr = (args.address, args.port)
        if args.proto == "tipc" and args.socket == "rdm":
            return s  # connectionless: send() retries the first message instead
        try:
            s.connect(addr)
            return s
        except OSError as exc:
            s.close()
            if exc.errno not in (errno.EHOSTUNREACH, errno.ECONNREFUSED, errno.ENOENT) or \
                    time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def send(args: argparse.Namespace) -> int:
    payload = bytearray(os.urandom(16) * (args.size // 16 + 1))[: args.size]
    if args.marker:
        marker = bytes.fromhex(args.marker)
        payload[: len(marker)] = marker
    payload = bytes(payload)
    start = time.monotonic()
    s = _connect(args, start + args.connect_timeout)
    rdm = args.proto == "tipc" and args.socket == "rdm"
    addr = (TIPC_ADDR_NAME, SERVICE_TYPE, args.port, 0)
    total = messages = 0
    t0 = time.monotonic()
    try:
        while rdm:  # the first message waits until the service is in our name table
            try:
                s.sendto(payload, addr)
                total, messages = len(payload), 1
                break
            except OSError as exc:
                if exc.errno != errno.EHOSTUNREACH or time.monotonic() > start + \
                        args.connect_timeout:
                    raise
                time.sleep(0.05)
        t0 = time.monotonic()
        deadline = t0 + args.duration
        while messages < args.max_messages and time.monotonic() < deadline:
            if rdm:
                s.sendto(payload, addr)
            else:
                s.sendall(payload)
            total += len(payload)
            messages += 1
        seconds = time.monotonic() - t0
        if rdm:
            s.sendto(END, addr)
    finally:
        s.close()
    _emit({"role": "client", "bytes": total, "messages": messages, "seconds": seconds,
           "connect_seconds": t0 - start})
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="labkit.traffic.agent")
    ap.add_argument("role", choices=["serve", "send"])
    ap.add_argument("--proto", choices=["tipc", "tcp"], required=True)
    ap.add_argument("--socket", choices=list(SOCK_TYPES), default="stream")
    ap.add_argument("--address", default="", help="tcp: the server's address")
    ap.add_argument("--port", type=int, default=5201, help="tcp port or TIPC instance")
    ap.add_argument("--size", type=int, default=65536)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--max-messages", type=int, default=10_000_000)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--connect-timeout", type=float, default=15.0)
    ap.add_argument("--marker", default="", help="hex bytes put at the start of each message")
    args = ap.parse_args(argv)
    return serve(args) if args.role == "serve" else send(args)


if __name__ == "__main__":
    sys.exit(main())
