"""Waiting on a condition with a deadline: the one polling loop of labkit.

A fixed sleep either wastes time or is too short on a slow (emulated) machine; polling a
condition until a deadline is neither. Every "wait until X" in labkit goes through here,
so the timeout message always says what was awaited and for how long.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from labkit.errors import LabkitError

T = TypeVar("T")

# A condition that is itself costly (a subprocess, a netlink dump: ~0.2 s each in a TCG
# guest, where a Python step costs ~35x) is not asked again sooner than DUTY times its own
# cost: a long wait then spends at most 1/(1+DUTY) of a CPU on asking, instead of all of
# it, and a cheap condition is still asked every `interval`. The pause stays under
# MAX_PAUSE, so a wait ends at most that long after its condition came true.
DUTY = 3.0
MAX_PAUSE = 1.0


def _pause(interval: float, took: float, left: float) -> None:
    pause = max(interval, min(DUTY * took, MAX_PAUSE))
    time.sleep(max(0.0, min(pause, left)))


class Timeout(LabkitError):
    """What was awaited did not happen in time; the message says what and how long."""


def wait_until(condition: Callable[[], T], timeout: float, what: str, *,
               interval: float = 0.05, hint: str = "",
               detail: Callable[[], str] | None = None) -> T:
    """Call condition() until it returns something truthy; return that value.

    Raises Timeout after `timeout` seconds, naming `what` (e.g. "the TIPC links to come
    up") and, if given, detail() at that moment (e.g. which links are still down).
    """
    deadline = time.monotonic() + timeout
    while True:
        asked = time.monotonic()
        value = condition()
        if value:
            return value
        now = time.monotonic()
        left = deadline - now
        if left <= 0:
            extra = detail() if detail is not None else ""
            raise Timeout(f"timed out after {timeout:g} s waiting for {what}"
                          + (f": {extra}" if extra else "") + ".", hint=hint)
        _pause(interval, now - asked, left)


def poll(condition: Callable[[], T], timeout: float, *, interval: float = 0.05) -> T | None:
    """Like wait_until, but returns the last (falsy) value at the deadline instead of raising:
    for callers that judge the outcome themselves (a verification's evidence)."""
    deadline = time.monotonic() + timeout
    while True:
        asked = time.monotonic()
        value = condition()
        now = time.monotonic()
        if value or now >= deadline:
            return value
        _pause(interval, now - asked, deadline - now)
