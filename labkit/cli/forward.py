"""Labs that live in a VM: run the same labkit command line inside that VM.

`labkit up FILE --vm` records on the host that lab NAME lives in VM V; every later verb
naming that lab calls forward() first, so the user never repeats where the lab lives.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

from labkit.lab import state

if TYPE_CHECKING:
    from labkit.lab.lab import Lab


def vm_of(lab: str) -> str | None:
    st = state.load(lab)
    if st is not None and st.host.get("kind") == "vm":
        return str(st.host["vm"])
    return None


def guest_labkit_argv(args: list[str]) -> list[str]:
    """labkit inside the guest: the same interpreter path, since the host filesystem
    (and with it this venv) is shared with the VM."""
    return [sys.executable, "-m", "labkit.cli.main", *args]


def forward(lab: str, argv: list[str] | None = None) -> int | None:
    """Run this command in the lab's VM and return its exit status; None for local labs."""
    vm = vm_of(lab)
    if vm is None:
        return None
    from labkit.hosts.vm import exec_ as vm_exec

    args = sys.argv[1:] if argv is None else argv
    return int(vm_exec(vm, guest_labkit_argv(args)))


def local_lab(name: str) -> Lab:
    """The running lab for a verb: a lab in a VM gets the whole command line run there
    (and this process exits with its status); a local one is attached."""
    rc = forward(name)
    if rc is not None:
        raise typer.Exit(rc)
    from labkit.lab.lab import Lab

    return Lab.attach(name)
