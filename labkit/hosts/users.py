"""Which labs use a host: asked before a shared host (a VM) is stopped or restarted.

The lab layer knows (its lab records) and registers the answer here when labkit.lab is
imported (labkit/lab/dispatch.py), since this layer never imports it. Without a lab layer
nobody can tell, and a host is then never stopped from under a lab: the question fails.
"""

from __future__ import annotations

from collections.abc import Callable

from labkit.errors import LabkitError

# (host name, lab to leave out, when the host's current boot began) -> lab names
Users = Callable[[str, str, "float | None"], list[str]]
_users: Users | None = None


def register(users: Users) -> None:
    global _users
    _users = users


def of(host: str, exclude: str = "", started: float | None = None) -> list[str]:
    """Labs other than `exclude` that use this boot of `host`."""
    if _users is None:
        raise LabkitError(f"cannot tell which labs use {host}: no lab layer is loaded.",
                          hint="Import labkit.lab first (it registers the answer).")
    return _users(host, exclude, started)
