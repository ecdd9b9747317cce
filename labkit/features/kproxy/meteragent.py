"""The measuring endpoints of a kproxy pair: `python -m labkit.features.kproxy.meteragent
serve|run ...`, started by labkit.features.kproxy.measure inside the upstream node (serve)
and the client node (run).

Every test is one TCP connection (TLS when --tls): the client first sends a control
message (a 4-byte big-endian length, then JSON), then:
  up      the client streams (for --seconds, or exactly `bytes`), half-closes; the
          server reads to the end, then answers with what it got (bytes, seconds, sha256)
          on the same connection, which crosses the proxy's forwarded FIN the other way.
  down    the server streams and half-closes; the client reads to the end and answers.
  rr      request/response rounds of `size` bytes: the client times each round.
  policy  the client sends framed messages, some starting with the drop prefix; the
          server answers with the messages it got. Compared with the expected survivors.
Data on policy pairs is always framed (length-prefixed messages whose payload starts with
0xFF, which no UTF-8 prefix does), so only the policy test's chosen messages match.
Results are one JSON line on stdout (the server prints one per connection). Bounded: a
sender stops at its byte count or deadline, the server at --timeout. Standard library
only (and ssl), so it starts fast in emulated VMs.

Plain streams move the way iperf3 moves them (non-blocking socket, poll, then 128 KiB
read()s, or bursts of up to 10 write()s of 128 KiB), because on a veth path the I/O
pattern decides which CPU does TCP's receive work, and so the rate: with blocking
sendall()/read() this meter got 0.65x of iperf3's median on the direct pair, with iperf3's
pattern 1.00x (round robin, 10 runs of 2 s each, host kernel 6.18, 2 CPUs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import select
import socket
import ssl
import struct
import sys
import threading
import time
from typing import Any

CHUNK = 1 << 17  # bytes per write, as iperf3
BURST = 10  # writes per poll() at most, as iperf3 (its "multisend")
BLOCK = os.urandom(1 << 20)  # what streams are made of (a fresh random MiB per process)
FRAME_PAYLOAD = 16384  # payload per message on framed (policy) pairs
MARK = b"\xff"  # first payload byte of measurement messages: never a UTF-8 prefix
SERIES_STEP = 0.01  # s between running totals of a receiver
# Bytes per read, as iperf3 (128 KiB). read(2) rather than recv(2): on our machines
# recv_into ran 1.5-3x slower than read() on the same veth path.
RECV_BUFFER = 1 << 17


# -- framing ---------------------------------------------------------------------------
def send_msg(sock: socket.socket, obj: dict[str, Any]) -> None:
    body = json.dumps(obj).encode()
    sock.sendall(struct.pack(">I", len(body)) + body)


def recv_exact(sock: socket.socket, count: int) -> bytes:
    buf = bytearray()
    while len(buf) < count:
        chunk = sock.recv(count - len(buf))
        if not chunk:
            raise ConnectionError(f"the stream ended after {len(buf)} of {count} bytes")
        buf += chunk
    return bytes(buf)


def recv_msg(sock: socket.socket) -> dict[str, Any]:
    size = struct.unpack(">I", recv_exact(sock, 4))[0]
    if size > 1 << 20:
        raise ConnectionError(f"a control message of {size} bytes is not ours")
    return json.loads(recv_exact(sock, size))  # type: ignore[no-any-return]


def frames(header: int, total: int | None) -> Any:
    """Framed measurement messages of FRAME_PAYLOAD bytes (the last may be shorter)."""
    sent = 0
    payload = MARK + BLOCK[: FRAME_PAYLOAD - 1]
    while total is None or sent < total:
        body = payload if total is None else payload[: max(1, min(len(payload),
                                                                 total - sent - header))]
        msg = len(body).to_bytes(header, "big") + body
        sent += len(msg)
        yield msg


# -- streaming ---------------------------------------------------------------------------
def stream_out(sock: socket.socket, spec: dict[str, Any]) -> dict[str, Any]:
    """Send for spec["seconds"] or exactly spec["bytes"]; returns what was sent and when
    (monotonic clock: the same in every namespace of the machine)."""
    digest = hashlib.sha256() if spec.get("hash") else None
    total = spec.get("bytes")
    deadline = time.monotonic() + float(spec.get("seconds") or 600)
    header = int(spec.get("framed") or 0)
    sent = 0
    t0 = time.monotonic()
    if header:
        for msg in frames(header, total):
            if time.monotonic() >= deadline:
                break
            sock.sendall(msg)
            if digest:
                digest.update(msg)
            sent += len(msg)
    elif isinstance(sock, ssl.SSLSocket):
        view = memoryview(BLOCK + BLOCK)
        while (total is None or sent < total) and time.monotonic() < deadline:
            part = view[sent % len(BLOCK):][: CHUNK if total is None else min(CHUNK, total - sent)]
            sock.sendall(part)
            if digest:
                digest.update(part)
            sent += len(part)
    else:
        sent = _write_plain(sock, total, deadline, digest)
    if spec.get("eom"):  # the end of the stream, said in-band (a zero-length message)
        sock.sendall(b"\0" * header)
        if digest:
            digest.update(b"\0" * header)
        sent += header
    end = time.monotonic()
    return {"bytes": sent, "seconds": end - t0, "start": t0, "end": end,
            "sha256": digest.hexdigest() if digest else None}


def _write_plain(sock: socket.socket, total: int | None, deadline: float,
                 digest: Any) -> int:
    """stream_out on a plain socket, in iperf3's pattern (see the module's docstring);
    returns the bytes written. The socket is blocking again afterwards."""
    view = memoryview(BLOCK + BLOCK)
    fd, sent = sock.fileno(), 0
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    sock.setblocking(False)
    try:
        while (total is None or sent < total) and time.monotonic() < deadline:
            poller.poll(250)
            for _ in range(BURST):
                want = CHUNK if total is None else min(CHUNK, total - sent)
                if want <= 0:
                    break
                part = view[sent % len(BLOCK):][:want]
                try:
                    n = os.write(fd, part)
                except BlockingIOError:
                    break
                if digest:
                    digest.update(part[:n])
                sent += n
    finally:
        sock.setblocking(True)
    return sent


def _read_plain(sock: socket.socket, buf: bytearray) -> Any:
    """read()s on a plain socket in iperf3's pattern: poll, then one read; yields the
    byte counts, 0 at the end of the stream. The socket is blocking again afterwards."""
    fd = sock.fileno()
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    sock.setblocking(False)
    try:
        while True:
            poller.poll(250)
            try:
                n = os.readv(fd, [buf])
            except BlockingIOError:
                continue
            yield n
            if not n:
                return
    finally:
        sock.setblocking(True)


def stream_in(sock: socket.socket, want_hash: bool) -> dict[str, Any]:
    """Read to the end of the stream: bytes, sha256, first and last byte times, and the
    running total every SERIES_STEP seconds (to count what arrived while the sender was
    still sending, as iperf3 does)."""
    digest = hashlib.sha256() if want_hash else None
    buf = bytearray(RECV_BUFFER)
    view = memoryview(buf)
    got = 0
    first = last = mark = 0.0
    series: list[list[float]] = []
    if isinstance(sock, ssl.SSLSocket):
        reads: Any = iter(lambda: sock.recv_into(buf), 0)
    else:
        reads = _read_plain(sock, buf)
    for n in reads:
        if not n:
            break
        last = time.monotonic()
        if not got:
            first = mark = last
        got += n
        if last - mark >= SERIES_STEP:
            series.append([last, got])
            mark = last
        if digest:
            digest.update(view[:n])
    series.append([last, got])
    return {"bytes": got, "seconds": last - first, "first": first, "last": last,
            "series": series, "sha256": digest.hexdigest() if digest else None}


def stream_in_framed(sock: socket.socket, header: int, want_hash: bool) -> dict[str, Any]:
    """stream_in for TLS pairs: read messages up to the zero-length one that ends the
    stream, instead of a half-close. (A TCP half-close without close_notify fails the
    TLS session for writing in OpenSSL 3, and Python cannot send close_notify alone.)"""
    digest = hashlib.sha256() if want_hash else None
    buf = bytearray(RECV_BUFFER)
    view = memoryview(buf)
    got = 0
    need = 0  # payload bytes still to come in the current message
    head = b""  # a length prefix split between two reads
    first = last = mark = 0.0
    series: list[list[float]] = []
    ended = False
    while not ended:
        n = sock.recv_into(buf)
        if not n:
            raise ConnectionError(f"the stream ended after {got} bytes, without its end")
        last = time.monotonic()
        if not got:
            first = mark = last
        pos = 0
        while pos < n:
            if need:
                take = min(need, n - pos)
                need -= take
                pos += take
                continue
            part = bytes(view[pos: min(n, pos + header - len(head))])
            head += part
            pos += len(part)
            if len(head) == header:
                need = int.from_bytes(head, "big")
                head = b""
                if not need:
                    ended = True  # counted like the sender counted it: with the rest
                    n = pos
                    break
        got += n
        if digest:
            digest.update(view[:n])
        if last - mark >= SERIES_STEP:
            series.append([last, got])
            mark = last
    series.append([last, got])
    return {"bytes": got, "seconds": last - first, "first": first, "last": last,
            "series": series, "sha256": digest.hexdigest() if digest else None}


def receive(sock: socket.socket, spec: dict[str, Any]) -> dict[str, Any]:
    if spec.get("eom"):
        return stream_in_framed(sock, int(spec["framed"]), bool(spec.get("hash")))
    return stream_in(sock, bool(spec.get("hash")))


def end_of_sending(sock: socket.socket, spec: dict[str, Any]) -> None:
    """Say the stream is over: a half-close, or (TLS pairs) nothing more: the zero-length
    message stream_out sent already said it."""
    if not spec.get("eom"):
        half_close(sock)


def half_close(sock: socket.socket) -> None:
    # socket.socket's shutdown keeps an SSLSocket's TLS state (see relay.Side.shutdown)
    socket.socket.shutdown(sock, socket.SHUT_WR)


# -- server ------------------------------------------------------------------------------
def handle(conn: socket.socket, lock: threading.Lock) -> None:
    result: dict[str, Any] = {"role": "server"}
    try:
        spec = recv_msg(conn)
        result["test"], result["id"] = spec.get("test"), spec.get("id")
        kind = spec.get("test")
        if kind == "up":
            got = receive(conn, spec)
            result.update(got)
            send_msg(conn, got)
        elif kind == "down":
            result.update(stream_out(conn, spec))
            end_of_sending(conn, spec)
            result["client"] = recv_msg(conn)
        elif kind == "rr":
            size = int(spec["size"])
            for _ in range(int(spec["rounds"])):
                conn.sendall(recv_exact(conn, size))
            result["rounds"] = spec["rounds"]
        elif kind == "policy":
            got = bytearray()
            while chunk := conn.recv(1 << 20):
                got += chunk
            answer = {"bytes": len(got), "sha256": hashlib.sha256(got).hexdigest(),
                      "messages": count_messages(bytes(got), int(spec["framed"]))}
            result.update(answer)
            send_msg(conn, answer)
        else:
            result["error"] = f"unknown test {kind!r}"
    except (OSError, ValueError, ConnectionError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
    with lock:
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


def count_messages(stream: bytes, header: int) -> int:
    pos = count = 0
    while pos + header <= len(stream):
        pos += header + int.from_bytes(stream[pos: pos + header], "big")
        count += 1
    return count


def serve(args: argparse.Namespace) -> int:
    family = socket.AF_INET6 if ":" in args.address else socket.AF_INET
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((args.address, args.port))
    srv.listen(512)
    ctx = None
    if args.tls:
        from labkit.features.kproxy.tlsctx import server_context

        ctx = server_context(args.tls[0], args.tls[1])
    srv.settimeout(args.timeout)
    lock = threading.Lock()
    print(json.dumps({"ready": True}), flush=True)
    threads = []
    served = 0
    try:
        while args.connections == 0 or served < args.connections:
            conn, _ = srv.accept()
            conn.settimeout(None)
            served += 1
            t = threading.Thread(target=_serve_one, args=(conn, ctx, lock), daemon=True)
            t.start()
            threads.append(t)
    except TimeoutError:
        pass
    for t in threads:
        t.join(args.timeout)
    return 0


def _serve_one(conn: socket.socket, ctx: ssl.SSLContext | None, lock: threading.Lock) -> None:
    if ctx is not None:
        try:
            conn = ctx.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            with lock:
                print(json.dumps({"role": "server", "error": f"TLS: {exc}"}), flush=True)
            conn.close()
            return
    handle(conn, lock)


# -- client ------------------------------------------------------------------------------
def connect(args: argparse.Namespace) -> socket.socket:
    sock = socket.create_connection((args.address, args.port), timeout=args.timeout)
    sock.settimeout(None)
    if args.tls_ca:
        from labkit.features.kproxy.tlsctx import client_context

        sock = client_context(args.tls_ca).wrap_socket(sock, server_hostname=args.address)
    return sock


class Deadline:
    """Ends a test that overruns --timeout: shuts the socket down, which wakes whatever
    read, write or poll() waits on it (a shutdown, not a socket timeout: outside the
    streaming loops, which poll, the socket is blocking), so a stream that never ends
    becomes an error, not a hang."""

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self.sock, self.seconds, self.expired = sock, seconds, False
        self.timer = threading.Timer(seconds, self._expire)
        self.timer.daemon = True
        self.timer.start()

    def _expire(self) -> None:
        self.expired = True
        try:
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
        except OSError:
            pass

    def cancel(self) -> None:
        self.timer.cancel()


def run_test(args: argparse.Namespace, spec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"test": spec["test"], "id": spec.get("id")}
    t0 = time.monotonic()
    sock = connect(args)
    out["connect_seconds"] = time.monotonic() - t0
    deadline = Deadline(sock, args.timeout)
    try:
        _run_on(sock, spec, out)
    except (OSError, ValueError, ConnectionError):
        if not deadline.expired:
            raise
    finally:
        deadline.cancel()
        sock.close()
    if deadline.expired:
        out["error"] = (f"no end of the {spec['test']} test within {args.timeout:g} s "
                        "(the stream or its answer never arrived)")
    return out


def _run_on(sock: socket.socket, spec: dict[str, Any], out: dict[str, Any]) -> None:
    send_msg(sock, spec)
    if spec["test"] == "up":
        out["sent"] = stream_out(sock, spec)
        end_of_sending(sock, spec)
        out["server"] = recv_msg(sock)
    elif spec["test"] == "down":
        got = receive(sock, spec)
        out["received"] = got
        send_msg(sock, got)
    elif spec["test"] == "rr":
        out["rtt_us"] = rounds(sock, spec)
    elif spec["test"] == "policy":
        out.update(policy_test(sock, spec))


def rounds(sock: socket.socket, spec: dict[str, Any]) -> list[float]:
    size, header = int(spec["size"]), int(spec.get("framed") or 0)
    if header:
        request = (size - header).to_bytes(header, "big") + MARK + BLOCK[: size - header - 1]
    else:
        request = BLOCK[:size]
    times = []
    for _ in range(int(spec["rounds"])):
        t = time.perf_counter()
        sock.sendall(request)
        recv_exact(sock, size)
        times.append((time.perf_counter() - t) * 1e6)
    return times


def policy_messages(spec: dict[str, Any]) -> tuple[bytes, bytes, int, int]:
    """(everything sent, what should arrive, messages sent, messages that match)."""
    header, prefix = int(spec["framed"]), bytes.fromhex(spec["prefix"])
    sent, kept = bytearray(), bytearray()
    matched = 0
    for i in range(int(spec["messages"])):
        size = 1 + (i * 7919) % int(spec["max_payload"])
        body = (prefix if i % int(spec["every"]) == 0 else MARK) + BLOCK[i: i + size]
        msg = len(body).to_bytes(header, "big") + body
        sent += msg
        if body.startswith(prefix):
            matched += 1
        else:
            kept += msg
    return bytes(sent), bytes(kept), int(spec["messages"]), matched


def policy_test(sock: socket.socket, spec: dict[str, Any]) -> dict[str, Any]:
    sent, kept, count, matched = policy_messages(spec)
    sock.sendall(sent)
    half_close(sock)
    answer = recv_msg(sock)
    return {"messages_sent": count, "expected_drops": matched,
            "expected_bytes": len(kept), "expected_sha256": hashlib.sha256(kept).hexdigest(),
            "server": answer}


def run(args: argparse.Namespace) -> int:
    specs = json.loads(args.tests)
    results = []
    parallel = [s for s in specs if s.get("parallel")]
    for spec in [s for s in specs if not s.get("parallel")]:
        results.append(_guarded(args, spec))
    if parallel:
        out: list[dict[str, Any]] = [{} for _ in parallel]

        def one(i: int, spec: dict[str, Any]) -> None:
            out[i] = _guarded(args, spec)

        threads = [threading.Thread(target=one, args=(i, s)) for i, s in enumerate(parallel)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(args.timeout * 2)
        results += out
    print(json.dumps({"role": "client", "results": results}), flush=True)
    return 0


def _guarded(args: argparse.Namespace, spec: dict[str, Any]) -> dict[str, Any]:
    try:
        return run_test(args, spec)
    except (OSError, ValueError, ConnectionError) as exc:
        return {"test": spec.get("test"), "id": spec.get("id"),
                "error": f"{type(exc).__name__}: {exc}"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="labkit.features.kproxy.meteragent")
    ap.add_argument("role", choices=["serve", "run"])
    ap.add_argument("--address", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--connections", type=int, default=0, help="serve: stop after N")
    ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="serve: TLS")
    ap.add_argument("--tls-ca", default="", help="run: TLS, trusting this CA")
    ap.add_argument("--tests", default="[]", help="run: JSON list of test specs")
    args = ap.parse_args(argv)
    return serve(args) if args.role == "serve" else run(args)


if __name__ == "__main__":
    sys.exit(main())
