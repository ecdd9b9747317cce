"""A receiver for one transfer, run as its own process in the receiving node:

    python -m labkit.features.offload.sink --mode python|ktls|tcp --port 4433 \\
        [--cert C --key K --version 1.2] [--timeout 120]

- python: Python's ssl (OpenSSL) in user space decrypts and authenticates every record.
- ktls: the handshake in user space, then kTLS RX: the kernel decrypts; a bad record is
  EBADMSG (and TlsDecryptError in /proc/net/tls_stat).
- tcp: no TLS at all, a plain byte sink (benchmarks: what the sender's side costs).

It accepts one connection, reads until the peer ends (close_notify or EOF), and prints
one JSON line: bytes, sha256, how it ended, the error a bad record caused. Bounded: the
accept and every read wait at most --timeout seconds.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import socket
import ssl
import sys
import time
from typing import Any

from labkit.features.offload import tlskeys
from labkit.ktls.handshake import HandshakeError, install_ktls, run
from labkit.ktls.records import RecordSocket
from labkit.ktls.sockopt import recv_record
from labkit.ktls.uapi import CT_ALERT, CT_APPLICATION_DATA
from labkit.ktls.uapi import TLS_1_2_VERSION as TLS_1_2
from labkit.ktls.uapi import TLS_1_3_VERSION as TLS_1_3

READ = 1 << 18


def _server_context(version: int, cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    v = ssl.TLSVersion.TLSv1_2 if version == TLS_1_2 else ssl.TLSVersion.TLSv1_3
    ctx.minimum_version = ctx.maximum_version = v
    ctx.load_cert_chain(cert, key)
    ctx.num_tickets = 0  # nothing after the handshake but the client's data
    return ctx


def _ktls_rx(conn: socket.socket, version: int, cert: str, key: str, timeout: float) -> str:
    """The handshake (labkit.ktls.handshake: one record at a time, the key log in a pipe),
    then the client's keys to kTLS RX; the negotiated suite."""
    hs = run(_server_context(version, cert, key),
             RecordSocket(conn, time.monotonic() + timeout), server_side=True)
    tlskeys.cipher_of(hs.cipher)  # AES-GCM, as the emulated NIC does
    install_ktls(conn, hs, tx=False)
    return hs.cipher


def _read_ktls(conn: socket.socket, h: Any, result: dict[str, Any]) -> None:
    while True:
        kind, data = recv_record(conn, READ)
        if kind == CT_ALERT:
            result["ended"] = "close_notify" if data[1:2] == b"\x00" else f"alert {data.hex()}"
            return
        if not data:
            result["ended"] = "eof"
            return
        if kind == CT_APPLICATION_DATA:
            h.update(data)
            result["bytes"] += len(data)


def _read_ssl(conn: ssl.SSLSocket, h: Any, result: dict[str, Any]) -> None:
    while True:
        try:
            data = conn.recv(READ)
        except ssl.SSLZeroReturnError:
            result["ended"] = "close_notify"
            return
        if not data:
            result["ended"] = "eof"
            return
        h.update(data)
        result["bytes"] += len(data)


def _read_plain(conn: socket.socket, h: Any, result: dict[str, Any]) -> None:
    while data := conn.recv(READ):
        h.update(data)
        result["bytes"] += len(data)
    result["ended"] = "eof"


def serve(mode: str, port: int, version: int, cert: str, key: str, timeout: float,
          hashing: bool = True) -> dict[str, Any]:
    result: dict[str, Any] = {"mode": mode, "bytes": 0, "sha256": "", "ended": "",
                              "error": "", "suite": ""}
    lsock = socket.create_server(("::", port), family=socket.AF_INET6, dualstack_ipv6=True)
    lsock.settimeout(timeout)
    print(json.dumps({"listening": port}), flush=True)
    h: Any = hashlib.sha256() if hashing else _NoHash()
    start = time.monotonic()
    try:
        conn, _ = lsock.accept()
    except OSError as exc:
        result["error"] = f"no client connected within {timeout:g} s ({exc})"
        return result
    finally:
        lsock.close()
    conn.settimeout(timeout)
    try:
        if mode == "tcp":
            _read_plain(conn, h, result)
        elif mode == "ktls":
            result["suite"] = _ktls_rx(conn, version, cert, key, timeout)
            _read_ktls(conn, h, result)
        else:
            tls = _server_context(version, cert, key).wrap_socket(conn, server_side=True)
            result["suite"] = (tls.cipher() or ("",))[0]
            _read_ssl(tls, h, result)
    except ssl.SSLError as exc:
        result["error"] = f"{exc.reason or exc}".lower().replace("_", " ")
    except HandshakeError as exc:
        result["error"] = (exc.strerror or str(exc)).lower().replace("_", " ")
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, "")
        result["error"] = (f"{name}: the kernel rejected a record (bad tag)"
                           if exc.errno == errno.EBADMSG else f"{name or 'error'}: {exc}")
    finally:
        conn.close()
    result["sha256"] = h.hexdigest() if hashing else ""
    result["seconds"] = round(time.monotonic() - start, 3)
    return result


class _NoHash:
    def update(self, data: bytes) -> None:
        pass

    def hexdigest(self) -> str:
        return ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["python", "ktls", "tcp"], required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--version", choices=["1.2", "1.3"], default="1.2")
    ap.add_argument("--cert", default="")
    ap.add_argument("--key", default="")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--no-hash", action="store_true", help="count bytes only (benchmarks)")
    args = ap.parse_args(argv)
    version = TLS_1_2 if args.version == "1.2" else TLS_1_3
    result = serve(args.mode, args.port, version, args.cert, args.key, args.timeout,
                   not args.no_hash)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
