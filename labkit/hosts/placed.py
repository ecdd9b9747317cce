"""Which LabHost holds a placed part of a lab: this machine's kernel (LocalHost) for the
part on kernel THIS_KERNEL, else a VM with the part's kernel (VmHost).

The lab layer asks here for the host of every part of its placement (a name and a kernel)
and then treats them all alike, so one more kind of host is one more factory, not a change
above this layer: the tests run the lab API on a test-only host this way
(tests/host/test_labhost_jail.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from labkit.hosts.host import THIS_KERNEL, LabHost
from labkit.hosts.local import LocalHost
from labkit.hosts.vmhost import VmHost

Factory = Callable[..., LabHost]
_factory: Factory = VmHost
_this_kernel = LocalHost()


def host_for(name: str, kernel: str, modules: Sequence[str] = (), *,
             append: Sequence[str] = (), preload: Sequence[str] = ()) -> LabHost:
    """The host of the part `name` (a VM name) with `kernel`: modules to load there,
    kernel options for a lab's own VM (which labs use it: labkit.hosts.users), and modules
    the kernel would autoload, worth loading with `modules` when a VM boots (preload). The
    part on THIS_KERNEL is this process's own kernel, whatever the factory."""
    if kernel == THIS_KERNEL:
        return _this_kernel
    return _factory(name, kernel, modules, append=append, preload=preload)


def this_kernel() -> LabHost:
    """The host of the kernel this process runs on (where a lab's guest side builds)."""
    return _this_kernel


def use(factory: Factory) -> Factory:
    """Make parts on other kernels be held by hosts from `factory` (same arguments as
    host_for); returns the factory it replaces, to put back."""
    global _factory
    previous, _factory = _factory, factory
    return previous
