"""A lab's life next to its kernel: build this kernel's part, switch features on, wait for
them, and take it all down again.

Lab.up reaches every part of a lab alike: it calls labkit.lab.guest's wrappers through
the part's host, which run them next to that kernel (in-process for this machine's kernel,
in the guest daemon of a VM), so that a lab in a VM is built by exactly the code that
builds a local one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING

from labkit import features
from labkit.lab import state, teardown
from labkit.lab.build import Builder, Progress
from labkit.lab.span import Span

if TYPE_CHECKING:
    from labkit.lab.lab import Lab


def _quiet(done: int, total: int, what: str) -> None:
    pass


# Who shows the steps of a build that runs in this process (a part on this machine's
# kernel, built through its host's call like any other): set by Lab.up around the call.
_shown_to: ContextVar[Progress | None] = ContextVar("labkit_build_progress", default=None)


@contextlib.contextmanager
def reporting(progress: Progress | None) -> Iterator[None]:
    """Builds in this process during the block report their steps to progress."""
    token = _shown_to.set(progress)
    try:
        yield
    finally:
        _shown_to.reset(token)


def build_here(lab: Lab, st: state.LabState, progress: Progress | None = None,
               span: Span | None = None) -> None:
    """Namespaces, links, addresses, routes, then each feature's setup, for the nodes
    placed in this kernel. The caller removes everything if this raises."""
    progress = progress or _shown_to.get() or _quiet
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


def remove_here(name: str, lab: Lab | None) -> teardown.Removed:
    """Feature teardown hooks (keyrings, modules...) of `lab` (the caller rebuilt it from
    the record, or None without one), then processes and namespaces; the caller holds the
    lock. Works from the record, from namespace names, or both."""
    problems: list[str] = []
    if lab is not None:
        for key, config in lab.topo.features.items():
            try:
                features.get(key).teardown(lab, config)
            except Exception as exc:  # teardown goes on: the namespaces must go
                problems.append(f"{key}: {exc}")
    removed = teardown.remove(name)
    removed.notes += problems
    return removed
