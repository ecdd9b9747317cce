"""Take a TIPC eth link down and up again a bounded number of times.

Each round disables this node's bearer, waits until the peer (--peer-netns) sees the link
down, enables the bearer again and waits until both ends see it up: every round makes
both kernels send link RESET and ACTIVATE messages, which is what a capture on the link
then looks at. Uses iproute2's `tipc` tool; one line per round, then a summary:

    round=1 down=0.4s up=1.2s
    rounds=6 ok
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import reprolib as R


def tipc(args: list[str], netns: str | None = None) -> str:
    argv = (["ip", "netns", "exec", netns] if netns else []) + ["tipc", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def link_up(netns: str | None) -> bool:
    return any(line.rstrip().endswith(": up") for line in tipc(["link", "list"], netns)
               .splitlines() if "broadcast" not in line)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", required=True, help="this node's bearer interface")
    ap.add_argument("--peer-netns", required=True, help="the peer node's namespace")
    ap.add_argument("--rounds", type=int, default=6, choices=range(1, 51), metavar="1-50")
    ap.add_argument("--wait", type=float, default=60, help="seconds per state change")
    args = ap.parse_args()
    bearer = ["media", "eth", "device", args.device]
    try:
        R.wait_until(lambda: link_up(None) and link_up(args.peer_netns), args.wait,
                     "the link to be up before the first round", 0.1)
        for i in range(1, args.rounds + 1):
            start = time.monotonic()
            tipc(["bearer", "disable", *bearer])
            R.wait_until(lambda: not link_up(args.peer_netns), args.wait,
                         f"the peer to see the link down (round {i})", 0.1)
            down = time.monotonic() - start
            tipc(["bearer", "enable", *bearer])
            R.wait_until(lambda: link_up(None) and link_up(args.peer_netns), args.wait,
                         f"the link to come back up (round {i})", 0.1)
            print(f"round={i} down={down:.1f}s up={time.monotonic() - start - down:.1f}s",
                  flush=True)
    except (RuntimeError, TimeoutError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 3
    print(f"rounds={args.rounds} ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
