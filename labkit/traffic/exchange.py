"""One request/response over TCP or UDP between two nodes: the reach check.

When both nodes are in this process's kernel, both sockets are made inside their nodes'
namespaces (netns.socket_in): no helper process, no tool such as ping. When either node
is in a VM (or the lab spans kernels), the same two halves run as small processes in the
nodes (`python -m labkit.traffic.exchange serve|ask`, standard library only). A unique
token proves the reply is ours.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labkit.lab.lab import Node

START_TIMEOUT = 120.0  # a Python process in an emulated VM may take this long to start


@dataclass
class Exchange:
    ok: bool
    detail: str
    rtt_ms: float | None = None
    ran: bool = True  # False: the test itself could not be set up (nothing was judged)


def _kinds(address: str, proto: str) -> tuple[int, int]:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return family, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM


def listen(server: socket.socket, address: str, port: int, proto: str,
           timeout: float) -> str | None:
    """Bind the server half; an error text if it cannot (nothing was judged then)."""
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.settimeout(timeout)
    try:
        server.bind((address, port))
    except OSError as exc:
        return f"cannot listen on {address} port {port} in the target: {exc.strerror}"
    if proto == "tcp":
        server.listen(1)
    return None


def answer(server: socket.socket, proto: str, timeout: float) -> None:
    """Send the first request back reversed."""
    with contextlib.suppress(OSError):
        if proto == "tcp":
            conn, _ = server.accept()
            with conn:
                conn.settimeout(timeout)
                conn.sendall(conn.recv(64)[::-1])
        else:
            data, peer = server.recvfrom(64)
            server.sendto(data[::-1], peer)


def ask(client: socket.socket, address: str, port: int, proto: str, token: bytes,
        timeout: float) -> Exchange:
    start = time.monotonic()
    try:
        client.settimeout(timeout)
        if proto == "tcp":
            client.connect((address, port))
            client.sendall(token)
            reply = client.recv(64)
        else:
            reply = b""
            deadline = start + timeout
            # UDP may lose the first datagram while neighbours resolve: retry, bounded.
            client.settimeout(0.3)
            while time.monotonic() < deadline and not reply:
                client.sendto(token, (address, port))
                try:
                    reply = client.recv(64)
                except TimeoutError:
                    continue
        rtt = (time.monotonic() - start) * 1000
        if reply == token[::-1]:
            return Exchange(True, f"{proto} reply from {address} port {port}", round(rtt, 3))
        return Exchange(False, f"no {proto} reply from {address} port {port} within "
                               f"{timeout:g} s")
    except OSError as exc:
        return Exchange(False, f"{proto} to {address} port {port} failed: "
                               f"{exc.strerror or exc}")


def exchange(src_ns: str, dst_ns: str, address: str, port: int, proto: str,
             timeout: float = 3.0) -> Exchange:
    """Both halves in this process, in two namespaces of this kernel."""
    from labkit.base import netns

    family, kind = _kinds(address, proto)
    server = netns.socket_in(dst_ns, family, kind)
    problem = listen(server, address, port, proto, timeout)
    if problem:
        server.close()
        return Exchange(False, problem, ran=False)
    thread = threading.Thread(target=answer, args=(server, proto, timeout), daemon=True)
    thread.start()
    client = netns.socket_in(src_ns, family, kind)
    try:
        return ask(client, address, port, proto, b"labkit-" + os.urandom(8).hex().encode(),
                   timeout)
    finally:
        client.close()
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)  # wakes a pending accept()
        server.close()
        thread.join(timeout)


def exchange_nodes(src: Node, dst: Node, address: str, port: int, proto: str,
                   timeout: float = 3.0) -> Exchange:
    """The reach check between any two nodes of a lab, wherever each runs."""
    if src.host is dst.host:  # one kernel: both ends in one process next to it
        return Exchange(**src.host.call(src.lab, "labkit.lab.ops:exchange", src.name,
                                        dst.name, address, port, proto, timeout))
    from labkit.base.helper import HelperFailed, start

    args = [address, str(port), proto]
    # The answering side waits for the asking process to start too (seconds under TCG).
    try:
        server = start(dst, [sys.executable, "-m", "labkit.traffic.exchange", "serve", *args,
                             "--timeout", str(START_TIMEOUT + timeout)],
                       what=f"the answering side on {dst.name}", ready=_is_ready,
                       timeout=START_TIMEOUT)
    except HelperFailed as exc:
        said = _said_error(exc.said)
        detail = f"the answering side on {dst.name} failed: {said}" if said else \
            exc.message.rstrip(".")
        return Exchange(False, detail, ran=False)
    with server:
        token = "labkit-" + os.urandom(8).hex()
        res = src.run([sys.executable, "-m", "labkit.traffic.exchange", "ask", *args,
                       "--timeout", str(timeout), "--token", token],
                      timeout=START_TIMEOUT + timeout)
        try:
            return Exchange(**json.loads(res.stdout.strip().splitlines()[-1]))
        except (ValueError, IndexError, TypeError):
            return Exchange(False, f"the asking side on {src.name} failed: "
                                   f"{(res.stderr.strip().splitlines() or ['?'])[-1]}",
                            ran=False)


def _is_ready(line: str) -> bool:
    """The serving half's first line: {"ready": true} once it listens."""
    try:
        return json.loads(line).get("ready") is True  # type: ignore[no-any-return]
    except (ValueError, AttributeError):
        return False


def _said_error(said: str) -> str:
    """The error the serving half reported on its ready line ({"ready": false, ...})."""
    for line in said.splitlines():
        try:
            err = json.loads(line).get("error")
        except (ValueError, AttributeError):
            continue
        if err:
            return str(err)
    return ""


def main(argv: list[str] | None = None) -> int:
    """The halves as processes inside a node (started by exchange_nodes)."""
    ap = argparse.ArgumentParser(prog="python -m labkit.traffic.exchange")
    ap.add_argument("role", choices=["serve", "ask"])
    ap.add_argument("address")
    ap.add_argument("port", type=int)
    ap.add_argument("proto", choices=["tcp", "udp"])
    ap.add_argument("--timeout", type=float, default=3.0)
    ap.add_argument("--token", default="")
    args = ap.parse_args(argv)
    family, kind = _kinds(args.address, args.proto)
    with socket.socket(family, kind) as sock:
        if args.role == "serve":
            problem = listen(sock, args.address, args.port, args.proto, args.timeout)
            print(json.dumps({"ready": problem is None, "error": problem}), flush=True)
            if problem is None:
                answer(sock, args.proto, args.timeout)
            return 0
        result = ask(sock, args.address, args.port, args.proto, args.token.encode(),
                     args.timeout)
    print(json.dumps(asdict(result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
