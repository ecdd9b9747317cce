"""labkit: network-namespace testbeds for kernel networking labs.

The public API is Lab (and its Nodes); the CLI and the widgets sit on top of it.
Imports are lazy so that small helpers run inside lab nodes (traffic agents) start
without loading pyroute2: under an emulated VM that costs seconds per process.
"""

from __future__ import annotations

from typing import Any

from labkit.base import lazy_pyroute2

lazy_pyroute2.install()  # before anything below imports pyroute2 (see that module)

__all__ = ["Lab", "LabkitError", "Node"]


def __getattr__(name: str) -> Any:
    if name in ("Lab", "Node"):
        from labkit.lab import lab

        return getattr(lab, name)
    if name == "LabkitError":
        from labkit.errors import LabkitError

        return LabkitError
    raise AttributeError(name)
