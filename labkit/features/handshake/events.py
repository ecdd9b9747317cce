"""What a handshake daemon tells the world: an event log (one JSON object a line, appended
as things happen, so `labkit handshake trace` can follow it) and a status file (counters,
rewritten atomically on every change). Neither ever holds key material: events name key
serials, identities, certificate subjects, ciphers and errnos.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from typing import Any

from labkit.base.files import write_private

MAX_EVENT_LOG = 4 << 20  # bytes: a longer log starts over (the status keeps the counts)


def errno_name(code: int) -> str:
    return errno.errorcode.get(code, str(code)) if code else "OK"


class EventLog:
    def __init__(self, path: str, node: str) -> None:
        self.path = path
        self.node = node
        self._lock = threading.Lock()
        self._seq = 0

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            self._seq += 1
            event = {"seq": self._seq, "time": round(time.time(), 6), "node": self.node,
                     "event": kind, **fields}
            line = (json.dumps(event, sort_keys=True, default=str) + "\n").encode()
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(self.path, flags, 0o600)
            try:
                if os.fstat(fd).st_size > MAX_EVENT_LOG:
                    os.ftruncate(fd, 0)
                os.write(fd, line)
            finally:
                os.close(fd)
            return event


def read_events(path: str, since: int = 0) -> list[dict[str, Any]]:
    """Events with seq > since (a log that started over is read from its start)."""
    try:
        with open(path) as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line being written
        if event.get("seq", 0) > since:
            out.append(event)
    return out


class Status:
    """The daemon's counters, saved to a file whenever they change."""

    def __init__(self, path: str, **fixed: Any) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.data: dict[str, Any] = {
            **fixed, "pid": os.getpid(), "started": time.time(), "state": "starting",
            "ready": 0, "accepted": 0, "done": 0, "failed": {}, "in_flight": 0,
            "done_errors": 0, "stalled": False, "latency_ms": [], "fds": 0,
        }

    def update(self, **changes: Any) -> None:
        with self._lock:
            self.data.update(changes)
            self._save()

    def add(self, key: str, amount: int = 1) -> None:
        with self._lock:
            self.data[key] = self.data.get(key, 0) + amount
            self._save()

    def failed(self, code: int) -> None:
        with self._lock:
            name = errno_name(code)
            self.data["failed"][name] = self.data["failed"].get(name, 0) + 1
            self._save()

    def latency(self, ms: float, keep: int = 1000) -> None:
        with self._lock:
            self.data["latency_ms"] = (self.data["latency_ms"] + [round(ms, 3)])[-keep:]
            self._save()

    def _save(self) -> None:
        self.data["fds"] = _fd_count()
        self.data["updated"] = time.time()
        write_private(self.path, json.dumps(self.data, sort_keys=True), atomic=True)


def _fd_count() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def read_status(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as fh:
            return dict(json.load(fh))
    except (FileNotFoundError, ValueError):
        return None
