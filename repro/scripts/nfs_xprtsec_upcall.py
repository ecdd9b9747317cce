"""Does an NFS mount with xprtsec=tls reach a TLS handshake agent through the kernel?

Upstream 3b3009ea8abb "net/handshake: Create a NETLINK service for handling handshake
requests" (v6.5) and the RPC-with-TLS client that uses it: the kernel asks a user-space
agent (tlshd) to do the TLS handshake on the NFS client's socket. Debian 12's 6.1 has
neither the `handshake` genl family nor the xprtsec= mount option.

Run in the client node after `modprobe nfsv4`. A stand-in server in --server-netns
answers the RFC 9289 AUTH_TLS probe (an RPC NULL call) with "STARTTLS"; this process
listens as the agent (tlshd multicast group), mounts with xprtsec=tls, and on READY takes
the request (ACCEPT) and refuses it (DONE with EACCES), so the mount fails at once and
no TLS is ever spoken. No key or certificate exists. One line per event, key=value:

    family=present groups=none,tlshd        (or family=absent)
    server-call prog=100003 vers=4 proc=0 flavor=7
    ready=1 accept message_type=1 auth_mode=1 peer=ADDR:2049 done=EACCES
    mount=EACCES
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import os
import select
import socket
import struct
import sys
import threading
import time

import reprolib as R

RPC_CALL, RPC_REPLY, MSG_ACCEPTED, AUTH_NONE, AUTH_TLS, SUCCESS = 0, 1, 0, 0, 7, 0
LAST_FRAGMENT = 0x80000000
_libc = ctypes.CDLL(None, use_errno=True)


def stand_in_server(listener: socket.socket, calls: list[str], stop: threading.Event) -> None:
    """Answer each RPC call with an accepted, empty reply whose verifier says STARTTLS."""
    listener.settimeout(0.5)
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        with conn:
            conn.settimeout(10)
            try:
                head = conn.recv(4, socket.MSG_WAITALL)
                if len(head) < 4:
                    continue
                size = struct.unpack("!I", head)[0] & ~LAST_FRAGMENT
                call = conn.recv(size, socket.MSG_WAITALL)
                xid, kind, _rpcvers, prog, vers, proc, flavor = struct.unpack_from("!7I", call)
                if kind != RPC_CALL:
                    continue
                calls.append(f"server-call prog={prog} vers={vers} proc={proc} "
                             f"flavor={flavor}")
                reply = struct.pack("!IIIII8sI", xid, RPC_REPLY, MSG_ACCEPTED, AUTH_NONE, 8,
                                    b"STARTTLS", SUCCESS)
                conn.sendall(struct.pack("!I", LAST_FRAGMENT | len(reply)) + reply)
                conn.recv(4096)  # the client may close, or reconnect for TLS
            except (OSError, struct.error):
                continue


def mount(source: str, target: str, options: str, result: list[str]) -> None:
    rc = _libc.mount(source.encode(), target.encode(), b"nfs4", 0, options.encode())
    err = ctypes.get_errno()
    result.append("ok" if rc == 0 else errno.errorcode.get(err, str(err)))
    if rc == 0:
        _libc.umount2(target.encode(), 2)  # MNT_DETACH


def agent(deadline: float, mounted: list[str], listening: threading.Event) -> None:
    """Be the handshake agent until the mount returns: READY -> ACCEPT -> DONE(EACCES)."""
    from labkit.features.handshake import genl

    try:
        nl = genl.HandshakeNetlink()
    except genl.NoFamily:
        print("family=absent", flush=True)
        listening.set()
        return
    with nl:
        print(f"family=present groups={','.join(sorted(nl.groups))}", flush=True)
        sock = nl.listen()
        listening.set()
        readies = 0
        while not mounted and time.monotonic() < deadline:
            if not select.select([sock], [], [], 0.2)[0]:
                continue
            readies += nl.readies()
            while (req := nl.accept()) is not None:
                try:
                    with socket.socket(fileno=os.dup(req.sockfd)) as held:
                        peer = held.getpeername()
                    nl.done(req.sockfd, errno.EACCES)
                    print(f"ready={readies} accept message_type={req.message_type} "
                          f"auth_mode={req.auth_mode} peer={peer[0]}:{peer[1]} done=EACCES",
                          flush=True)
                finally:
                    os.close(req.sockfd)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", required=True, help="the server node's address")
    ap.add_argument("--server-netns", required=True, help="the server node's namespace")
    ap.add_argument("--client", required=True, help="this node's address")
    ap.add_argument("--timeout", type=float, default=90)
    args = ap.parse_args()
    print(f"kernel={os.uname().release}", flush=True)
    with R.netns(args.server_netns):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.server, 2049))
    listener.listen(4)
    calls: list[str] = []
    stop = threading.Event()
    server = threading.Thread(target=stand_in_server, args=(listener, calls, stop),
                              daemon=True)
    server.start()
    target = f"/tmp/repro-nfs-{os.getpid()}"
    os.makedirs(target, exist_ok=True)
    options = (f"vers=4.2,addr={args.server},clientaddr={args.client},soft,timeo=20,"
               "retrans=1,xprtsec=tls")
    mounted: list[str] = []
    deadline = time.monotonic() + args.timeout
    try:
        listening = threading.Event()
        worker = threading.Thread(target=agent, args=(deadline, mounted, listening),
                                  daemon=True)
        worker.start()
        if not listening.wait(30):  # the agent must listen before the kernel asks
            print("error=the agent did not start listening within 30 s", file=sys.stderr)
            return 3
        mounter = threading.Thread(target=mount, args=(f"{args.server}:/", target, options,
                                                       mounted), daemon=True)
        mounter.start()
        mounter.join(max(0.1, deadline - time.monotonic()))
        print(f"mount={mounted[0] if mounted else 'blocked'}", flush=True)
        worker.join(5)
    finally:
        stop.set()
        server.join(2)
        listener.close()
        for line in calls:
            print(line, flush=True)
        try:
            os.rmdir(target)
        except OSError:
            pass
    return 0 if mounted else 3


if __name__ == "__main__":
    sys.exit(main())
