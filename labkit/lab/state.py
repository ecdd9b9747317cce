"""The per-lab state file: what was made, where the lab runs, which processes it owns, and
the one state machine every verb reads to say what is true about a lab.

Written before the first namespace or VM is created (status "building", with the pid of
the process building it), so even a SIGKILL mid-`up` leaves a record; namespaces are also
found by name prefix, so a lost state file still cannot hide a leftover. Mode 0600:
feature sections may hold key material. Every name is checked (labkit.base.names) before
it becomes a path here.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from labkit.base import procs
from labkit.base.files import STATE, FileRefused, private_dir, read_bounded, write_private
from labkit.base.names import check_lab
from labkit.base.wait import Timeout, wait_until
from labkit.errors import NotRootError, UsageError
from labkit.lab.placement import Placement

STATE_DIR = os.environ.get("LABKIT_STATE_DIR", "/run/labkit/labs")


@dataclass
class LabState:
    name: str
    topology: str = ""
    topology_text: str = ""  # what was built, even if the file changes or goes away
    topology_wire: str = ""  # in a VM: the same as read (labkit.topology.loader.wire)
    status: str = "building"  # building | up
    created: float = field(default_factory=time.time)
    builder: dict[str, int] = field(default_factory=dict)  # {"pid", "starttime"} of `up`
    namespaces: list[str] = field(default_factory=list)
    processes: list[dict[str, Any]] = field(default_factory=list)
    placement: Placement = field(default_factory=Placement)
    here: list[str] | None = None  # in a VM of a lab spanning kernels: this kernel's nodes
    features: dict[str, Any] = field(default_factory=dict)

    def save(self) -> None:
        private_dir(STATE_DIR)
        data = asdict(self)
        data["placement"] = self.placement.to_json()
        write_private(state_path(self.name), json.dumps(data, indent=1), atomic=True)

    def mark_builder(self) -> None:
        """Record that this process is building the lab (a dead builder = interrupted up)."""
        self.builder = {"pid": os.getpid(), "starttime": procs.starttime(os.getpid()) or 0}

    @property
    def builder_alive(self) -> bool:
        pid = self.builder.get("pid")
        return bool(pid) and procs.alive(int(pid), self.builder.get("starttime"))


def state_path(name: str) -> str:
    return os.path.join(STATE_DIR, f"{check_lab(name)}.json")


def _not_root() -> NotRootError:
    return NotRootError("labkit's lab state is readable by root only.",
                        hint="Run it with sudo, e.g. `sudo .venv/bin/labkit status`.")


def load(name: str) -> LabState | None:
    try:
        data = json.loads(read_bounded(state_path(name), STATE))
    except FileRefused as exc:
        if exc.missing:
            return None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise _not_root() from None
        raise
    except (json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    known = LabState.__dataclass_fields__
    fields = {k: v for k, v in data.items() if k in known}
    # labkit 0.1 kept the placement as {"kind": "vm", "vm": ..., "kernel": ...} in "host"
    fields["placement"] = Placement.from_json(data.get("placement", data.get("host")))
    return LabState(**fields)


def remove(name: str) -> None:
    """Remove the state file and every file named after the lab (keys, captures), not the
    lock, which the caller still holds."""
    check_lab(name)
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
    private_dir(STATE_DIR)
    return os.path.join(STATE_DIR, f"{check_lab(name)}.{what}")


def names() -> list[str]:
    try:
        # LAB.json only: a lab's other records (LAB.tipc.key, LAB.trace) are not labs
        return sorted(f[:-5] for f in os.listdir(STATE_DIR)
                      if f.endswith(".json") and "." not in f[:-5])
    except FileNotFoundError:
        return []
    except PermissionError:
        raise _not_root() from None


# per process and thread: the labs whose lock it holds
_holding: dict[tuple[int, int], set[str]] = {}


def holding(name: str) -> bool:
    """Does this thread hold the lab's lock already (an `up` or `down` of this process)?"""
    return name in _holding.get((os.getpid(), threading.get_ident()), ())


