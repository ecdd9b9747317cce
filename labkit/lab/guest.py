"""A lab's part in a kernel that is not this process's (a VM), driven by calls: the guest
daemon runs these @remote functions, which rebuild the Lab there and hand it to
labkit.lab.deploy, so that a lab in a VM is built by exactly the code that builds a local
one. They keep the guest's own lock and lab record."""

from __future__ import annotations

from typing import Any

from labkit.errors import LabkitError
from labkit.hosts.rpc import remote
from labkit.lab import state
from labkit.lab.deploy import build_here, remove_here, wait_here
from labkit.lab.lab import Lab
from labkit.lab.placement import Placement
from labkit.lab.span import Span


@remote
def guest_up(topo_text: str, path: str, here: list[str] | None,
             placement: dict[str, Any], me: str | None = None,
             peers: dict[str, str] | None = None,
             prepared: dict[str, Any] | None = None,
             topo_wire: str | None = None) -> dict[str, Any]:
    """Build this VM's part of a lab (not waiting for features: see guest_wait).

    here: this VM's nodes when the lab spans VMs (me: this VM, peers: every VM's
    backplane address), None when the whole lab is in this VM. topo_wire: the topology
    as the host read it (labkit.topology.loader.wire), so that this guest reads no YAML.
    """
    from labkit.topology import loader

    topo = (loader.loads_wire(topo_wire, topo_text, path) if topo_wire
            else loader.loads(topo_text, path))
    where = Placement.from_json(placement)
    if here is None:  # the whole lab is in this VM: every node is this kernel's
        here = list(topo.nodes)
    lab = Lab(topo, placement=where, here=here)
    lab.prepared = prepared or {}
    span = None
    if me is not None:
        span = Span(topo.name, me, {n: p.vm for p in where.vms for n in p.nodes}, peers or {})
    # The part on this machine's kernel is built in the process whose `up` holds the
    # lab's lock and record: it goes into that record, which that `up` finishes.
    nested = state.holding(topo.name)
    with state.locked(topo.name):
        st = state.load(topo.name) if nested else None
        if st is None:
            st = state.LabState(name=topo.name, topology=path, topology_text=topo_text,
                                topology_wire=topo_wire or "", placement=Placement(),
                                here=here)
            st.mark_builder()
            st.save()
        try:
            build_here(lab, st, span=span)
        except BaseException:
            remove_here(topo.name, lab)
            raise
        if not nested:
            st.status, st.builder = "up", {}
            st.save()
    return {"namespaces": st.namespaces, "features": st.features}


@remote
def guest_wait(lab: Lab) -> None:
    wait_here(lab)


@remote
def guest_down(name: str) -> dict[str, Any]:
    with state.locked(name):
        removed = remove_here(name, recorded(name))
    return removed.to_json()


def recorded(name: str) -> Lab | None:
    """The lab as its record in this kernel describes it, or None (no record, or one whose
    topology no longer loads): its features' teardown hooks need it."""
    st = state.load(name)
    if st is None or not st.topology_text:
        return None
    try:
        return Lab.from_state(st)
    except LabkitError:
        return None
