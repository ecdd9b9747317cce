"""Persistent VMs as records: names, where each one's state lives (/run/labkit/vm/NAME/), what
state.json says corrected by reality, the list, and the lock that serialises deciding to
start, reuse or stop one."""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from labkit.base import files, procs
from labkit.errors import UsageError
from labkit.hosts.vm import paths

DEFAULT_NAME = "default"
# Bound on waiting for a stopped VM's zombies to be reaped: past it they hold nothing but
# their pids (an init that never reaps), and `stop` goes on.
STOP_REAPED = 10.0
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
LIVE = ("booting", "running")


@dataclass
class VmInfo:
    name: str
    status: str  # booting | running | stopped | crashed | failed
    kernel: str = ""
    kernel_version: str = ""
    accel: str = ""
    memory: str = ""
    cpus: int | None = None
    forwards: list[str] = field(default_factory=list)
    pid: int | None = None
    started_at: float | None = None
    reason: str = ""
    state_dir: str = ""
    backplane_address: str = ""  # on the lab VMs' private network, if it has a NIC there

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise UsageError(
            f"Invalid VM name {name!r}.",
            hint="Use 1-32 characters: lowercase letters, digits, '-' and '_', "
            "starting with a letter or digit.",
        )
    return name


def parse_forward(spec: str) -> tuple[int, int]:
    """HOSTPORT:GUESTPORT, or a single PORT for the same number on both sides."""
    host, _, guest = spec.partition(":")
    try:
        h, g = int(host), int(guest or host)
    except ValueError:
        h = g = 0
    if not (0 < h < 65536 and 0 < g < 65536):
        raise UsageError(
            f"Invalid port forward {spec!r}.",
            hint="Write HOSTPORT:GUESTPORT, e.g. `--forward 8888:8888`.",
        )
    return h, g


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """Deciding to start, reuse or stop a shared VM happens one process at a time."""
    check_name(name)
    root = paths.state_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def info(name: str) -> VmInfo | None:
    """The VM's current info, or None if there is no such VM."""
    state = _dir(name)
    return _info(state) if state.is_dir() else None


def _dir(name: str) -> Path:
    return paths.state_dir() / check_name(name)



def list_vms() -> list[VmInfo]:
    root = paths.state_dir()
    if not root.is_dir():
        return []
    return [_info(d) for d in sorted(root.iterdir())
            if d.is_dir() and NAME_RE.fullmatch(d.name)]


def _require(state: Path, name: str) -> VmInfo:
    if not state.is_dir():
        raise UsageError(
            f"There is no VM named {name}.",
            hint="See `labkit vm list`; start one with `labkit vm start NAME`.",
        )
    return _info(state)


def state_json(state: Path) -> dict[str, Any]:
    """A VM's state.json as a dict; {} when it is missing, unreadable or not an object."""
    try:
        data = json.loads(files.read_bounded(state / "state.json", files.STATE))
    except (OSError, ValueError, RecursionError, files.FileRefused):
        return {}
    return data if isinstance(data, dict) else {}


def _info(state: Path) -> VmInfo:
    """state.json, corrected by reality: a live status with a dead supervisor is a crash."""
    data = state_json(state)
    info = VmInfo(
        name=state.name, status=str(data.get("status", "crashed")),
        kernel=str(data.get("kernel", "")), kernel_version=str(data.get("kernel_version", "")),
        accel=str(data.get("accel", "")), memory=str(data.get("memory", "")),
        cpus=data.get("cpus"), forwards=list(data.get("forwards", [])), pid=data.get("pid"),
        started_at=data.get("started_at"), reason=str(data.get("reason", "")),
        state_dir=str(state),
        backplane_address=str((data.get("backplane") or {}).get("address", "")),
    )
    started = data.get("starttime")
    if info.status in LIVE and data.get("pid") and not procs.alive(data["pid"], started):
        info.status, info.reason = "crashed", "its supervisor process is gone"
    if not data:
        info.reason = "no state recorded (interrupted start?)"
    return info


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " / ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "no details recorded"
