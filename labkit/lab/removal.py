"""Removing a lab wherever it ran: the lab inside each of its hosts, the hosts no other lab
uses, what is left in this kernel, its keys and its record. Lab.down and `labkit down
NAME` (labkit.lab.lab.down) come here, holding the lab's lock."""

from __future__ import annotations

from typing import TYPE_CHECKING

from labkit.errors import LabkitError
from labkit.lab import state, teardown
from labkit.lab.teardown import Removed

if TYPE_CHECKING:
    from labkit.lab.lab import Lab

_HOST_WORDS = {"crashed": "had crashed", "stopped": "had been stopped",
               "failed": "had failed to start", "booting": "was still booting"}


def remove(name: str, lab: Lab) -> Removed:
    """Remove a lab by name wherever it ran (the caller holds its lock): the lab in each of
    its hosts (this machine's kernel or VMs, alike), the hosts no other lab uses, what is
    left in this kernel, its keys and record. Says what was true (a VM that had crashed, a
    lab that was only partly built)."""
    st = state.load(name)
    placement = st.placement if st is not None else lab.placement
    out = Removed(name)
    if st is not None and st.status == "building" and not st.builder_alive:
        out.notes.append("it was only partly built (its `up` had been interrupted)")
    for part in placement.parts:
        host = lab.host_for(part)
        status = host.status()
        if status is None:  # gone already, with all it held
            continue
        failed = ""
        if status == "running":
            try:  # the features' teardown, processes and namespaces, next to that kernel
                out.merge(Removed(**host.call(None, "labkit.lab.guest:guest_down", name,
                                              timeout=120)))
            except LabkitError as exc:
                failed = (f"the lab inside {part.label} could not be taken down cleanly "
                          f"({exc.message})")
        else:
            out.notes.append(f"its VM {part.vm} {_HOST_WORDS.get(status, status)}")
        released = host.release(name)
        if failed:
            out.notes.append(failed + ("; the VM is stopped anyway" if released else ""))
        if released:
            out.vms.append(part.vm)
        elif released is False:
            out.notes.append(f"VM {part.vm} stays up for other labs")
    # Anything named like the lab in this kernel goes too (nothing is left unless
    # something went wrong: a part whose removal failed, a lab without a record).
    local = teardown.remove(name)
    out.merge(local)
    out.record = out.record or local.record or st is not None
    state.remove(name)
    return out
