"""`python -m labkit.repro.sendframes IFACE`: send raw frames from inside a node.

Frames arrive on stdin as hex, one per line (what a scenario's `inject` step crafted or
read from a report's pcap on the host); each is sent once on IFACE through an AF_PACKET
socket, --interval seconds apart. Standard library only, so it starts fast in a VM. Prints
`sent N` and exits 0, or says why it could not.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m labkit.repro.sendframes")
    ap.add_argument("iface")
    ap.add_argument("--interval", type=float, default=0.0)
    args = ap.parse_args(argv)
    frames = [bytes.fromhex(line) for line in sys.stdin.read().split()]
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        sock.bind((args.iface, 0))
    except OSError as exc:
        print(f"cannot send on {args.iface}: {exc.strerror}", file=sys.stderr)
        return 2
    sent = 0
    try:
        for i, frame in enumerate(frames):
            if i and args.interval:
                time.sleep(args.interval)  # pacing between frames, not synchronisation
            sock.send(frame)
            sent += 1
    except OSError as exc:
        print(f"sent {sent}, then frame {sent + 1} failed: {exc.strerror}", file=sys.stderr)
        return 1
    finally:
        sock.close()
    print(f"sent {sent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
