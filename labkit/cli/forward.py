"""Finding the running lab a verb names, wherever it runs.

Verbs that work through the Python API (status, exec, shell, capture, verify, check...)
attach to the lab and let it reach its nodes. Verbs whose work is not yet expressed
through the API run their whole command line next to the lab's kernel (forward()).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

from labkit.base.names import check_lab

if TYPE_CHECKING:
    from labkit.lab.lab import Lab


def attach(name: str) -> Lab:
    """The running lab called NAME, local or in a VM."""
    from labkit.lab.lab import Lab

    return Lab.attach(check_lab(name))


def guest_labkit_argv(args: list[str]) -> list[str]:
    """labkit inside the guest: the same interpreter path, since the host filesystem
    (and with it this venv) is shared with the VM."""
    return [sys.executable, "-m", "labkit.cli.main", *args]


def local_lab(name: str) -> Lab:
    """The running lab for a verb that works on a local lab in-process: a lab in a single
    VM gets the whole command line run there (this process exits with its status)."""
    lab = attach(name)
    if lab.placement.local:
        return lab
    if len(lab.placement.vms) != 1:
        from labkit.errors import UsageError

        raise UsageError(f"`labkit {sys.argv[1] if len(sys.argv) > 1 else ''}` does not "
                         f"work yet on lab '{name}', which spans several kernels.")
    from labkit.hosts.vm import exec_ as vm_exec

    raise typer.Exit(int(vm_exec(lab.placement.vms[0].vm, guest_labkit_argv(sys.argv[1:]),
                                 cwd="/")))
