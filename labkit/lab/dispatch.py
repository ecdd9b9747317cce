"""What the host layer (labkit.hosts) asks of labs, registered at import of labkit.lab since
that layer never imports this one: how a lab name becomes the lab as seen from a kernel
(the guest daemon and LocalHost.call), and which labs use a host (before it stops)."""

from __future__ import annotations

from typing import Any

from labkit.hosts import rpc, users


def lab_of(name: str) -> Any:
    from labkit.lab.lab import Lab

    return Lab.attach(name)


def labs_using(host: str, exclude: str, started: float | None) -> list[str]:
    from labkit.lab import state

    return state.labs_using(host, exclude, started)


rpc.serve_labs_with(lab_of)
users.register(labs_using)
