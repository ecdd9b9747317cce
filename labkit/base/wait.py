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
        value = condition()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            extra = detail() if detail is not None else ""
            raise Timeout(f"timed out after {timeout:g} s waiting for {what}"
                          + (f": {extra}" if extra else "") + ".", hint=hint)
        time.sleep(min(interval, left))


def poll(condition: Callable[[], T], timeout: float, *, interval: float = 0.05) -> T | None:
    """Like wait_until, but returns the last (falsy) value at the deadline instead of raising:
    for callers that judge the outcome themselves (a verification's evidence)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
