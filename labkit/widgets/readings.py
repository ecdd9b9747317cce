"""Counters read next to the lab's kernel in one call (in-process for a local lab, in the
VM's guest daemon otherwise): interface packet and byte counters, and /proc/net/tls_stat,
per node. One @remote call per kernel instead of a command per node and file keeps a
live panel cheap for a lab in an emulated VM (~0.4 s a command there).

Standard library and labkit only: the guest daemon imports it, never ipywidgets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labkit.base import netns
from labkit.base.rtnl import opened
from labkit.hosts.rpc import remote
from labkit.ktls import stat as ktls_stat

if TYPE_CHECKING:
    from labkit.lab.lab import Lab

STATS = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_dropped", "tx_dropped")


def interface_counters(ns: str) -> dict[str, dict[str, int]]:
    """Per interface of the namespace: packets, bytes, drops (IFLA_STATS64)."""
    out = {}
    with opened(ns) as ipr:
        for link in ipr.get_links():
            stats = link.get_attr("IFLA_STATS64") or link.get_attr("IFLA_STATS") or {}
            out[link.get_attr("IFLA_IFNAME")] = {k: int(stats.get(k, 0)) for k in STATS}
    return out


@remote
def counters(lab: Lab) -> dict[str, Any]:
    """Counters of every node of the lab whose namespace is in this kernel."""
    nodes: dict[str, Any] = {}
    for name, node in lab.nodes.items():
        if not netns.exists(node.ns):
            continue
        nodes[name] = {"interfaces": interface_counters(node.ns), "tls": ktls_stat.read(node.ns)}
    return {"nodes": nodes}
