"""Remove a lab completely: its processes, its namespaces (and with them every link and
bridge), and its state. Works from the state file, from the name prefix, or both, so a
lab whose `up` was killed at any point still goes away; running it twice is harmless.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from labkit.base import netns, procs
from labkit.lab import names, state


@dataclass
class Removed:
    """What `down` took away, wherever the lab ran."""

    lab: str
    namespaces: list[str] = field(default_factory=list)
    processes: list[int] = field(default_factory=list)
    vms: list[str] = field(default_factory=list)  # VMs stopped with the lab
    record: bool = False  # a state file was there
    notes: list[str] = field(default_factory=list)  # things worth saying (a crashed VM...)

    @property
    def anything(self) -> bool:
        return bool(self.namespaces or self.processes or self.vms or self.record)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def merge(self, other: Removed) -> None:
        self.namespaces += other.namespaces
        self.processes += other.processes
        self.notes += other.notes


def lab_namespaces(lab: str) -> list[str]:
    found = set(netns.list_names(names.lab_prefix(lab)))
    st = state.load(lab)
    if st is not None:
        found.update(ns for ns in st.namespaces if netns.exists(ns))
    return sorted(found)


def remove(lab: str) -> Removed:
    """The removal itself; the caller holds the lab's lock."""
    out = Removed(lab)
    spaces = lab_namespaces(lab)
    inodes = {i for i in (netns.inode(ns) for ns in spaces) if i is not None}
    for _ in range(3):  # a process may fork into the namespace while we stop the others
        pids = netns.pids_in(inodes) if inodes else []
        if not pids:
            break
        out.processes += procs.stop(pids)
    out.namespaces = [ns for ns in spaces if netns.delete(ns)]
    # A process that opened a namespace before the unmount (`ip netns exec` between its open
    # and its setns) enters it after the scans above and would keep it alive, unnamed: the
    # namespace is still found by its inode.
    if inodes and (late := netns.pids_in(inodes)):
        out.processes += procs.stop(late)
    out.record = state.load(lab) is not None
    state.remove(lab)
    return out


def all_labs() -> list[str]:
    """Every lab with a state file or a namespace named like one of ours."""
    found = set(state.names())
    for ns in netns.list_names(names.PREFIX):
        lab = names.lab_of(ns)
        if lab:
            found.add(lab)
    return sorted(found)
