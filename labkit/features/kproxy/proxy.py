"""The proxy process of one pair: `python -m labkit.features.kproxy.proxy SPEC`.

Started by the feature's setup inside the proxy node (node.popen), one process per pair.
It listens, connects every accepted client to the upstream, and moves the bytes the way
the pair's mode says (labkit.features.kproxy.joiner for sockmap, .relay for splice and
boomerang), terminating TLS on both legs for TLS pairs. A unix socket (the spec's
`control`, 0600) answers {"op": "status"} with its counters as one JSON line.

SPEC is JSON: lab, pair, mode, listen [address, port], upstream [address, port],
rule (framing, prefix hex, max_message) or null, tls (cert, key, ca, server_name,
keylog prefix) or null, control. Key material is referenced by path, never passed.
Standard library only, so that it starts fast in an emulated VM.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import signal
import socket
import sys
import threading
from typing import Any

from labkit.features.kproxy import tcpstate
from labkit.features.kproxy.programs import Rule
from labkit.features.kproxy.stats import Crypto, Stats

CONNECT_TIMEOUT = 10.0
BACKLOG = 512


class Proxy:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.mode: str = spec["mode"]
        r = spec.get("rule")
        self.rule = Rule(r["framing"], bytes.fromhex(r["prefix"]), int(r["max_message"])) \
            if r else None
        self.tls: dict[str, str] | None = spec.get("tls")
        self.stats = Stats()
        if self.tls:
            self.stats.crypto = Crypto(where="kernel (kTLS)" if self.mode == "splice"
                                       else "user space (OpenSSL)")
        self.upstream = (spec["upstream"][0], int(spec["upstream"][1]))
        self.sockmap: Any = None
        self.joiner: Any = None
        self.ids: dict[str, list[int]] = {}
        self.counter = itertools.count()
        family = socket.AF_INET6 if ":" in spec["listen"][0] else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((spec["listen"][0], int(spec["listen"][1])))
        if self.mode == "sockmap":
            from labkit.features.kproxy.joiner import Joiner
            from labkit.features.kproxy.sockmap import Sockmap

            self.sockmap = Sockmap(self.rule)
            self.ids = self.sockmap.ids()
            self.joiner = Joiner(self, self.sockmap)
            threading.Thread(target=self.joiner.run, daemon=True, name="joiner").start()
        self.listener.listen(BACKLOG)
        self.control = _control_socket(spec["control"])
        threading.Thread(target=self._serve_control, daemon=True, name="control").start()

    # -- data path -------------------------------------------------------------------
    def serve_forever(self) -> None:
        while True:
            a, _ = self.listener.accept()
            self.stats.add(accepted=1, active=1)
            try:
                b = socket.create_connection(self.upstream, timeout=CONNECT_TIMEOUT)
                b.settimeout(None)
            except OSError:
                self.stats.add(upstream_failures=1, active=-1, closed=1)
                with contextlib.suppress(OSError):
                    tcpstate.reset(a)  # the client learns at once that nobody answered
                continue
            for s in (a, b):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.joiner is not None:
                try:
                    self.joiner.join(a, b)
                    continue
                except OSError as exc:
                    if exc.errno != errno.EOPNOTSUPP:
                        print(f"kproxy {self.spec['pair']}: cannot join sockets: {exc}",
                              file=sys.stderr, flush=True)
                        self.stats.add(active=-1, closed=1)
                        for s in (a, b):
                            with contextlib.suppress(OSError):
                                tcpstate.reset(s)
                        continue
                # A side already half-closed (it sent everything and its FIN before the
                # join): sockmap takes only ESTABLISHED sockets, so this connection is
                # relayed in user space, under the same policy.
                self.stats.add(user_space_fallbacks=1)
            threading.Thread(target=self._relay, args=(a, b), daemon=True,
                             name="conn").start()

    def _relay(self, a: socket.socket, b: socket.socket) -> None:
        from labkit.features.kproxy.relay import Connection, Side

        try:
            sides = self._tls_sides(a, b) if self.tls else (Side(a), Side(b))
        except Exception as exc:  # a failed handshake ends this connection only
            print(f"kproxy {self.spec['pair']}: TLS: {exc}", file=sys.stderr, flush=True)
            self.stats.add(active=-1, closed=1, tls_failures=1)
            for s in (a, b):
                with contextlib.suppress(OSError):
                    tcpstate.reset(s)
            return
        mode = "boomerang" if self.mode == "sockmap" else self.mode
        Connection(self, *sides, mode=mode).run()

    def _tls_sides(self, a: socket.socket, b: socket.socket) -> tuple[Any, Any]:
        from labkit.features.kproxy import tlsctx
        from labkit.features.kproxy.relay import Side

        tls = self.tls
        assert tls is not None
        name = tls["server_name"]
        if self.mode == "splice":  # kTLS on both legs
            from labkit.base.files import write_private
            from labkit.features.kproxy.ktls import handshake_to_ktls

            n = next(self.counter)
            keylogs = [f"{tls['keylog']}-{n}-a", f"{tls['keylog']}-{n}-b"]
            for path in keylogs:
                write_private(path, b"")
            handshake_to_ktls(a, tlsctx.server_context(tls["cert"], tls["key"], keylogs[0]),
                              keylogs[0], server_side=True)
            handshake_to_ktls(b, tlsctx.client_context(tls["ca"], keylogs[1]), keylogs[1],
                              server_side=False, server_hostname=name)
            sa, sb = Side(a, ktls=True), Side(b, ktls=True)
        else:  # OpenSSL in this process on both legs
            ta = tlsctx.server_context(tls["cert"], tls["key"]).wrap_socket(a, server_side=True)
            tb = tlsctx.client_context(tls["ca"]).wrap_socket(b, server_hostname=name)
            sa, sb = Side(ta, tls=ta), Side(tb, tls=tb)
        sa.mark_data_start()
        sb.mark_data_start()
        return sa, sb

    # -- status ----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        data = self.stats.snapshot()
        if self.joiner is not None:
            data["verdict_misses"] = self.sockmap.misses_count()
            up, down = self.joiner.totals()
            for key, c in (("upstream", up), ("downstream", down)):
                data[key].update(bytes=c.pass_bytes, dropped_messages=c.drop_msgs,
                                 dropped_bytes=c.drop_bytes,
                                 messages=c.pass_msgs if self.rule else 0)
        data.update(pair=self.spec["pair"], mode=self.mode, pid=os.getpid(),
                    listening=True, bpf=self.ids,
                    threads=threading.active_count())
        return data

    def _serve_control(self) -> None:
        while True:
            conn, _ = self.control.accept()
            with conn:
                try:
                    request = json.loads(conn.makefile().readline() or "{}")
                    reply = self.status() if request.get("op") == "status" else \
                        {"error": f"unknown op {request.get('op')!r}"}
                except Exception as exc:  # a bad request must not stop the proxy
                    reply = {"error": f"{type(exc).__name__}: {exc}"}
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps(reply).encode() + b"\n")


def _control_socket(path: str) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the socket file is 0600 from the start
    try:
        s.bind(path)
    finally:
        os.umask(old)
    s.listen(16)
    return s


def query(path: str, op: str = "status", timeout: float = 5.0) -> dict[str, Any]:
    """Ask a running proxy (from anywhere on the same kernel)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps({"op": op}).encode() + b"\n")
        line = s.makefile().readline()
    return json.loads(line)  # type: ignore[no-any-return]


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    spec = json.loads(argv[0])
    try:
        proxy = Proxy(spec)
    except OSError as exc:
        print(f"kproxy {spec.get('pair')}: cannot start: {exc}", file=sys.stderr, flush=True)
        log = getattr(exc, "log", "")
        if log:
            print(f"verifier log:\n{log}", file=sys.stderr, flush=True)
        return 1
    proxy.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
