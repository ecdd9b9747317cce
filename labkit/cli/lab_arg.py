"""Finding the running lab a verb names, wherever it runs (this kernel or VMs)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from labkit.base.names import check_lab

if TYPE_CHECKING:
    from labkit.lab.lab import Lab


def attach(name: str) -> Lab:
    """The running lab called NAME; its nodes are reached through their hosts."""
    from labkit.lab.lab import Lab

    return Lab.attach(check_lab(name))
