"""Phase timestamps of one labkit command, written by the code itself: where a cold `up`
on a VM spends its time (qemu start, kernel, userspace, daemon ready, lab built, features
ready) is measured, not guessed.

Marks are kept in memory (a handful per command); `save` writes them as JSON beside the
lab's record; with LABKIT_TRACE=1 in the environment each mark is also printed on stderr
as it happens.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

_MARKS: list[dict[str, Any]] = []


def _process_start() -> float:
    """When this process started (wall clock): the user's command, not labkit's import."""
    try:
        with open("/proc/self/stat") as fh:
            ticks = int(fh.read().rpartition(")")[2].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time()


T0 = _process_start()


def mark(phase: str, at: float | None = None, **detail: Any) -> None:
    """Record that `phase` was reached at wall time `at` (now by default)."""
    when = time.time() if at is None else at
    entry = {"phase": phase, "t": round(when - T0, 3), **detail}
    _MARKS.append(entry)
    if os.environ.get("LABKIT_TRACE"):
        extra = " ".join(f"{k}={v}" for k, v in detail.items())
        print(f"trace: {entry['t']:8.2f} s  {phase}{'  ' + extra if extra else ''}",
              file=sys.stderr, flush=True)


def marks() -> list[dict[str, Any]]:
    """The phases so far, in time order (seconds since the command started)."""
    return sorted(_MARKS, key=lambda m: m["t"])


def save(path: str) -> None:
    """Write the phases as JSON (nothing when none were marked); never fails the command."""
    if not _MARKS:
        return
    data = {"started": round(T0, 3), "command": sys.argv[1:3], "phases": marks()}
    try:
        with open(path, "w") as fh:
            json.dump(data, fh, indent=1)
            fh.write("\n")
    except OSError:
        pass
