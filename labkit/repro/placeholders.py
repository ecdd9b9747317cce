"""Placeholders in scenario commands: what a command needs to know about the running lab.

    {python}            the Python that runs labkit (the same path inside labkit's VMs)
    {dir}               the scenario file's directory (scripts ship beside it)
    {ns:NODE}           the network namespace of NODE (for setns from a script)
    {ipv4:NODE[:IFACE]} NODE's IPv4 address (on IFACE, else its first), no prefix length
    {ipv6:NODE[:IFACE]} likewise for IPv6

Anything else in braces (a shell's ${VAR}, awk's {print}) is left as written.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable

from labkit.topology.model import Topology

PATTERN = re.compile(r"\{(python|dir|ns:[\w-]+|ipv[46]:[\w-]+(?::[\w.@-]+)?)\}")


def problems(text: str, topo: Topology) -> list[str]:
    """What is wrong with the placeholders of text for this topology (empty: nothing)."""
    out = []
    for m in PATTERN.finditer(text):
        kind, _, rest = m.group(1).partition(":")
        if kind in ("python", "dir"):
            continue
        node, _, iface = rest.partition(":")
        spec = topo.nodes.get(node)
        if spec is None:
            out.append(f"{m.group(0)} names node '{node}', which the topology does not have "
                       f"(its nodes: {', '.join(topo.nodes)})")
            continue
        if kind == "ns":
            continue
        if iface and iface not in spec.interfaces:
            out.append(f"{m.group(0)}: node {node} has no interface '{iface}' (it has: "
                       f"{', '.join(spec.interfaces) or 'none'})")
            continue
        if _address(topo, node, iface, int(kind[-1])) is None:
            out.append(f"{m.group(0)}: node {node} has no {kind.upper()} address"
                       + (f" on {iface}" if iface else ""))
    return out


def _address(topo: Topology, node: str, iface: str, version: int) -> str | None:
    spec = topo.nodes[node]
    eps = [spec.interfaces[iface]] if iface else list(spec.interfaces.values())
    for ep in eps:
        ifa = ep.ipv4 if version == 4 else ep.ipv6
        if ifa:
            return str(ifa.ip)
    if not iface:
        for ifa in spec.loopback:
            if ifa.version == version:
                return str(ifa.ip)
    return None


def expander(topo: Topology, directory: str, ns_of: Callable[[str], str]) -> Callable[[str],
                                                                                         str]:
    """A function replacing the placeholders of a string for one running lab."""

    def one(m: re.Match[str]) -> str:
        kind, _, rest = m.group(1).partition(":")
        if kind == "python":
            return sys.executable
        if kind == "dir":
            return directory
        node, _, iface = rest.partition(":")
        if kind == "ns":
            return ns_of(node)
        return _address(topo, node, iface, int(kind[-1])) or m.group(0)

    return lambda text: PATTERN.sub(one, text)
