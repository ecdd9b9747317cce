"""A traffic server that reports what it receives every interval, for throughput plotted
over time (the notebook traffic panel). The sender is the ordinary agent
(`labkit.traffic.agent send`); only the receiving loop differs from the agent's `serve`.

Run as `python -m labkit.traffic.rate_server --proto P [--endpoint MODULE] ...` inside a
node. Standard library only, bounded by --timeout. Lines on stdout, one JSON object each:
    {"ready": true}                                  once it listens
    {"t": 0.5, "bytes": 123456, "messages": 2}       every --interval s after the first byte
    {"role": "server", "bytes": ..., "messages": ..., "seconds": ...}   at the end
"""

from __future__ import annotations

import argparse
import json
import select
import sys
import time
from typing import Any

from labkit.errors import LabkitError
from labkit.traffic.agent import END, endpoint


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def serve(ep: Any, args: argparse.Namespace) -> int:
    srv = ep.listen(args.socket, args.port, args.address)
    _emit({"ready": True})
    deadline = time.monotonic() + args.timeout
    datagrams = args.socket in ep.CONNECTIONLESS
    total = messages = 0
    first = last = None
    window_bytes = window_msgs = 0
    next_report = 0.0
    error = None
    try:
        if datagrams:
            conn = srv
        else:
            srv.settimeout(max(0.1, deadline - time.monotonic()))
            conn = srv.accept()[0]
        conn.setblocking(False)
        while time.monotonic() < deadline:
            now = time.monotonic()
            wait = min(deadline - now, (next_report - now) if first else args.interval)
            ready, _, _ = select.select([conn], [], [], max(0.0, wait))
            now = time.monotonic()
            if ready:
                try:
                    data = conn.recv(1 << 17)
                except BlockingIOError:  # woken without data: not an end of stream
                    continue
                if not data or (datagrams and data == END):
                    break
                if first is None:
                    first = now
                    next_report = now + args.interval
                last = now
                total += len(data)
                messages += 1
                window_bytes += len(data)
                window_msgs += 1
            if first is not None and now >= next_report:
                _emit({"t": round(next_report - first, 3), "bytes": window_bytes,
                       "messages": window_msgs})
                window_bytes = window_msgs = 0
                next_report += args.interval
    except TimeoutError:
        pass
    except OSError as exc:  # a reset at the end of the run: report what arrived
        error = f"{type(exc).__name__}: {exc}"
    finally:
        srv.close()
    if first is not None and window_bytes:
        _emit({"t": round((last or first) - first, 3), "bytes": window_bytes,
               "messages": window_msgs, "partial": True})
    seconds = (last - first) if first and last and last > first else 0.0
    _emit({"role": "server", "bytes": total, "messages": messages, "seconds": seconds,
           "error": error})
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="labkit.traffic.rate_server")
    ap.add_argument("--proto", required=True)
    ap.add_argument("--endpoint", default="", help="module implementing --proto (not tcp)")
    ap.add_argument("--socket", default="stream")
    ap.add_argument("--address", default="", help="tcp: the address to listen on")
    ap.add_argument("--port", type=int, default=5201)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--interval", type=float, default=0.5)
    args = ap.parse_args(argv)
    if not 0.05 <= args.interval <= 10:
        print("error: --interval must be between 0.05 and 10 seconds", file=sys.stderr)
        return 2
    ep = endpoint(args.endpoint)
    try:
        return serve(ep, args)
    except LabkitError as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot listen: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
