"""Remove a lab completely: its processes, its namespaces (and with them every link and
bridge), and its state. Works from the state file, from the name prefix, or both, so a
lab whose `up` was killed at any point still goes away; running it twice is harmless.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field

from labkit.lab import names, netns, state


@dataclass
class Removed:
    lab: str
    namespaces: list[str] = field(default_factory=list)
    processes: list[int] = field(default_factory=list)

    @property
    def anything(self) -> bool:
        return bool(self.namespaces or self.processes)


def lab_namespaces(lab: str) -> list[str]:
    found = set(netns.list_names(names.lab_prefix(lab)))
    st = state.load(lab)
    if st is not None:
        found.update(ns for ns in st.namespaces if netns.exists(ns))
    return sorted(found)


def stop_processes(pids: list[int], grace: float = 2.0) -> list[int]:
    """SIGTERM, then SIGKILL what is still alive after the grace period; reap our children."""
    alive = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            alive.append(pid)
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        _reap(alive)
        alive = [pid for pid in alive if _alive(pid)]
        if alive:
            time.sleep(0.05)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.01 if alive else 0)
    _reap(pids)
    return pids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _reap(pids: list[int]) -> None:
    """Collect the ones that are our own children, so they leave no zombie."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def remove(lab: str) -> Removed:
    """The removal itself; the caller holds the lab's lock."""
    out = Removed(lab)
    spaces = lab_namespaces(lab)
    inodes = {i for i in (netns.inode(ns) for ns in spaces) if i is not None}
    for _ in range(3):  # a process may fork into the namespace while we stop the others
        pids = netns.pids_in(inodes) if inodes else []
        if not pids:
            break
        out.processes += stop_processes(pids)
    out.namespaces = [ns for ns in spaces if netns.delete(ns)]
    state.remove(lab)
    return out


def down(lab: str) -> Removed:
    with state.locked(lab):
        return remove(lab)


def all_labs() -> list[str]:
    """Every lab with a state file or a namespace named like one of ours."""
    found = set(state.names())
    for ns in netns.list_names(names.PREFIX):
        lab = names.lab_of(ns)
        if lab:
            found.add(lab)
    return sorted(found)
