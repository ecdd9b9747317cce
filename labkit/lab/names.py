"""How lab-owned kernel objects are named, so cleanup can find them from the name alone,
and the one check every lab or node name passes before it reaches a path or a namespace.

A node's namespace is `lk-<lab>.<node>`. Lab and node names cannot contain '.', so the
prefix `lk-<lab>.` belongs to exactly one lab: `labkit down NAME` after a SIGKILL finds
every namespace of that lab, and never one of another lab. Names typed on the command line
are checked exactly like a topology's `name:` (no '/', no '..'), since they become file
names under the state directory (see labkit.base.names).
"""

from __future__ import annotations

from labkit.base.names import check_lab, check_node

PREFIX = "lk-"
LAN_NS = "_lans"  # node names start with a letter or digit, so this never collides

__all__ = ["LAN_NS", "PREFIX", "check_lab", "check_node", "lab_of", "lab_prefix", "lan_ns",
           "lan_port", "node_ns"]


def lab_prefix(lab: str) -> str:
    return f"{PREFIX}{lab}."


def node_ns(lab: str, node: str) -> str:
    return f"{lab_prefix(lab)}{node}"


def lan_ns(lab: str) -> str:
    return node_ns(lab, LAN_NS)


def lab_of(ns: str) -> str | None:
    """The lab owning a namespace name, or None if labkit did not name it."""
    if not ns.startswith(PREFIX) or "." not in ns:
        return None
    return ns[len(PREFIX):].split(".", 1)[0]


def lan_port(index: int) -> str:
    """Bridge-side veth name in the LAN namespace; the alias says which node it serves."""
    return f"p{index}"
