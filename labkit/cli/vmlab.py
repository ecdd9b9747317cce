"""Labs inside a persistent VM: `labkit up FILE --vm KERNEL` and its `down`."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from labkit.cli.forward import guest_labkit_argv
from labkit.errors import UsageError
from labkit.lab import state

if TYPE_CHECKING:
    from labkit.lab.lab import Lab


def vm_name_for(lab: str) -> str:
    return f"lab-{lab.lower()}"  # VM names are lowercase


def up_in_vm(lab: Lab, file: str, kernel: str, json: bool) -> int:
    from labkit.hosts import vm

    if state.load(lab.name) is not None:
        raise UsageError(f"a lab named '{lab.name}' is already up.",
                         hint=f"Bring it down first with `labkit down {lab.name}`.")
    name = vm_name_for(lab.name)
    # Recorded first, so `labkit down NAME` finds the VM even if this process dies.
    st = state.LabState(name=lab.name, topology=os.path.abspath(file),
                        topology_text=lab.topo.source, status="building",
                        host={"kind": "vm", "vm": name, "kernel": kernel})
    st.save()
    try:
        vm.start(name, kernel=kernel)
        argv = ["up", os.path.abspath(file)] + (["--json"] if json else [])
        rc = _rc(vm.exec_(name, guest_labkit_argv(argv)))
    except BaseException:
        _undo(name, lab.name)
        raise
    if rc != 0:
        _undo(name, lab.name)
        return rc
    st.status = "up"
    st.save()
    return 0


def _undo(vm_name: str, lab: str) -> None:
    from labkit.hosts import vm

    try:
        vm.stop(vm_name)
    finally:
        state.remove(lab)


def down_in_vm(lab: str, vm_name: str) -> None:
    from labkit.hosts import vm

    try:
        vm.exec_(vm_name, guest_labkit_argv(["down", lab]))
    finally:
        vm.stop(vm_name)
        state.remove(lab)


def _rc(result: object) -> int:
    return result if isinstance(result, int) else int(getattr(result, "returncode", 1))
