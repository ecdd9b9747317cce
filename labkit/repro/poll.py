"""`python -m labkit.repro.poll --timeout T [--stdout RE] ... -- CMD...`: a scenario's
`wait_for`, run inside the node so that each attempt costs no round trip to a VM.

Runs CMD every --interval seconds until its outcome matches (exit status, stdout and
stderr patterns) or --timeout passes; each attempt is itself bounded. Prints one JSON
document: met, attempts, seconds, and the last attempt's status and output. Standard
library only.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time


def matches(args: argparse.Namespace, code: int, out: str, err: str) -> bool:
    return ((args.status is None or code == args.status)
            and (args.stdout is None or re.search(args.stdout, out, re.M) is not None)
            and (args.stderr is None or re.search(args.stderr, err, re.M) is not None)
            and (args.stdout_absent is None
                 or re.search(args.stdout_absent, out, re.M) is None))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m labkit.repro.poll")
    ap.add_argument("--timeout", type=float, required=True)
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--status", type=int)
    ap.add_argument("--stdout")
    ap.add_argument("--stderr")
    ap.add_argument("--stdout-absent")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    start = time.monotonic()
    deadline = start + args.timeout
    attempts, code, out, err, met = 0, -1, "", "", False
    while True:
        attempts += 1
        left = max(0.1, deadline - time.monotonic())
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=left,
                                  errors="replace")
            code, out, err = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired as exc:
            code, out, err = 124, _text(exc.stdout), _text(exc.stderr)
        except OSError as exc:
            code, out, err = 127, "", f"{cmd[0]}: {exc.strerror}"
        met = matches(args, code, out, err)
        if met or time.monotonic() + args.interval > deadline:
            break
        time.sleep(args.interval)  # the polling period; the deadline bounds the loop
    print(json.dumps({"met": met, "attempts": attempts,
                      "seconds": round(time.monotonic() - start, 3), "status": code,
                      "stdout": out[-20000:], "stderr": err[-20000:]}))
    return 0 if met else 1


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode(errors="replace")


if __name__ == "__main__":
    sys.exit(main())
