"""Which LabHost holds a placed part of a lab: a VM with the part's kernel (VmHost).

The lab layer asks here for the host of each part of its placement (a name and a kernel),
so one more kind of host is one more factory, not a change above this layer: the tests
run the lab API on a test-only host this way (tests/host/test_labhost_jail.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from labkit.hosts.host import LabHost
from labkit.hosts.vmhost import VmHost

Factory = Callable[..., LabHost]
_factory: Factory = VmHost


def host_for(name: str, kernel: str, modules: Sequence[str] = (), *,
             append: Sequence[str] = ()) -> LabHost:
    """The host of the part `name` (a VM name) with `kernel`: modules to load there and
    kernel options for a lab's own VM (which labs use it: labkit.hosts.users)."""
    return _factory(name, kernel, modules, append=append)


def use(factory: Factory) -> Factory:
    """Make parts be held by hosts from `factory` (same arguments as host_for); returns
    the factory it replaces, to put back."""
    global _factory
    previous, _factory = _factory, factory
    return previous
