"""How a call served next to a kernel gets its Lab: the host layer (labkit.hosts) carries
only a lab's name, and this registers, at import of labkit.lab, how a name becomes the lab
as seen from that kernel (the guest daemon and LocalHost.call use it)."""

from __future__ import annotations

from typing import Any

from labkit.hosts import rpc


def lab_of(name: str) -> Any:
    from labkit.lab.lab import Lab

    return Lab.attach(name)


rpc.serve_labs_with(lab_of)
