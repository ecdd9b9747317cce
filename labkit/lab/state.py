"""The per-lab state file: what was made, where the lab runs, which processes it owns.

Written before the first namespace is created (status "building"), so even a SIGKILL
mid-`up` leaves a record; namespaces are also found by name prefix, so a lost state file
still cannot hide a leftover. Mode 0600: feature sections may hold key material.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from labkit.errors import NotRootError, UsageError

STATE_DIR = os.environ.get("LABKIT_STATE_DIR", "/run/labkit/labs")


@dataclass
class LabState:
    name: str
    topology: str = ""
    topology_text: str = ""  # what was built, even if the file changes or goes away
    status: str = "building"  # building | up | failed
    created: float = field(default_factory=time.time)
    namespaces: list[str] = field(default_factory=list)
    processes: list[dict[str, Any]] = field(default_factory=list)
    host: dict[str, Any] = field(default_factory=lambda: {"kind": "local"})
    features: dict[str, Any] = field(default_factory=dict)

    def save(self) -> None:
        os.makedirs(STATE_DIR, mode=0o700, exist_ok=True)
        path = state_path(self.name)
        tmp = f"{path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(self), fh, indent=1)
        os.replace(tmp, path)


def state_path(name: str) -> str:
    return os.path.join(STATE_DIR, f"{name}.json")


def _not_root() -> NotRootError:
    return NotRootError("labkit's lab state is readable by root only.",
                        hint="Run it with sudo, e.g. `sudo .venv/bin/labkit status`.")


def load(name: str) -> LabState | None:
    try:
        with open(state_path(name)) as fh:
            data = json.load(fh)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    except PermissionError:
        raise _not_root() from None
    known = LabState.__dataclass_fields__
    return LabState(**{k: v for k, v in data.items() if k in known})


def remove(name: str) -> None:
    """Remove the state file and every file named after the lab (keys, captures), not the
    lock, which the caller still holds."""
    try:
        entries = os.listdir(STATE_DIR)
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.startswith(f"{name}.") and entry != f"{name}.lock":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(STATE_DIR, entry))


def secret_path(name: str, what: str) -> str:
    """Where a lab keeps a secret (mode 0600, removed at down)."""
    os.makedirs(STATE_DIR, mode=0o700, exist_ok=True)
    return os.path.join(STATE_DIR, f"{name}.{what}")


def names() -> list[str]:
    try:
        return sorted(f[:-5] for f in os.listdir(STATE_DIR) if f.endswith(".json"))
    except FileNotFoundError:
        return []
    except PermissionError:
        raise _not_root() from None


@contextlib.contextmanager
def locked(name: str, timeout: float = 30.0) -> Iterator[None]:
    """One lifecycle operation per lab at a time; a killed holder releases it at once."""
    os.makedirs(STATE_DIR, mode=0o700, exist_ok=True)
    path = os.path.join(STATE_DIR, f"{name}.lock")
    deadline = time.monotonic() + timeout
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            if time.monotonic() > deadline:
                raise UsageError(
                    f"lab '{name}' is busy: another labkit process is bringing it up or "
                    "down.", hint="Wait for it to finish, or stop that process.") from None
            time.sleep(0.1)
            continue
        # The holder before us may have removed the file: a lock on an unlinked inode
        # excludes nobody, so take the lock again on the file that is there now.
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = -1
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)
    try:
        try:
            yield
        finally:
            if not os.path.exists(state_path(name)):  # no lab left: no lock file either
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(STATE_DIR, f"{name}.lock"))
    finally:
        os.close(fd)
