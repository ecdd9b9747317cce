"""FIONREAD on a TCP socket that a sockmap verdict program redirected data to.

Upstream 929e30f93125 "bpf, sockmap: Fix FIONREAD for sockmap": bytes a stream verdict
redirects to a socket's ingress (BPF_F_INGRESS) wait in that socket's psock->ingress_msg,
which tcp_ioctl() did not count, so FIONREAD said 0 while recv() returned the bytes.

Run in the server node: two TCP connections from --client-netns to --server; their
server sides X and Y go into a sockmap whose verdict program sends everything arriving on
X to Y's ingress. 100 bytes are sent on X's connection. One line per case, key=value:

    case=plain fionread=100 recv=100 intact=yes              (no sockmap: the control)
    case=redirect fionread_x=0 fionread_y=N recv_x=EAGAIN recv_y=100 intact=yes
"""

from __future__ import annotations

import argparse
import fcntl
import os
import select
import socket
import struct
import sys

import reprolib as R

FIONREAD = 0x541B
PAYLOAD = bytes(range(100))


def fionread(sock: socket.socket) -> int:
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), FIONREAD, b"\0" * 4))[0]


def readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def plain(server: str, port: int, client_ns: str | None) -> None:
    client, x = R.tcp_pair(server, port, client_ns)
    try:
        client.sendall(PAYLOAD)
        R.wait_until(lambda: fionread(x) >= len(PAYLOAD), 10, "the 100 bytes on X")
        before = fionread(x)
        data = x.recv(4096)
        print(f"case=plain fionread={before} recv={len(data)} "
              f"intact={'yes' if data == PAYLOAD else 'no'}", flush=True)
    finally:
        client.close()
        x.close()


def redirect(server: str, port: int, client_ns: str | None) -> None:
    c1, x = R.tcp_pair(server, port, client_ns)
    c2, y = R.tcp_pair(server, port + 1, client_ns)
    fds: list[int] = []
    try:
        smap = R.sockmap()
        fds.append(smap)
        prog = R.load_sk_skb(R.redirect_program(smap, 1, R.BPF_F_INGRESS))
        fds.append(prog)
        R.attach(smap, prog, R.BPF_SK_SKB_STREAM_VERDICT)
        R.sockmap_set(smap, 0, x)
        R.sockmap_set(smap, 1, y)
        c1.sendall(PAYLOAD)
        R.wait_until(lambda: readable(y), 10, "Y to become readable")
        fx, fy = fionread(x), fionread(y)
        x.setblocking(False)
        try:
            recv_x = str(len(x.recv(4096)))
        except BlockingIOError:
            recv_x = "EAGAIN"
        data = b""
        while len(data) < len(PAYLOAD):
            chunk = y.recv(4096)
            if not chunk:
                break
            data += chunk
        print(f"case=redirect fionread_x={fx} fionread_y={fy} recv_x={recv_x} "
              f"recv_y={len(data)} intact={'yes' if data == PAYLOAD else 'no'}", flush=True)
    finally:
        for sock in (c1, x, c2, y):
            sock.close()
        for fd in fds:
            os.close(fd)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", required=True, help="this node's address to listen on")
    ap.add_argument("--client-netns", help="namespace the clients connect from")
    ap.add_argument("--port", type=int, default=7301)
    args = ap.parse_args()
    print(f"kernel={os.uname().release}", flush=True)
    try:
        plain(args.server, args.port, args.client_netns)
        redirect(args.server, args.port + 1, args.client_netns)
    except (OSError, TimeoutError) as exc:
        name = R.errname(exc) if isinstance(exc, OSError) and exc.errno else "timeout"
        print(f"error={name} {exc}", file=sys.stderr, flush=True)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
