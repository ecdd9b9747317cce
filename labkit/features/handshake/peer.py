"""`labkit tls serve|connect`: a TCP server or client in a lab node whose socket gets its
TLS 1.3 handshake from the daemon's own code (engines + kTLS install, handshaker), so a
peer nobody here wrote (openssl s_client / s_server) can sit on the other side.

    python -m labkit.features.handshake.peer serve --lab L --node N --port 4433 [--echo]
    python -m labkit.features.handshake.peer connect --lab L --node N --to 198.18.4.1 \
        --port 4433 [--send TEXT] [--expect N]

Runs inside the node (`labkit tls` starts it there). Certificates are the lab's (the
node's certificate and the lab CA); a PSK comes from a 0600 file ("identity:hex key"),
never from the command line. After the handshake it reports, on stderr as one JSON line,
the negotiated suite and whether the kernel's tls ULP is on the socket; then application
data flows through kTLS only: records the peer sends that are not application data
(TLS 1.3 NewSessionTickets) are read through TLS_GET_RECORD_TYPE and skipped.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import select
import socket
import sys
import time

from labkit.base import files
from labkit.features.handshake import engines, paths
from labkit.features.handshake.handshaker import handshake_on
from labkit.features.handshake.records import HandshakeFailed
from labkit.ktls import sockopt
from labkit.ktls.uapi import CLOSE_NOTIFY, CT_ALERT, CT_APPLICATION_DATA


def read_psk(path: str) -> engines.Psk:
    st = os.stat(path)
    if st.st_mode & 0o077:
        raise SystemExit(f"PSK file {path} is readable by others (mode "
                         f"{st.st_mode & 0o777:o}); make it 0600.")
    identity, _, key = files.read_bounded(path, files.KEY).strip().rpartition(":")
    return engines.Psk(0, identity, bytes.fromhex(key), engines.psk_hash(identity))


def request(args: argparse.Namespace, server: bool) -> engines.Request:
    lab, node = args.lab, args.node
    cert, key, ca = paths.cert(lab, node), paths.key(lab, node), paths.ca(lab)
    have = os.path.exists(cert)
    req = engines.Request(server=server, auth=args.auth,
                          deadline=time.monotonic() + args.handshake_timeout,
                          peername=getattr(args, "peername", "") or "",
                          cert_file=cert if have and (server or args.auth == "x509") else "",
                          key_file=key if have and (server or args.auth == "x509") else "",
                          ca_file=ca if os.path.exists(ca) and not args.no_verify else "")
    if args.auth == "psk":
        if not args.psk_file:
            raise SystemExit("--auth psk needs --psk-file FILE (identity:hexkey, mode 0600)")
        psk = read_psk(args.psk_file)
        if server:
            req.find_psk = lambda identity: psk if identity == psk.identity else None
        else:
            req.psks = [psk]
    return req


def report(sock: socket.socket, result: engines.Result, peer: str) -> None:
    sys.stderr.write(json.dumps({"event": "ktls", "ulp": sockopt.ulp(sock),
                                 "cipher": result.cipher, "version": result.version,
                                 "peer": peer, "peer_identity": result.peer,
                                 "tx_seq": result.session.tx_seq,
                                 "rx_seq": result.session.rx_seq}) + "\n")
    sys.stderr.flush()


def converse(sock: socket.socket, args: argparse.Namespace) -> int:
    """Move application data: echo it (server --echo), send --send and read --expect
    bytes, or relay stdin/stdout; all through kTLS. Bounded by --timeout."""
    deadline = time.monotonic() + args.timeout
    received = 0
    if args.send is not None:
        sockopt.send_record(sock, args.send.encode())
    stdin_open = args.send is None and not args.echo
    while time.monotonic() < deadline:
        if args.expect and received >= args.expect:
            break
        watch = [sock] + ([sys.stdin] if stdin_open else [])
        ready, _, _ = select.select(watch, [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        if sys.stdin in ready:
            line = sys.stdin.buffer.readline()
            if not line:
                stdin_open = False
                sockopt.send_record(sock, CLOSE_NOTIFY, CT_ALERT)
                continue
            sockopt.send_record(sock, line)
        if sock in ready:
            try:
                kind, data = sockopt.recv_record(sock)
            except OSError as exc:
                sys.stderr.write(json.dumps({"event": "error", "errno": exc.errno,
                                             "error": os.strerror(exc.errno or 0)}) + "\n")
                return 1
            if kind != CT_APPLICATION_DATA:
                if kind == CT_ALERT:
                    break  # close_notify (or a fatal alert): the peer is done
                continue  # NewSessionTicket and the like: not for the application
            if not data:
                break
            received += len(data)
            if args.echo:
                sockopt.send_record(sock, data)
            else:
                sys.stdout.buffer.write(data)
                sys.stdout.flush()
    sys.stderr.write(json.dumps({"event": "closed", "received": received}) + "\n")
    return 0


def handshake(sock: socket.socket, args: argparse.Namespace, server: bool) -> int:
    host, port = sock.getpeername()[:2]
    peer = f"{host}:{port}"
    try:
        result = handshake_on(sock.fileno(), request(args, server))
    except HandshakeFailed as exc:
        sys.stderr.write(json.dumps({"event": "handshake_failed", "errno": exc.errno,
                                     "error": errno.errorcode.get(exc.errno, ""),
                                     "reason": exc.reason, "peer": peer}) + "\n")
        return 1
    report(sock, result, peer)
    return converse(sock, args)


def serve(args: argparse.Namespace) -> int:
    family = socket.AF_INET6 if ":" in args.address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as ls:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((args.address, args.port))
        ls.listen(8)
        sys.stderr.write(json.dumps({"event": "listening", "address": args.address,
                                     "port": args.port}) + "\n")
        sys.stderr.flush()
        rc = 0
        for _ in range(args.count):
            ls.settimeout(args.timeout)
            try:
                conn, _ = ls.accept()
            except TimeoutError:
                sys.stderr.write(json.dumps({"event": "no_client"}) + "\n")
                return 1
            with conn:
                rc = handshake(conn, args, server=True) or rc
        return rc


def connect(args: argparse.Namespace) -> int:
    with socket.create_connection((args.to, args.port), timeout=args.handshake_timeout) as s:
        s.settimeout(None)
        return handshake(s, args, server=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m labkit.features.handshake.peer")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("serve", "connect"):
        p = sub.add_parser(name)
        p.add_argument("--lab", required=True)
        p.add_argument("--node", required=True)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--auth", choices=("x509", "unauth", "psk"),
                       default="x509" if name == "serve" else "unauth")
        p.add_argument("--psk-file", default="")
        p.add_argument("--no-verify", action="store_true",
                       help="do not check the peer's certificate against the lab CA")
        p.add_argument("--send", default=None, help="send this text, then read")
        p.add_argument("--expect", type=int, default=0, help="stop after this many bytes")
        p.add_argument("--timeout", type=float, default=30.0, help="s for the conversation")
        p.add_argument("--handshake-timeout", type=float, default=20.0)
    s = sub.choices["serve"]
    s.add_argument("--address", default="0.0.0.0")
    s.add_argument("--echo", action="store_true", help="send back what arrives")
    s.add_argument("--count", type=int, default=1, help="connections to serve, one by one")
    c = sub.choices["connect"]
    c.add_argument("--to", required=True)
    c.add_argument("--peername", default="", help="name the server's certificate must have "
                                                  "(default: the address)")
    c.set_defaults(echo=False)
    args = ap.parse_args(argv)
    if args.cmd == "connect" and not args.peername:
        args.peername = args.to
    if args.auth == "psk":
        engines.load_tlslite()
    return serve(args) if args.cmd == "serve" else connect(args)


if __name__ == "__main__":
    sys.exit(main())