@contextlib.contextmanager
def locked(name: str, timeout: float = 30.0) -> Iterator[None]:
    """One lifecycle operation per lab at a time, wherever the lab runs; a killed holder
    releases it at once. The thread that holds it may take it again (a lab on this
    machine's kernel is built and removed by the same calls as one in a VM, which take
    the lock of the kernel they run next to: here, the one its `up` or `down` holds)."""
    held = _holding.setdefault((os.getpid(), threading.get_ident()), set())
    if check_lab(name) in held:
        yield
        return
    path = os.path.join(private_dir(STATE_DIR), f"{name}.lock")

    def take() -> int | None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            return None
        # The holder before us may have removed the file: a lock on an unlinked inode
        # excludes nobody, so take the lock again on the file that is there now.
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = -1
        if current == os.fstat(fd).st_ino:
            return fd
        os.close(fd)
        return None

    try:
        fd = wait_until(take, timeout, f"lab '{name}' to be free", interval=0.1)
    except Timeout:
        raise UsageError(
            f"lab '{name}' is busy: another labkit process is bringing it up or down.",
            hint="Wait for it to finish, or stop that process.") from None
    held.add(name)
    try:
        try:
            yield
        finally:
            held.discard(name)
            if not os.path.exists(state_path(name)):  # no lab left: no lock file either
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Condition:
    """What is true about a lab right now, in one word and one sentence for the user."""

    name: str
    word: str  # down | up | building | interrupted | broken | leftover
    sentence: str
    state: LabState | None = None


def condition(name: str, namespaces: list[str] | None = None) -> Condition:
    """The lab's condition from its record, its builder and the hosts it runs on.

    `namespaces`: the lab's namespaces in this kernel, if the caller already listed them.
    """
    st = load(name)
    spaces = namespaces if namespaces is not None else []
    if st is None:
        if spaces:
            return Condition(name, "leftover", f"lab '{name}' has {len(spaces)} leftover "
                             "namespaces and no record; `labkit down` removes them.")
        return Condition(name, "down", f"lab '{name}' is not up.")
    if st.status == "building":
        if st.builder_alive:
            return Condition(name, "building", f"lab '{name}' is being built by labkit "
                             f"process {st.builder['pid']}.", st)
        return Condition(name, "interrupted", f"lab '{name}' is partly built: the `up` that "
                         "built it was interrupted. Remove it with `labkit down "
                         f"{name}`.", st)
    from labkit.hosts import placed

    seen = {p.vm: placed.host_for(p.vm, p.kernel).status() for p in st.placement.parts}
    gone = [vm for vm, status in seen.items() if status != "running"]
    if gone:
        what = ", ".join(f"{vm} ({seen[vm] or 'gone'})" for vm in gone)
        return Condition(name, "broken", f"lab '{name}' is broken: its VM {what} is not "
                         f"running, and the lab went with it. `labkit down {name}` "
                         "removes what is left.", st)
    return Condition(name, "up", f"lab '{name}' is up on {st.placement.describe()}.", st)


def labs_using(vm: str, exclude: str, vm_started: float | None) -> list[str]:
    """Labs (other than `exclude`) that use this boot of VM `vm`: a VmHost asks before it
    stops its VM (labkit.hosts.vmhost.Users)."""
    out = []
    for other in names():
        if other == exclude:
            continue
        st = load(other)
        if st is not None and any(p.vm == vm for p in st.placement.vms) \
                and not from_an_earlier_boot(other, st.status, vm_started, st.builder_alive):
            out.append(other)
    return out


def from_an_earlier_boot(lab: str, status: str, vm_started: float | None,
                         builder_alive: bool = False) -> bool:
    """A lab whose record was last written before this boot of the VM began (its
    namespaces died with that VM) does not hold this one up: such a stale record once kept
    a test session's VM running for hours. A lab still building counts while its `up`
    process lives (it may be the one booting the VM); one whose `up` was killed before
    this boot (a CI run cut off mid-test) held the next run's VM up, so it does not."""
    if vm_started is None or status not in ("up", "building"):
        return False
    if status == "building" and builder_alive:
        return False
    try:
        return os.stat(state_path(lab)).st_mtime < vm_started
    except OSError:
        return False
