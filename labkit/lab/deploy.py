"""A lab's life next to its kernel: build this kernel's part, switch features on, wait for
them, and take it all down again.

On a local lab Lab.up calls these in-process (it already holds the lab's lock and state);
in a VM the guest daemon calls the guest_* wrappers, which keep the guest's own lock and
state, so that a lab in a VM is built by exactly the code that builds a local one.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from labkit import features
from labkit.errors import LabkitError
from labkit.hosts.rpc import remote
from labkit.lab import state, teardown
from labkit.lab.build import Builder, Progress
from labkit.lab.placement import Placement
from labkit.lab.span import Span

if TYPE_CHECKING:
    from labkit.lab.lab import Lab


def _quiet(done: int, total: int, what: str) -> None:
    pass


def build_here(lab: Lab, st: state.LabState, progress: Progress | None = None,
               span: Span | None = None) -> None:
    """Namespaces, links, addresses, routes, then each feature's setup, for the nodes
    placed in this kernel. The caller removes everything if this raises."""
    progress = progress or _quiet
    _more_files()
    Builder(lab.topo, st, progress, here=lab.here_nodes, span=span).run()
    for key, config in lab.topo.features.items():
        progress(1, 1, key)
        st.features[key] = features.get(key).setup(lab, config) or {}
        st.save()


def _more_files() -> None:
    """Building holds a netlink socket and a namespace fd per node: at the usual soft
    limit of 1024 descriptors a lab of a few hundred nodes would fail mid-way. Raise the
    soft limit to the hard one (the kernel's per-process ceiling we may use)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def wait_here(lab: Lab) -> None:
    for key, config in lab.topo.features.items():
        features.get(key).wait_ready(lab, config)


def remove_here(name: str) -> teardown.Removed:
    """Feature teardown hooks (keyrings, modules...), then processes and namespaces; the
    caller holds the lock. Works from the record, from namespace names, or both."""
    st = state.load(name)
    problems: list[str] = []
    if st is not None and st.topology_text:
        from labkit.lab.lab import Lab

        with contextlib.suppress(LabkitError):
            lab = Lab.from_state(st)
            for key, config in lab.topo.features.items():
                try:
                    features.get(key).teardown(lab, config)
                except Exception as exc:  # teardown goes on: the namespaces must go
                    problems.append(f"{key}: {exc}")
    removed = teardown.remove(name)
    removed.notes += problems
    return removed


# -- in a VM: called by the guest daemon ---------------------------------------------------


@remote
def guest_up(topo_text: str, path: str, here: list[str] | None,
             placement: dict[str, Any], me: str | None = None,
             peers: dict[str, str] | None = None,
             prepared: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build this VM's part of a lab (not waiting for features: see guest_wait).

    here: this VM's nodes when the lab spans VMs (me: this VM, peers: every VM's
    backplane address), None when the whole lab is in this VM.
    """
    from labkit.lab.lab import Lab
    from labkit.topology import loader

    topo = loader.loads(topo_text, path)
    where = Placement.from_json(placement)
    if here is None:  # the whole lab is in this VM: every node is this kernel's
        here = list(topo.nodes)
    lab = Lab(topo, placement=where, here=here)
    lab.prepared = prepared or {}
    span = None
    if me is not None:
        span = Span(topo.name, me, {n: p.vm for p in where.vms for n in p.nodes}, peers or {})
    with state.locked(topo.name):
        st = state.LabState(name=topo.name, topology=path, topology_text=topo_text,
                            placement=Placement(), here=here)
        st.mark_builder()
        st.save()
        try:
            build_here(lab, st, span=span)
        except BaseException:
            remove_here(topo.name)
            raise
        st.status, st.builder = "up", {}
        st.save()
    return {"namespaces": st.namespaces, "features": st.features}


@remote
def guest_wait(lab: Lab) -> None:
    wait_here(lab)


@remote
def guest_down(name: str) -> dict[str, Any]:
    with state.locked(name):
        removed = remove_here(name)
    return removed.to_json()
