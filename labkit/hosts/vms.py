"""VMs by name, for `labkit vm ...` and the doctor: boot one for a command, keep one in
the background, run commands in it, stop it, list them, and say whether they get KVM.

A lab never comes here: it reaches its VMs through its hosts (labkit.hosts.host.LabHost).
This is the one door into labkit.hosts.vm's VM lifecycle for the layers above.
"""

from __future__ import annotations

from typing import Any

from labkit.hosts.vm.persistent import VmInfo, exec_, exec_pty, info, list_vms, start, stop
from labkit.hosts.vm.session import Completed

__all__ = ["Completed", "VmInfo", "accel", "exec_", "exec_pty", "info", "list_vms", "run",
           "start", "stop"]


def run(*args: Any, **kwargs: Any) -> Any:
    """A one-shot VM: boot, run the command, power off (labkit.hosts.vm.oneshot.run)."""
    from labkit.hosts.vm.oneshot import run as oneshot

    return oneshot(*args, **kwargs)


def accel(image: str, reprobe: bool = False) -> Any:
    """KVM or TCG for a kernel image, and why (probed once, then cached)."""
    from labkit.hosts.vm import kvm
    from labkit.hosts.vm.vng import find_tools

    return kvm.choose(image, find_tools().qemu, reprobe=reprobe)
