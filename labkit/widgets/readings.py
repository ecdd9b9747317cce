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


def parse_tls_stat(text: str) -> dict[str, int]:
    """/proc/net/tls_stat lines `TlsCurrTxSw   0` as a mapping."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def tls_stat(ns: str) -> dict[str, int] | None:
    """The namespace's kTLS counters; None where the kernel has no tls module loaded.

    /proc/net follows the reading thread's namespace only through thread-self.
    """
    with netns.entered(ns):
        try:
            with open("/proc/thread-self/net/tls_stat") as fh:
                return parse_tls_stat(fh.read())
        except FileNotFoundError:
            return None


@remote
def counters(lab: Lab) -> dict[str, Any]:
    """Counters of every node of the lab whose namespace is in this kernel."""
    nodes: dict[str, Any] = {}
    for name, node in lab.nodes.items():
        if not netns.exists(node.ns):
            continue
        nodes[name] = {"interfaces": interface_counters(node.ns), "tls": tls_stat(node.ns)}
    return {"nodes": nodes}
