"""A TLS 1.3 peer on kTLS that does KeyUpdate (RFC 8446 4.6.3), for the rekey exercise.

    python3 -m labkit.exercises.keyupdate serve [--port 4433]            # in t, with &
    printf 'hello\\nK\\nbye\\n' | python3 -m labkit.exercises.keyupdate connect 198.18.4.1

Typed in a node of a lab with the handshake feature (its namespace names the lab and the
node; the server presents the node's lab certificate, the client checks it against the
lab CA). The handshake is the daemon's own code (labkit.features.handshake), then both
directions are kTLS. Like `openssl s_client`, the client reads lines from stdin and sends
each one; a line that is just `k` sends a KeyUpdate, `K` one with update_requested (the
peer must then update its own sending key too). The server echoes data and answers a
KeyUpdate as the kernel needs it: after the peer's KeyUpdate record the kernel holds
further records (EKEYEXPIRED) until the next receive key is installed (TLS_RX again).
Each step is printed, with the counters it moves in /proc/net/tls_stat. Needs a kernel
with kTLS KeyUpdate (7.2 has it; on 6.12 the second TLS_TX is refused, and it says so).

Kept here, next to the exercise, rather than in labkit.ktls: it is a teaching peer built
on the public kTLS calls (rekey, key_update_message, recv_record).
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import sys
import time
from io import RawIOBase
from typing import TYPE_CHECKING

from labkit.base import netns
from labkit.ktls import sockopt
from labkit.ktls.keyschedule import next_secret
from labkit.ktls.uapi import (
    CLOSE_NOTIFY,
    CT_ALERT,
    CT_APPLICATION_DATA,
    CT_HANDSHAKE,
    HS_KEY_UPDATE,
)

if TYPE_CHECKING:
    from labkit.features.handshake.ktls import Session

NS_PREFIX = "lk-"
POLL = 0.5  # s between reads that do not wait


def say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def where_am_i() -> tuple[str, str]:
    """(lab, node) from this process's network namespace (lk-LAB.NODE), as a learner's
    command typed in a node runs there."""
    mine = os.stat("/proc/self/ns/net").st_ino
    for name in netns.list_names(NS_PREFIX):
        if netns.inode(name) == mine and "." in name:
            lab, _, node = name[len(NS_PREFIX):].rpartition(".")
            return lab, node
    raise SystemExit("this command runs in a node of a lab (`labkit exec LAB NODE -- ...`, "
                     "or the exercise's command box); give --lab and --node otherwise")


class Conversation:
    """One kTLS connection and its traffic secrets, which each KeyUpdate moves on."""

    def __init__(self, sock: socket.socket, session: Session) -> None:
        self.sock = sock
        self.suite, self.tx, self.rx = session.suite, session.tx_secret, session.rx_secret
        self.sent_updates = self.got_updates = self.received = 0

    def _info(self, secret: bytes) -> bytes:
        return sockopt.tls13_crypto_info(self.suite, secret, 0)

    def key_update(self, request: bool) -> None:
        """Send a KeyUpdate under the current key, then install the next TX key."""
        sockopt.send_record(self.sock, sockopt.key_update_message(request), CT_HANDSHAKE)
        self.tx = next_secret(self.tx, self.suite.hash)
        try:
            sockopt.rekey(self.sock, tx=self._info(self.tx))
        except sockopt.KtlsError as exc:
            raise SystemExit(f"sent a KeyUpdate, but the kernel refused the next TX key: "
                             f"{exc.strerror}") from None
        self.sent_updates += 1
        say(f"sent KeyUpdate ({'update_requested' if request else 'update_not_requested'})"
            "; next TX key installed (TlsTxRekeyOk +1 here)")

    def handshake_records(self, data: bytes) -> None:
        """Handshake messages after the handshake: KeyUpdate moves the RX key on (and
        answers with our own when asked); NewSessionTickets are not for kTLS."""
        while len(data) >= 4:
            kind, length = data[0], int.from_bytes(data[1:4], "big")
            body, data = data[4:4 + length], data[4 + length:]
            if kind != HS_KEY_UPDATE:
                continue
            self.rx = next_secret(self.rx, self.suite.hash)
            sockopt.rekey(self.sock, rx=self._info(self.rx))
            self.got_updates += 1
            requested = body[:1] == b"\x01"
            say("received KeyUpdate (" + ("update_requested" if requested else
                                          "update_not_requested")
                + "); next RX key installed (TlsRxRekeyReceived, TlsRxRekeyOk +1 here)")
            if requested:
                self.key_update(False)

    def run(self, lines: RawIOBase | None, echo: bool, timeout: float) -> int:
        """Move data until the peer closes (or stdin ends and the peer is done)."""
        deadline = time.monotonic() + timeout
        reading = lines is not None
        while time.monotonic() < deadline:
            watch: list = [self.sock] + ([lines] if reading else [])
            # select is not the only way in: around a KeyUpdate a socket was seen to hold
            # a whole record that poll did not report (7.2, records queued across a
            # rekey), so an idle turn also tries a read that does not wait
            ready, _, _ = select.select(watch, [], [], min(POLL, deadline - time.monotonic()))
            if lines is not None and lines in ready:
                line = lines.readline()
                if not line:
                    reading = False
                    sockopt.send_record(self.sock, CLOSE_NOTIFY, CT_ALERT)
                elif line.strip() in (b"k", b"K"):
                    self.key_update(line.strip() == b"K")
                else:
                    sockopt.send_record(self.sock, line)
            try:
                record = self._read(wait=self.sock in ready)
            except ConnectionResetError:
                break
            if record is None:
                continue
            kind, data = record
            if kind == CT_HANDSHAKE:
                self.handshake_records(data)
                continue
            if kind == CT_ALERT or not data:
                break
            if kind != CT_APPLICATION_DATA:
                continue
            self.received += len(data)
            if echo:
                sockopt.send_record(self.sock, data)
            else:
                sys.stdout.buffer.write(data)
                sys.stdout.flush()
        else:
            say("timed out")
            return 1
        say(f"closed: {self.received} bytes received, KeyUpdates sent {self.sent_updates}, "
            f"received {self.got_updates}")
        return 0

    def _read(self, wait: bool) -> tuple[int, bytes] | None:
        """The next record; None when none is there (only asked without waiting)."""
        if wait:
            return sockopt.recv_record(self.sock)
        self.sock.setblocking(False)
        try:
            return sockopt.recv_record(self.sock)
        except BlockingIOError:
            return None
        finally:
            self.sock.setblocking(True)


def _handshake(sock: socket.socket, args: argparse.Namespace, server: bool) -> Conversation:
    from labkit.features.handshake.handshaker import handshake_on
    from labkit.features.handshake.peer import request
    from labkit.features.handshake.records import HandshakeFailed

    try:
        result = handshake_on(sock.fileno(), request(args, server))
    except HandshakeFailed as exc:
        raise SystemExit(f"TLS handshake failed: {exc.reason}") from None
    say(f"{args.node}: {result.version} {result.cipher} with {sock.getpeername()[0]}; kTLS "
        f"on the socket (ulp {sockopt.ulp(sock) or 'none'}) for both directions")
    return Conversation(sock, result.session)


def serve(args: argparse.Namespace) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as ls:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("0.0.0.0", args.port))
        ls.listen(4)
        ls.settimeout(args.timeout)
        say(f"{args.node}: listening on port {args.port} for {args.count} connection(s)")
        rc = 0
        for _ in range(args.count):
            try:
                conn, _ = ls.accept()
            except TimeoutError:
                say(f"no client came in {args.timeout:.0f} s")
                return 1
            with conn:
                conn.settimeout(None)
                rc = _handshake(conn, args, True).run(None, True, args.timeout) or rc
        return rc


def connect(args: argparse.Namespace) -> int:
    with socket.create_connection((args.to, args.port), timeout=args.handshake_timeout) as s:
        s.settimeout(None)
        # unbuffered: a line read never leaves the next one in a buffer select cannot see
        return _handshake(s, args, False).run(sys.stdin.buffer.raw, False, args.timeout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m labkit.exercises.keyupdate",
                                 description="A TLS 1.3 peer on kTLS that does KeyUpdate: "
                                 "a stdin line `k` sends one, `K` one that asks the peer "
                                 "to update too.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="accept, echo, answer KeyUpdates")
    s.add_argument("--count", type=int, default=1, help="connections to serve")
    c = sub.add_parser("connect", help="send stdin's lines; k / K send a KeyUpdate")
    c.add_argument("to", help="the server's address")
    for p in (s, c):
        p.add_argument("--port", type=int, default=4433)
        p.add_argument("--timeout", type=float, default=120.0,
                       help="seconds to wait for a client, and per connection")
        p.add_argument("--lab", help="default: from this node's namespace")
        p.add_argument("--node", help="default: from this node's namespace")
    args = ap.parse_args(argv)
    if not (args.lab and args.node):
        args.lab, args.node = where_am_i()
    server = args.cmd == "serve"
    # what labkit.features.handshake.peer.request reads: the server presents its node's
    # lab certificate and asks for none; the client checks the server's against the CA
    args.auth, args.psk_file, args.no_verify = ("x509" if server else "unauth"), "", server
    args.handshake_timeout = 60.0
    args.peername = "" if server else args.to
    return serve(args) if server else connect(args)


if __name__ == "__main__":
    sys.exit(main())
