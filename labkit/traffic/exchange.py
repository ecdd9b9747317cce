"""One request/response over TCP or UDP between two nodes, from this process.

Both sockets are made inside their nodes' namespaces (netns.socket_in), so no helper
process and no tool such as ping is needed; a unique token proves the reply is ours.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import threading
from dataclasses import dataclass

from labkit.base import netns


@dataclass
class Exchange:
    ok: bool
    detail: str
    rtt_ms: float | None = None
    ran: bool = True  # False: the test itself could not be set up (nothing was judged)


def exchange(src_ns: str, dst_ns: str, address: str, port: int, proto: str,
             timeout: float = 3.0) -> Exchange:
    import time

    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    token = b"labkit-" + secrets.token_hex(8).encode()
    server = netns.socket_in(dst_ns, family, kind)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.settimeout(timeout)
    try:
        server.bind((address, port))
    except OSError as exc:
        server.close()
        return Exchange(False, f"cannot listen on {address} port {port} in the target: "
                               f"{exc.strerror}", ran=False)
    if kind == socket.SOCK_STREAM:
        server.listen(1)
    errors: list[str] = []

    def serve() -> None:
        try:
            if kind == socket.SOCK_STREAM:
                conn, _ = server.accept()
                with conn:
                    conn.settimeout(timeout)
                    conn.sendall(conn.recv(64)[::-1])
            else:
                data, peer = server.recvfrom(64)
                server.sendto(data[::-1], peer)
        except OSError as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client: socket.socket | None = None
    start = time.monotonic()
    try:
        client = netns.socket_in(src_ns, family, kind)
        client.settimeout(timeout)
        if kind == socket.SOCK_STREAM:
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
    finally:
        if client is not None:
            client.close()
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)  # wakes a pending accept()
        server.close()
        thread.join(timeout)
